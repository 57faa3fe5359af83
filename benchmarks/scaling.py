"""Benchmark 4, clean + featurize scaling: the stages' pure functions on the raw table
replicated to N rows.

`run` drives it from benchmarks/run.py. Each step runs in its own process
(`python -m benchmarks.scaling <step> ...`), as the stages do, so that its peak RSS (getrusage's
ru_maxrss) is its own; each prints one JSON line.

  generate   the raw table replicated to --rows rows, written as the download stage writes it,
             a row group at a time
  clean      clean_file: the raw file, in batches, to one Parquet file per split (the stage's)
  featurize  featurize_files: fit on train, transform each split, in batches (the stage's)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import GIB, PYTHON, Context, Timed, helper_env, mem_available, timed
from benchmarks.report import Result, Target, fmt_bytes, fmt_rate, fmt_s

TITLE = "4. clean + featurize scaling"


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
    k * n_raw to 'rownames' (dropped by clean, so it cannot keep rows apart there). Written a
    row group at a time, as `write_parquet` lays it out: memory holds one row group."""
    import numpy as np
    import pyarrow as pa

    from semops.io import PARQUET_ROW_GROUP_ROWS, parquet_stream, read_table

    start = time.perf_counter()
    table = read_table(raw)
    n_raw = len(table)
    copies = math.ceil(rows / n_raw)
    with parquet_stream(out) as stream:
        for first in range(0, rows, PARQUET_ROW_GROUP_ROWS):
            index = np.arange(first, min(first + PARQUET_ROW_GROUP_ROWS, rows))
            part = table.iloc[index % n_raw].reset_index(drop=True)
            copy = index // n_raw
            part["Amount"] = part["Amount"].to_numpy(dtype=np.float64) + copy * 1e-3
            part["rownames"] = part["rownames"].to_numpy() + copy * n_raw
            stream.write(pa.Table.from_pandas(part, preserve_index=False))
    return {
        "rows": rows,
        "raw_rows": n_raw,
        "copies": copies,
        "seconds": time.perf_counter() - start,
        "file_bytes": out.stat().st_size,
    }


def clean(source: Path, params: Path, workdir: Path) -> dict[str, Any]:
    from semops.config.schema import load_section
    from semops.io import write_json
    from semops.paths import SPLITS
    from semops.tabular.clean import clean_file
    from semops.tabular.engine import engine_for

    data = load_section("data", params)
    split = load_section("split", params)
    rss_imports = vm_rss()
    start = time.perf_counter()
    outputs = {name: workdir / f"interim-{name}.parquet" for name in SPLITS}
    # What stages/clean.py calls: the raw file, a batch at a time, to one Parquet per split.
    report, schema = clean_file(source, outputs, data, split, data.batch_rows,
                                engine_for(data.engine))  # fmt: skip
    write_json(workdir / "schema.json", schema)
    seconds = time.perf_counter() - start
    return {
        "raw_rows": report["rows"]["raw"],
        "clean_rows": report["rows"]["clean"],
        "dropped": report["dropped"],
        "split": report["split"],
        "batch_rows": data.batch_rows,
        "rss_after_imports": rss_imports,
        "peak_rss": peak_rss(),
        "total_seconds": seconds,
    }


def featurize(params: Path, workdir: Path) -> dict[str, Any]:
    from semops.config.schema import load_section
    from semops.io import read_json, write_json
    from semops.paths import SPLITS
    from semops.tabular.engine import engine_for
    from semops.tabular.features import featurize_files

    data = load_section("data", params)
    cfg = load_section("featurize", params)
    rss_imports = vm_rss()
    start = time.perf_counter()
    spec = featurize_files(
        {name: workdir / f"interim-{name}.parquet" for name in SPLITS},
        {name: workdir / f"processed-{name}.parquet" for name in SPLITS},
        read_json(workdir / "schema.json"), data.positive, cfg, data.batch_rows,
        engine_for(data.engine),
    )  # fmt: skip
    write_json(workdir / "featurizer.json", spec)
    seconds = time.perf_counter() - start
    rows = sum(pq_rows(workdir / f"processed-{name}.parquet") for name in SPLITS)
    return {
        "rows": rows,
        "features": len(spec["features"]),
        "rss_after_imports": rss_imports,
        "peak_rss": peak_rss(),
        "total_seconds": seconds,
    }


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


