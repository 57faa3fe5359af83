"""featurize: fit imputation, scaling and encoding on train; apply them to every split."""

from semops import paths
from semops.config.schema import load_section
from semops.io import read_json, read_table, write_arrow, write_json
from semops.stage import run_stage
from semops.tabular.features import fit_featurizer, transform


def main() -> None:
    data = load_section("data")
    cfg = load_section("featurize")
    train = read_table(paths.interim_split("train"))
    spec = fit_featurizer(train, read_json(paths.INPUT_SCHEMA), data.positive, cfg)
    write_json(paths.FEATURIZER, spec)
    for name in paths.SPLITS:
        table = train if name == "train" else read_table(paths.interim_split(name))
        write_arrow(paths.processed_split(name), transform(table, spec))
    print(f"featurize: {len(spec['features'])} features, classes {spec['target']['classes']}")


if __name__ == "__main__":
    run_stage(main)
