"""clean + featurize scaling: the stages' pure functions on the raw table replicated to N rows.

Each step runs in its own process (`python -m benchmarks.scaling <step> ...`), as the stages
do, so that its peak RSS (getrusage's ru_maxrss) is its own; each prints one JSON line.

  generate   the raw table replicated to --rows rows, written as the download stage writes it
  clean      read_table -> clean_table -> assign_splits -> one Parquet file per split
  featurize  read the splits -> fit_featurizer on train -> transform each split -> write
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path
from typing import Any


def vm_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def generate(raw: Path, rows: int, out: Path) -> dict[str, Any]:
    """Copies of the raw table, each kept distinct: copy k adds k * 1e-3 to every 'Amount'
    (a float column then; amounts are whole numbers, so no copy collides with another) and
    k * n_raw to 'rownames' (dropped by clean, so it cannot keep rows apart there)."""
    import numpy as np

    from semops.io import read_table, write_parquet

    start = time.perf_counter()
    table = read_table(raw)
    n_raw = len(table)
    copies = math.ceil(rows / n_raw)
    index = np.tile(np.arange(n_raw), copies)[:rows]
    copy = np.repeat(np.arange(copies), n_raw)[:rows]
    big = table.iloc[index].reset_index(drop=True)
    big["Amount"] = big["Amount"].to_numpy(dtype=np.float64) + copy * 1e-3
    big["rownames"] = big["rownames"].to_numpy() + copy * n_raw
    write_parquet(out, big)
    return {
        "rows": rows,
        "raw_rows": n_raw,
        "copies": copies,
        "seconds": time.perf_counter() - start,
        "file_bytes": out.stat().st_size,
    }


def clean(source: Path, params: Path, workdir: Path) -> dict[str, Any]:
    from semops.config.schema import load_section
    from semops.io import read_table, write_parquet
    from semops.tabular.clean import clean_and_split

    data = load_section("data", params)
    split = load_section("split", params)
    rss_imports = vm_rss()
    t = {}
    start = time.perf_counter()
    raw = read_table(source)
    t["read"] = time.perf_counter() - start
    rss_read = vm_rss()
    # Outside the timed steps: deep memory_usage walks every string.
    in_memory = int(raw.memory_usage(deep=True).sum())
    raw_rows = len(raw)
    start = time.perf_counter()
    parts, report = clean_and_split(raw, data, split)  # what stages/clean.py calls
    del raw
    t["clean_and_split"] = time.perf_counter() - start
    start = time.perf_counter()
    for name, part in parts.items():
        write_parquet(workdir / f"interim-{name}.parquet", part)
    t["write"] = time.perf_counter() - start
    return {
        "raw_rows": raw_rows,
        "clean_rows": report["rows"]["clean"],
        "dropped": report["dropped"],
        "split": {name: len(part) for name, part in parts.items()},
        "in_memory_bytes": in_memory,
        "rss_after_imports": rss_imports,
        "rss_after_read": rss_read,
        "peak_rss": peak_rss(),
        "seconds": t,
        "total_seconds": sum(t.values()),
    }


def featurize(params: Path, workdir: Path) -> dict[str, Any]:
    from semops import paths
    from semops.config.schema import load_section
    from semops.io import read_table, write_arrow, write_json
    from semops.tabular.features import fit_featurizer, transform

    data = load_section("data", params)
    cfg = load_section("featurize", params)
    rss_imports = vm_rss()
    t = {"read": 0.0, "fit": 0.0, "transform": 0.0, "write": 0.0}
    start = time.perf_counter()
    train = read_table(workdir / "interim-train.parquet")
    t["read"] += time.perf_counter() - start
    start = time.perf_counter()
    spec = fit_featurizer(train, data.target, data.positive, cfg)
    write_json(workdir / "featurizer.json", spec)
    t["fit"] += time.perf_counter() - start
    rows = 0
    for name in paths.SPLITS:
        start = time.perf_counter()
        table = train if name == "train" else read_table(workdir / f"interim-{name}.parquet")
        t["read"] += time.perf_counter() - start
        rows += len(table)
        start = time.perf_counter()
        features = transform(table, spec)
        t["transform"] += time.perf_counter() - start
        start = time.perf_counter()
        write_arrow(workdir / f"processed-{name}.parquet", features)
        t["write"] += time.perf_counter() - start
        del features  # like the stage, `train` stays alive until the end
    return {
        "rows": rows,
        "features": len(spec["features"]),
        "rss_after_imports": rss_imports,
        "peak_rss": peak_rss(),
        "seconds": t,
        "total_seconds": sum(t.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    steps = parser.add_subparsers(dest="step", required=True)
    gen = steps.add_parser("generate")
    gen.add_argument("--raw", type=Path, required=True)
    gen.add_argument("--rows", type=int, required=True)
    gen.add_argument("--out", type=Path, required=True)
    cln = steps.add_parser("clean")
    cln.add_argument("--input", type=Path, required=True)
    cln.add_argument("--params", type=Path, required=True)
    cln.add_argument("--workdir", type=Path, required=True)
    feat = steps.add_parser("featurize")
    feat.add_argument("--params", type=Path, required=True)
    feat.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "generate":
        result = generate(args.raw, args.rows, args.out)
    elif args.step == "clean":
        result = clean(args.input, args.params, args.workdir)
    else:
        result = featurize(args.params, args.workdir)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
