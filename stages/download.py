"""download: fetch the configured data set into data/raw/<name>/ as Parquet plus a manifest."""

from dataclasses import asdict

from semops import paths
from semops.config.schema import load_section
from semops.io import sha256_file, write_json, write_parquet
from semops.stage import run_stage
from semops.tabular.download import fetch


def main() -> None:
    data = load_section("data")
    table, provenance = fetch(data.source, paths.hf_cache_dir())
    table_path = paths.raw_table(data.name)
    write_parquet(table_path, table)
    table_path.chmod(0o444)  # raw data is never modified after download
    write_json(
        paths.raw_manifest(data.name),
        {
            "dataset": data.name,
            "source": asdict(data.source),
            "rows": len(table),
            "columns": [str(c) for c in table.columns],
            "sha256": sha256_file(table_path),
            **provenance,
        },
    )
    print(f"download: {data.name}: {len(table)} rows, {table.shape[1]} columns -> {table_path}")


if __name__ == "__main__":
    run_stage(main)
