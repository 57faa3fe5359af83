"""clean: type, normalise and deduplicate the raw table, then split it into train/val/test."""

import contextlib

from semops import paths
from semops.config.schema import load_section
from semops.io import write_json
from semops.stage import run_stage
from semops.tabular.clean import clean_file
from semops.tabular.engine import engine_for


def main() -> None:
    data = load_section("data")
    outputs = {name: paths.interim_split(name) for name in paths.SPLITS}
    with contextlib.closing(engine_for(data.engine)) as engine:
        report, schema = clean_file(
            paths.raw_table(data.name), outputs, data, load_section("split"), data.batch_rows,
            engine,
        )  # fmt: skip
    write_json(paths.INPUT_SCHEMA, schema)
    write_json(paths.CLEAN_METRICS, report)
    print(
        f"clean: {report['rows']['raw']} -> {report['rows']['clean']} rows; split {report['split']}"
    )


if __name__ == "__main__":
    run_stage(main)
