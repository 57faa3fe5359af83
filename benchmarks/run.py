"""Run the benchmarks and write benchmarks/results.md and benchmarks/results.json.

  python -m benchmarks.run                      every benchmark (what `make bench` runs)
  python -m benchmarks.run --only noop,train    a subset (names: see --only)
  python -m benchmarks.run --sizes 100000       smaller scaling sizes, for a quick look

Every benchmark works in throwaway git repos under one temporary folder (removed at the end
unless --keep), made by benchmarks/common.py: the project files, the venv symlinked, an empty
private DVC cache, an empty mlruns/. The project files are copied once at the start, and every
command in a repo runs that repo's src/ (PYTHONPATH), so a whole run measures one version of
the code even while the working tree is being edited. Each benchmark is a module of this package
with a TITLE and a run(ctx, result).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import vl_convert

from benchmarks import (
    cold,
    ddp,
    noop,
    predict,
    quality,
    ray_embed,
    research,
    research_embedding,
    research_store,
    scaling,
    serve,
    team,
    train_throughput,
)
from benchmarks.common import REPO, Context, atomic_write, machine_info
from benchmarks.report import SUMMARY_CHART, Result, Table, Target, render, summary_chart

OUT_DIR = REPO / "benchmarks"
# --only names -> modules, in the order they run and are reported.
RUNNERS: dict[str, ModuleType] = {
    "cold": cold,
    "noop": noop,
    "quality": quality,
    "train": train_throughput,
    "ddp": ddp,
    "scaling": scaling,
    "research": research,
    "embedding": research_embedding,
    "ray": ray_embed,
    "store": research_store,
    "predict": predict,
    "serve": serve,
    "team": team,
}
BENCHMARKS = tuple(RUNNERS)
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000, 100_000_000)
KEPT_NOTE = "(kept from an earlier `make bench` run: not rerun this time)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="scaling sizes (rows)"
    )
    parser.add_argument("--cold-runs", type=int, default=2, help="cold `dvc repro` runs")
    parser.add_argument("--noop-runs", type=int, default=5)
    parser.add_argument("--train-epochs", type=int, default=30)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--ddp-rows", type=int, default=200_000, help="training rows for ddp")
    parser.add_argument("--ddp-epochs", type=int, default=2)
    parser.add_argument(
        "--ray-passages", type=int, default=400, help="corpus passages embedded by ray"
    )
    parser.add_argument(
        "--scaling-budget", type=float, default=300.0, help="seconds per size for clean + featurize"
    )
    parser.add_argument(
        "--predict-rows", type=int, default=1_000_000, help="rows scored by `semops predict`"
    )
    parser.add_argument(
        "--predict-big-rows", type=int, default=4_000_000, help="the larger file, for peak memory"
    )
    parser.add_argument("--predict-repeats", type=int, default=3)
    parser.add_argument("--serve-single", type=int, default=200, help="1-row requests timed")
    parser.add_argument("--serve-batch", type=int, default=50, help="1,000-row requests timed")
    parser.add_argument(
        "--team-experiments", type=int, default=8, help="queued experiments in each team sweep"
    )
    parser.add_argument(
        "--team-jobs", default="1,2,4", help="workers (-j) of each team sweep, comma-separated"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where results.md/json go")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary repos (path printed)"
    )
    args = parser.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    args.team_jobs = [int(j) for j in args.team_jobs.split(",") if j.strip()]
    return args


def earlier_results(path: Path) -> dict[str, Result]:
    """The results file's benchmarks, so that a run of a subset (--only) keeps the others."""
    if not path.exists():
        return {}
    kept = {}
    for name, raw in json.loads(path.read_text())["benchmarks"].items():
        targets = [Target(t["metric"], t["display"], t["target"], t["met"]) for t in raw["targets"]]
        tables = [Table(t["columns"], t["rows"], t["title"]) for t in raw["tables"]]
        notes = [n for n in raw["notes"] if n != KEPT_NOTE] + [KEPT_NOTE]
        kept[name] = Result(
            name, raw["title"], targets, tables, notes, raw["raw"], raw["error"], raw["seconds"]
        )
    return kept


def write_results(
    args: argparse.Namespace,
    machine: dict[str, Any],
    results: list[Result],
    previous: dict[str, Result],
    total: float,
    argv_note: str,
) -> None:
    """results.json and results.md of this run's results and, for the benchmarks it did not
    run, those of the earlier results file."""
    ran = {r.name for r in results}
    kept = [previous[name] for name in RUNNERS if name in previous and name not in ran]
    ordered = sorted([*results, *kept], key=lambda r: list(RUNNERS).index(r.name))
    machine["load_avg_now"] = [round(x, 2) for x in os.getloadavg()]
    document = {
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "total_seconds": total,
        "benchmarks": {r.name: r.to_json() for r in ordered},
    }
    atomic_write(args.out / "results.json", json.dumps(document, indent=2, default=str) + "\n")
    atomic_write(args.out / SUMMARY_CHART, vl_convert.vegalite_to_svg(summary_chart(ordered)))
    atomic_write(args.out / "results.md", render(machine, ordered, total, argv_note))


def run_one(name: str, ctx: Context) -> Result:
    """One benchmark; a failure is recorded in its result, so that the others still run."""
    module = RUNNERS[name]
    print(f"bench: {module.TITLE} ...", flush=True)
    result = Result(name, module.TITLE)
    t0 = time.perf_counter()
    try:
        module.run(ctx, result)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.raw["traceback"] = traceback.format_exc()
    result.seconds = time.perf_counter() - t0
    for target in result.targets:
        shown = f"{target.display} (target {target.target})"
        print(f"  {target.metric}: {shown}: {target.verdict}")
    if result.error:
        print(f"  error: {result.error.strip().splitlines()[0][:500]}")
    print(f"  ({result.seconds:.0f} s)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    machine = machine_info()
    print(
        f"bench: {machine['cpu_model']}, nproc {machine['nproc']}, python {machine['python']}, "
        f"torch {machine['versions']['torch']}, dvc {machine['versions']['dvc']}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="semops-bench-"))
    results: list[Result] = []
    argv_note = " ".join(sys.argv[1:] if argv is None else argv)
    previous = earlier_results(args.out / "results.json")

    def write() -> None:
        total = time.perf_counter() - start
        write_results(args, machine, results, previous, total, argv_note)

    try:
        ctx = Context(root, args)
        for name in [b for b in RUNNERS if b in args.only]:
            results.append(run_one(name, ctx))
            write()
    finally:
        if args.keep:
            print(f"bench: temporary repos kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    write()
    print(
        f"bench: done in {time.perf_counter() - start:.0f} s; results in {args.out / 'results.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
