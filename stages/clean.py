"""clean: type, normalise and deduplicate the raw table, then split it into train/val/test."""

from semops import paths
from semops.clean import assign_splits, clean_table
from semops.io import read_table, write_json, write_parquet
from semops.params import load_section
from semops.stage import run_stage


def main() -> None:
    data = load_section("data")
    split = load_section("split")
    table, report = clean_table(read_table(paths.raw_table(data.name)), data)
    codes = assign_splits(table, data.target, split)
    report["split"] = {}
    for code, name in enumerate(paths.SPLITS):
        part = table.loc[codes == code]
        write_parquet(paths.interim_split(name), part)
        report["split"][name] = len(part)
    write_json(paths.CLEAN_METRICS, report)
    print(
        f"clean: {report['rows']['raw']} -> {report['rows']['clean']} rows; split {report['split']}"
    )


if __name__ == "__main__":
    run_stage(main)
