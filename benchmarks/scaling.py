"""Benchmark 4, clean + featurize scaling: the stages' pure functions on the raw table
replicated to N rows.

`run` drives it from benchmarks/run.py. Each step runs in its own process
(`python -m benchmarks.scaling <step> ...`), as the stages do, so that its peak RSS (getrusage's
ru_maxrss) is its own; each prints one JSON line.

  generate   the raw table replicated to --rows rows, written as the download stage writes it
  clean      read_table -> clean_table -> assign_splits -> one Parquet file per split
  featurize  read the splits -> fit_featurizer on train -> transform each split -> write
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
    from semops.io import read_table, write_json, write_parquet
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
    parts, report, schema = clean_and_split(raw, data, split)  # what stages/clean.py calls
    del raw
    t["clean_and_split"] = time.perf_counter() - start
    start = time.perf_counter()
    for name, part in parts.items():
        write_parquet(workdir / f"interim-{name}.parquet", part)
    write_json(workdir / "schema.json", schema)
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
    from semops.io import read_json, read_table, write_arrow, write_json
    from semops.tabular.features import fit_featurizer, transform

    data = load_section("data", params)
    cfg = load_section("featurize", params)
    rss_imports = vm_rss()
    t = {"read": 0.0, "fit": 0.0, "transform": 0.0, "write": 0.0}
    start = time.perf_counter()
    train = read_table(workdir / "interim-train.parquet")
    t["read"] += time.perf_counter() - start
    start = time.perf_counter()
    spec = fit_featurizer(train, read_json(workdir / "schema.json"), data.positive, cfg)
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


@dataclass
class Limits:
    rss: int  # bytes: the step is killed above it
    seconds: float  # for clean + featurize together, per size


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
    gen = timed([*generate_cmd, "--out", str(source)], project, env=env, timeout=600,
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
        run = timed(cmd, project, env=env, timeout=max(30, limits.seconds - spent),
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
    ratio = peak / cl["in_memory_bytes"]
    entry["summary"] = {
        "total_seconds": total,
        "peak_rss": peak,
        "peak_over_in_memory": ratio,
        "us_per_row": total / rows * 1e6,
    }
    return [
        f"{rows:,}",
        fmt_rate(rows / cl["total_seconds"]) + f" ({fmt_s(cl['total_seconds'])})",
        fmt_rate(ft["rows"] / ft["total_seconds"]) + f" ({fmt_s(ft['total_seconds'])})",
        fmt_s(total),
        f"{total / rows * 1e6:.2f} us",
        fmt_bytes(cl["in_memory_bytes"]),
        f"{fmt_bytes(cl['peak_rss'])} / {fmt_bytes(ft['peak_rss'])}",
        f"{ratio:.2f}x",
        f"{(peak - cl['rss_after_imports']) / cl['in_memory_bytes']:.2f}x",
        "",
    ]


def _steps_row(entry: dict[str, Any]) -> list[str]:
    cl, ft = entry["clean"]["seconds"], entry["featurize"]["seconds"]
    middle = {k: v for k, v in cl.items() if k not in ("read", "write")}
    shown = fmt_s(sum(middle.values()))
    if len(middle) > 1:
        shown += " (" + " + ".join(f"{k} {fmt_s(v)}" for k, v in middle.items()) + ")"
    return [
        f"{entry['rows']:,}", fmt_s(cl["read"]), shown, fmt_s(cl["write"]),
        *(fmt_s(ft[k]) for k in ("read", "fit", "transform", "write")),
    ]  # fmt: skip


def _tables(sizes: dict[int, dict[str, Any]], result: Result) -> None:
    done = [entry for entry in sizes.values() if "featurize" in entry]
    main_rows = [
        _summarize(e) if "featurize" in e else
        [f"{e['rows']:,}", *["-"] * 8, e.get("error", "")[:200]]
        for e in sizes.values()
    ]  # fmt: skip
    result.table(
        ["rows", "clean rows/s (time)", "featurize rows/s (time)", "total", "time/row",
         "in memory", "peak RSS clean / featurize", "peak / in memory",
         "(peak - start-up RSS) / in memory", "note"],
        main_rows,
    )  # fmt: skip
    result.table(
        ["rows", "clean: read", "clean + split", "write splits", "featurize: read", "fit",
         "transform", "write"],
        [_steps_row(entry) for entry in done],
        title="Steps",
    )  # fmt: skip


def _targets(sizes: dict[int, dict[str, Any]], limits: Limits, result: Result) -> None:
    summaries = {rows: e["summary"] for rows, e in sizes.items() if "summary" in e}
    if summaries:
        largest = max(summaries)
        ratio = summaries[largest]["peak_over_in_memory"]
        result.targets.append(
            Target(f"peak RSS / in-memory size at {largest:,} rows", f"{ratio:.2f}x", "<= 4x",
                   ratio <= 4)
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
            within = f"within {limits.seconds:.0f} s and {fmt_bytes(limits.rss)}"
            result.targets.append(Target(f"{rows:,} rows", "did not finish", within, False))
            result.notes.append(f"{rows:,} rows: {entry['error']}")


def _notes(sizes: dict[int, dict[str, Any]], limits: Limits) -> list[str]:
    n_raw = next((e["generate"]["raw_rows"] for e in sizes.values() if "generate" in e), None)
    startup_rss = next(iter(sizes.values())).get("clean", {}).get("rss_after_imports")
    return [
        f"Input: data/raw/credit/table.parquet ({n_raw} rows) replicated to each size and "
        "written as the download stage writes it. Copy k adds k * 0.001 to 'Amount' (amounts "
        "are whole numbers, so no two copies collide; the column becomes float64) and k * "
        f"{n_raw} to 'rownames' (dropped by clean). Rows duplicated within the original stay "
        "duplicated within each copy, so clean drops as many rows per copy as it does on the "
        "original.",
        "clean = read_table + the stage's clean and split (clean_and_split; clean_table + "
        "assign_splits before it existed) + one Parquet per split; featurize = "
        "read the splits + fit_featurizer on train + transform + write_arrow each split: the "
        "stages' functions, each step in its own process like the stages. rows/s: raw rows for "
        "clean, cleaned rows for featurize.",
        "In memory: raw table's DataFrame.memory_usage(deep=True). Peak RSS: ru_maxrss of each "
        f"process (it includes the interpreter and libraries, about {fmt_bytes(startup_rss)} "
        "before any data, which dominates the ratio at small sizes); the target is judged at the "
        "largest size.",
        f"Each size had {limits.seconds:.0f} s for clean + featurize together and a memory guard "
        f"of {fmt_bytes(limits.rss)} (the process is killed above it).",
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
