"""clean: type, normalise and deduplicate the raw table, then split it into train/val/test."""

from semops import paths
from semops.config.schema import load_section
from semops.io import read_table, write_json, write_parquet
from semops.stage import run_stage
from semops.tabular.clean import clean_and_split


def main() -> None:
    data = load_section("data")
    parts, report, schema = clean_and_split(
        read_table(paths.raw_table(data.name)), data, load_section("split")
    )
    for name, part in parts.items():
        write_parquet(paths.interim_split(name), part)
    write_json(paths.INPUT_SCHEMA, schema)
    write_json(paths.CLEAN_METRICS, report)
    print(
        f"clean: {report['rows']['raw']} -> {report['rows']['clean']} rows; split {report['split']}"
    )


if __name__ == "__main__":
    run_stage(main)
