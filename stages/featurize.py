"""featurize: fit imputation, scaling and encoding on train; apply them to every split."""

import contextlib

from semops import paths
from semops.config.schema import load_section
from semops.io import read_json, write_json
from semops.stage import run_stage
from semops.tabular.engine import engine_for
from semops.tabular.features import featurize_files


def main() -> None:
    data = load_section("data")
    with contextlib.closing(engine_for(data.engine)) as engine:
        spec = featurize_files(
            {name: paths.interim_split(name) for name in paths.SPLITS},
            {name: paths.processed_split(name) for name in paths.SPLITS},
            read_json(paths.INPUT_SCHEMA), data.positive, load_section("featurize"),
            data.batch_rows, engine,
        )  # fmt: skip
    write_json(paths.FEATURIZER, spec)
    print(f"featurize: {len(spec['features'])} features, classes {spec['target']['classes']}")


if __name__ == "__main__":
    run_stage(main)