# Time allowed per row for clean + featurize at the largest sizes (above the flat budget): about
# 2.5x the 10M-row figure measured on a quiet machine of this kind.
SECONDS_PER_ROW = 30e-6


@dataclass
class Limits:
    rss: int  # bytes: the step is killed above it
    seconds: float  # for clean + featurize together, per size (at least)

    def seconds_for(self, rows: int) -> float:
        return max(self.seconds, rows * SECONDS_PER_ROW)


def _failed(step: str, run: Timed) -> str:
    return (
        f"{step} failed after {run.seconds:.0f} s ({run.killed or f'exit {run.returncode}'}; "
        f"peak RSS seen {fmt_bytes(run.polled_rss_bytes)}): {run.tail(300)}"
    )


def measure_size(project: Path, work: Path, rows: int, limits: Limits) -> dict[str, Any]:
    """generate, clean, featurize at `rows` rows, each its own process; an error stops it."""
    entry: dict[str, Any] = {"rows": rows}
    env = helper_env(project)
    source = work / f"raw-{rows}.parquet"
    workdir = work / str(rows)
    workdir.mkdir()
    module = [PYTHON, "-m", __name__]
    raw = project / "data" / "raw" / "credit" / "table.parquet"
    generate_cmd = [*module, "generate", "--raw", str(raw), "--rows", str(rows)]
    gen = timed([*generate_cmd, "--out", str(source)], project, env=env,
                timeout=max(600, rows * SECONDS_PER_ROW / 2),
                rss_limit=limits.rss, check=False)  # fmt: skip
    if not gen.ok:
        entry["error"] = (
            f"generating the input failed ({gen.killed or gen.returncode}): {gen.tail(500)}"
        )
        return entry
    entry["generate"] = gen.last_json()
    params = ["--params", str(project / "params.yaml"), "--workdir", str(workdir)]
    for step, cmd in (
        ("clean", [*module, "clean", "--input", str(source), *params]),
        ("featurize", [*module, "featurize", *params]),
    ):
        spent = entry["clean"]["process_seconds"] if "clean" in entry else 0.0
        run = timed(cmd, project, env=env, timeout=max(30, limits.seconds_for(rows) - spent),
                    rss_limit=limits.rss, check=False)  # fmt: skip
        if not run.ok:
            entry["error"] = _failed(step, run)
            break
        entry[step] = run.last_json()
        entry[step]["process_seconds"] = run.seconds
        entry[step]["polled_peak_rss"] = run.polled_rss_bytes
    source.unlink(missing_ok=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return entry


def _summarize(entry: dict[str, Any]) -> list[str]:
    """Adds entry["summary"]; returns the size's row of the main table."""
    rows, cl, ft = entry["rows"], entry["clean"], entry["featurize"]
    total = cl["total_seconds"] + ft["total_seconds"]
    peak = max(cl["peak_rss"], ft["peak_rss"])
    entry["summary"] = {"total_seconds": total, "peak_rss": peak, "us_per_row": total / rows * 1e6}
    return [
        f"{rows:,}",
        fmt_rate(rows / cl["total_seconds"]) + f" ({fmt_s(cl['total_seconds'])})",
        fmt_rate(ft["rows"] / ft["total_seconds"]) + f" ({fmt_s(ft['total_seconds'])})",
        fmt_s(total),
        f"{total / rows * 1e6:.2f} us",
        f"{fmt_bytes(cl['peak_rss'])} / {fmt_bytes(ft['peak_rss'])}",
        fmt_bytes(entry["generate"]["file_bytes"]),
        "",
    ]


def _tables(sizes: dict[int, dict[str, Any]], result: Result) -> None:
    main_rows = [
        _summarize(e) if "featurize" in e else
        [f"{e['rows']:,}", *["-"] * 6, e.get("error", "")[:200]]
        for e in sizes.values()
    ]  # fmt: skip
    result.table(
        ["rows", "clean rows/s (time)", "featurize rows/s (time)", "total", "time/row",
         "peak RSS clean / featurize", "raw file", "note"],
        main_rows,
    )  # fmt: skip


def _targets(sizes: dict[int, dict[str, Any]], limits: Limits, result: Result) -> None:
    summaries = {rows: e["summary"] for rows, e in sizes.items() if "summary" in e}
    if summaries:
        largest = max(summaries)
        peak = summaries[largest]["peak_rss"]
        result.targets.append(
            Target(f"peak RSS at {largest:,} rows", fmt_bytes(peak), "<= 4 GiB", peak <= 4 * GIB)
        )  # fmt: skip
    if len(summaries) >= 2:
        # Linear: the largest size costs no more per row than the cheapest smaller size
        # (fixed costs make the smallest sizes dearer per row, which is not a scaling problem).
        per_row = {rows: s["us_per_row"] for rows, s in summaries.items()}
        hi = max(per_row)
        lo = min((r for r in per_row if r != hi), key=lambda r: per_row[r])
        growth = per_row[hi] / per_row[lo]
        result.targets.append(
            Target(f"time per row, {hi:,} vs {lo:,} rows", f"{growth:.2f}x",
                   "~1x (linear; <= 1.5x)", growth <= 1.5)
        )  # fmt: skip
    for rows, entry in sizes.items():
        if "error" in entry:
            within = f"within {limits.seconds_for(rows):.0f} s and {fmt_bytes(limits.rss)}"
            result.targets.append(Target(f"{rows:,} rows", "did not finish", within, False))
            result.notes.append(f"{rows:,} rows: {entry['error']}")


def _notes(sizes: dict[int, dict[str, Any]], limits: Limits) -> list[str]:
    first = next(iter(sizes.values()))
    n_raw = next((e["generate"]["raw_rows"] for e in sizes.values() if "generate" in e), None)
    startup_rss = first.get("clean", {}).get("rss_after_imports")
    batch_rows = first.get("clean", {}).get("batch_rows")
    return [
        f"Input: data/raw/credit/table.parquet ({n_raw} rows) replicated to each size and "
        "written as the download stage writes it (row groups of 1,048,576 rows), a row group at "
        "a time. Copy k adds k * 0.001 to 'Amount' (amounts are whole numbers, so no two copies "
        f"collide; the column becomes float64) and k * {n_raw} to 'rownames' (dropped by clean). "
        "Rows duplicated within the original stay duplicated within each copy, so clean drops "
        "as many rows per copy as it does on the original.",
        "clean = what stages/clean.py runs (clean_file: the raw file read in batches of "
        f"data.batch_rows = {batch_rows} rows, the passes of semops.tabular.clean, one Parquet "
        "per split written a row group at a time); featurize = what stages/featurize.py runs "
        "(featurize_files: fit on train in batches, transform each split in batches): each in "
        "its own process like the stages, on the local engine. rows/s: raw rows for clean, "
        "cleaned rows for featurize.",
        "Peak RSS: ru_maxrss of each process (it includes the interpreter and libraries, about "
        f"{fmt_bytes(startup_rss)} before any data); the targets are judged at the largest size.",
        f"Each size had max({limits.seconds:.0f} s, {SECONDS_PER_ROW * 1e6:.0f} us a row) for "
        f"clean + featurize together and a memory guard of {fmt_bytes(limits.rss)} (the process "
        "is killed above it).",
    ]


def run(ctx: Context, result: Result) -> None:
    project = ctx.built_project()
    work = ctx.root / "scaling"
    work.mkdir()
    limits = Limits(min(24 * GIB, mem_available() - GIB), ctx.args.scaling_budget)
    sizes = {rows: measure_size(project, work, rows, limits) for rows in ctx.args.sizes}
    _tables(sizes, result)
    _targets(sizes, limits, result)
    result.notes += _notes(sizes, limits)
    result.raw = {"sizes": sizes, "rss_limit": limits.rss, "budget_seconds": limits.seconds}


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
