"""Run the benchmarks and write benchmarks/results.md and benchmarks/results.json.

  python -m benchmarks.run                      every benchmark (what `make bench` runs)
  python -m benchmarks.run --only noop,train    a subset (cold, noop, quality, train, scaling)
  python -m benchmarks.run --sizes 100000       smaller scaling sizes, for a quick look

Every benchmark works in throwaway git repos under one temporary folder (removed at the end
unless --keep), built as tests/conftest.py's make_project builds them: the project files, the
venv symlinked, an empty private DVC cache, an empty mlruns/. The project files are copied once
at the start, and every command in a repo runs that repo's src/ (PYTHONPATH), so a whole run
measures one version of the code even while the working tree is being edited.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import research, research_embedding, research_store
from benchmarks.common import (
    GIB,
    PYTHON,
    REPO,
    STAGES,
    Timed,
    atomic_write,
    copy_project_files,
    helper_env,
    machine_info,
    make_project,
    median,
    mem_available,
    timed,
)
from benchmarks.report import Result, Table, Target, fmt_bytes, fmt_rate, fmt_s, render

OUT_DIR = REPO / "benchmarks"
BENCHMARKS = ("cold", "noop", "quality", "train", "scaling", "research", "embedding", "store")
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
# Modules the stages import, loaded once before anything is timed, so that the first timed
# command does not also pay for reading them from disk into the page cache.
WARM_IMPORTS = (
    "import torch, sklearn.linear_model, sklearn.metrics, mlflow, pandas, pyarrow.parquet, "
    "dvc.repo, matplotlib.pyplot"
)


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def mlflow_run_count(project: Path) -> int:
    db = project / "mlruns" / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class Context:
    """The temporary folder and the project built once from scratch, shared by benchmarks."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self._built: Path | None = None
        self.build_info: dict[str, Any] = {}
        self._count = 0
        # The project files as they are now: every repo of this run is made from this copy.
        self._snapshot = copy_project_files(REPO, root / "snapshot")

    def fresh_project(self, label: str) -> Path:
        """A new project repo from the snapshot taken at the start: every benchmark of a run
        sees the same code, even if the working tree changes meanwhile."""
        self._count += 1
        base = self.root / f"{self._count:02d}-{label}"
        return make_project(base / "project", base / "dvc-cache", source=self._snapshot)

    def cold_repro(self, label: str) -> tuple[Path, dict[str, Any]]:
        """A fresh project, then `make repro`'s two commands (compose, dvc repro), each timed."""
        project = self.fresh_project(label)
        cache = project.parent / "dvc-cache"
        info: dict[str, Any] = {
            "empty_cache": not cache.exists() or not any(cache.iterdir()),
            "empty_mlruns": [p.name for p in (project / "mlruns").iterdir()] == [".gitkeep"],
        }
        compose = timed(["semops", "compose"], project)
        repro = timed(["dvc", "repro"], project)
        (project / "first-repro.log").write_text(repro.stdout + repro.stderr)
        info.update(
            compose_seconds=compose.seconds,
            repro_seconds=repro.seconds,
            repro_cpu_seconds=repro.cpu_seconds,
            repro_peak_rss=repro.max_rss_bytes,
            stages_ran=ran_stages(repro.stdout),
        )
        return project, info

    def built_project(self) -> Path:
        """The project after `make repro` from scratch: the first cold run, shared."""
        if self._built is None:
            warm = timed([PYTHON, "-c", WARM_IMPORTS], REPO)
            self._built, self.build_info = self.cold_repro("built")
            self.build_info["warm_imports_seconds"] = warm.seconds
        return self._built


# --------------------------------------------------------------------------- 1


def bench_noop(ctx: Context, result: Result) -> None:
    project = ctx.built_project()
    runs = ctx.args.noop_runs
    lock_before = (project / "dvc.lock").read_bytes()
    mlflow_before = mlflow_run_count(project)
    # One untimed call each first: the first call after a run refreshes DVC's state database.
    warm = {"status": timed(["dvc", "status"], project), "repro": timed(["dvc", "repro"], project)}
    status: list[Timed] = []
    repro: list[Timed] = []
    for i in range(runs):  # interleaved, each going first in turn
        for which in ("status", "repro") if i % 2 == 0 else ("repro", "status"):
            (status if which == "status" else repro).append(timed(["dvc", which], project))
    make_repro = [timed(["make", "repro"], project) for _ in range(3)]

    ran = sorted({s for r in [*repro, *make_repro, warm["repro"]] for s in ran_stages(r.stdout)})
    up_to_date = all("Data and pipelines are up to date" in r.stdout for r in [*repro, *status])
    lock_same = (project / "dvc.lock").read_bytes() == lock_before
    mlflow_same = mlflow_run_count(project) == mlflow_before
    med_status = median([r.seconds for r in status])
    med_repro = median([r.seconds for r in repro])
    med_make = median([r.seconds for r in make_repro])
    ratio = med_repro / med_status
    quiet = not ran and up_to_date and lock_same and mlflow_same
    result.targets += [
        Target(
            "no-op `dvc repro` / `dvc status` (medians)", f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5
        ),
        Target("stages run by a no-op repro", ", ".join(ran) or "none", "none", quiet),
    ]
    result.table(
        ["command", "runs", "median", "min", "max", "first call (not counted)"],
        [
            [
                "dvc status",
                runs,
                fmt_s(med_status),
                fmt_s(min(r.seconds for r in status)),
                fmt_s(max(r.seconds for r in status)),
                fmt_s(warm["status"].seconds),
            ],
            [
                "dvc repro (no-op)",
                runs,
                fmt_s(med_repro),
                fmt_s(min(r.seconds for r in repro)),
                fmt_s(max(r.seconds for r in repro)),
                fmt_s(warm["repro"].seconds),
            ],
            [
                "make repro (compose + no-op repro)",
                len(make_repro),
                fmt_s(med_make),
                fmt_s(min(r.seconds for r in make_repro)),
                fmt_s(max(r.seconds for r in make_repro)),
                "-",
            ],
        ],
    )
    result.notes += [
        f"Ratio of medians: {ratio:.2f}x ({fmt_s(med_repro)} / {fmt_s(med_status)}).",
        f"No stage ran: {not ran}; every run said 'Data and pipelines are up to date': "
        f"{up_to_date}; "
        f"dvc.lock unchanged: {lock_same}; MLflow runs unchanged ({mlflow_before}): {mlflow_same}.",
        "Repo: a fresh temporary git repo of the project after one `make repro` from scratch "
        "(benchmark 2's cold run), with a private DVC cache.",
    ]
    result.raw = {
        "status_seconds": [r.seconds for r in status],
        "repro_seconds": [r.seconds for r in repro],
        "make_repro_seconds": [r.seconds for r in make_repro],
        "first_status_seconds": warm["status"].seconds,
        "first_repro_seconds": warm["repro"].seconds,
        "median_status": med_status,
        "median_repro": med_repro,
        "ratio": ratio,
        "stages_ran": ran,
        "up_to_date": up_to_date,
        "dvc_lock_unchanged": lock_same,
        "mlflow_runs_unchanged": mlflow_same,
    }


# --------------------------------------------------------------------------- 2


def parse_importtime(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds spent importing (top-level entries of -X importtime, which include the
    imports a stage makes lazily inside functions) and those entries, largest first."""
    top: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if len(name) - len(name.lstrip(" ")) == 1:
            top.append((name.strip(), int(cumulative) / 1e6))
    top.sort(key=lambda item: -item[1])
    return sum(s for _, s in top), top


def bench_cold(ctx: Context, result: Result) -> None:
    ctx.built_project()
    info = ctx.build_info
    cold = [info]
    for i in range(1, ctx.args.cold_runs):  # more cold runs in throwaway repos
        project, extra = ctx.cold_repro(f"cold-{i + 1}")
        shutil.rmtree(project.parent)
        cold.append(extra)
    walls = [c["repro_seconds"] for c in cold]
    repro_s = min(walls)
    all_ran = all(c["stages_ran"] == list(STAGES) for c in cold)
    empty = all(c["empty_cache"] and c["empty_mlruns"] for c in cold)
    result.targets.append(
        Target(
            f"cold `dvc repro`, default data (best of {len(cold)})",
            fmt_s(repro_s),
            "< 20 s",
            repro_s < 20,
        )
    )

    # Per stage: a fresh repo, `semops compose`, then each stage in order as DVC would run it.
    staged = ctx.fresh_project("stages")
    startup = median([timed([PYTHON, "-c", "pass"], staged).seconds for _ in range(3)])
    compose = timed(["semops", "compose"], staged)
    stages = {s: timed(["python", f"stages/{s}.py"], staged) for s in STAGES}
    # Import time: the stages again, in order, under -X importtime (outputs are rewritten alike;
    # track finds its result already logged, which skips MLflow's table creation).
    imports, rerun = {}, {}
    for stage in STAGES:
        rerun[stage] = timed(["python", "-X", "importtime", f"stages/{stage}.py"], staged)
        imports[stage] = parse_importtime(rerun[stage].stderr)
    stage_sum = sum(r.seconds for r in stages.values())
    rows = []
    for stage in STAGES:
        total, top = imports[stage]
        run = stages[stage]
        rows.append([
            stage, fmt_s(run.seconds), fmt_s(run.cpu_seconds), fmt_s(total),
            f"{total / run.seconds:.0%}", fmt_bytes(run.max_rss_bytes),
            fmt_s(rerun[stage].seconds), ", ".join(f"{name} {s:.2f} s" for name, s in top[:3]),
        ])  # fmt: skip
    rows.append([
        "**all stages**", fmt_s(stage_sum), fmt_s(sum(r.cpu_seconds for r in stages.values())),
        fmt_s(sum(t for t, _ in imports.values())), "", "",
        fmt_s(sum(r.seconds for r in rerun.values())), "",
    ])  # fmt: skip
    result.table(
        ["stage", "wall", "CPU", "imports", "imports / wall", "peak RSS",
         "2nd run (-X importtime)", "largest top-level imports"],
        rows,
    )  # fmt: skip
    whole = [
        [f"`dvc repro` from scratch, run {i + 1}" + (" (the shared build)" if i == 0 else ""),
         fmt_s(c["repro_seconds"]), fmt_s(c["repro_cpu_seconds"]), fmt_bytes(c["repro_peak_rss"])]
        for i, c in enumerate(cold)
    ]  # fmt: skip
    whole += [
        ["sum of the stages run one by one (above)", fmt_s(stage_sum),
         fmt_s(sum(r.cpu_seconds for r in stages.values())), "-"],
        ["DVC's own share (best repro - sum of stages)", fmt_s(repro_s - stage_sum), "-", "-"],
        ["`semops compose` before each cold repro",
         ", ".join(fmt_s(c["compose_seconds"]) for c in cold), "-", "-"],
        ["`python -c pass` (interpreter start)", fmt_s(startup), "-", "-"],
    ]  # fmt: skip
    result.table(["run", "wall", "CPU", "peak RSS"], whole, title="Whole run")
    result.notes += [
        f"Every cold run ran every stage: {all_ran}; each started with an empty private DVC "
        f"cache and an empty mlruns/: {empty}. The target is judged on the fastest run (the "
        "least disturbed by other load on the machine).",
        "Per-stage figures come from another fresh repo, each `python stages/<stage>.py` run in "
        "order after `semops compose`, as DVC runs them. CPU = user + system time; wall well "
        "above CPU means waiting (for I/O or for a CPU other processes hold). Peak RSS: "
        "ru_maxrss.",
        "Imports: the stages run again under `python -X importtime`; the sum of its top-level "
        "entries, which include imports made lazily inside functions (torch in train, "
        "scikit-learn in evaluate, mlflow in track). The 2nd run's wall is shown too: there "
        "track finds its result already in MLflow and the MLflow database already created, so "
        "its difference to the first run is (mostly) MLflow's table creation plus logging.",
        "Each repo runs its own copy of src/ (PYTHONPATH), taken when the run started. "
        "Before timing, the heavy modules were imported once "
        f"({fmt_s(info['warm_imports_seconds'])}) so that disk reads into the page cache are "
        "not counted: 'cold' means empty DVC and MLflow stores, not a cold OS.",
    ]
    result.raw = {
        "cold_runs": cold,
        "best_repro_seconds": repro_s,
        "interpreter_start_seconds": startup,
        "compose_seconds_stage_repo": compose.seconds,
        "stage_seconds": {s: r.seconds for s, r in stages.items()},
        "stage_cpu_seconds": {s: r.cpu_seconds for s, r in stages.items()},
        "stage_peak_rss": {s: r.max_rss_bytes for s, r in stages.items()},
        "stage_import_seconds": {s: t for s, (t, _) in imports.items()},
        "stage_rerun_importtime_seconds": {s: r.seconds for s, r in rerun.items()},
        "stage_top_imports": {s: top[:10] for s, (_, top) in imports.items()},
        "stage_output": {s: r.stdout.strip()[-500:] for s, r in stages.items()},
        "sum_of_stages_seconds": stage_sum,
    }
    if not all_ran:
        ran = [c["stages_ran"] for c in cold]
        result.error = f"a cold run did not run every stage: {ran}"


# --------------------------------------------------------------------------- 3


def bench_train(ctx: Context, result: Result) -> None:
    project = ctx.built_project()
    cmd = [
        PYTHON,
        "-m",
        "benchmarks.train_throughput",
        "--epochs",
        str(ctx.args.train_epochs),
        "--repeats",
        str(ctx.args.train_repeats),
    ]
    run = timed(cmd, project, env=helper_env(project), timeout=900)
    data = json.loads(run.stdout.strip().splitlines()[-1])
    ratio = data["ratio"]
    ours, plain = data["ours_seconds"], data["plain_seconds"]
    ratio_median = median(plain) / median(ours)
    spread = max(max(ours) / min(ours), max(plain) / min(plain))
    data["ratio_of_medians"] = ratio_median
    data["spread"] = spread
    result.targets.append(
        Target("ours / plain PyTorch samples/s (best of each)", f"{ratio:.2f}", ">= 0.9",
               ratio >= 0.9)
    )  # fmt: skip
    result.table(
        ["loop", "best", "median", "runs", "samples/s (best)"],
        [
            ["semops.tabular.models.mlp.fit", fmt_s(min(ours)), fmt_s(median(ours)),
             ", ".join(fmt_s(s) for s in ours), fmt_rate(data["ours_samples_per_s"])],
            ["plain PyTorch loop", fmt_s(min(plain)), fmt_s(median(plain)),
             ", ".join(fmt_s(s) for s in plain), fmt_rate(data["plain_samples_per_s"])],
        ],
    )  # fmt: skip
    result.notes.append(
        f"Ratio of bests {ratio:.2f}, of medians {ratio_median:.2f}. Slowest / fastest run of the "
        f"same loop: {spread:.2f}x"
        + (
            " - more than the 10% margin the target tests, so this machine's noise decides the "
            "verdict; rerun with `--train-repeats 8` for a firmer figure."
            if spread > 1.1
            else "."
        )
    )
    result.notes += [
        f"{data['train_rows']} training rows x {data['features']} features, {data['epochs']} "
        f"epochs (early-stopping patience = epochs; ours ran {data['epochs_run_ours']}), batch "
        f"{data['batch_size']} ({data['steps_per_epoch']} steps/epoch), device {data['device']}, "
        f"torch threads {data['torch_threads']}; samples/s = rows x epochs / seconds.",
        "Same network (build_network), seeds, batches, AdamW settings; ours also scores the "
        f"validation split ({data['val_rows']} rows) and snapshots the best weights each epoch. "
        "Largest per-epoch train-loss difference between the two: "
        f"{data['max_abs_train_loss_diff']:.2g} "
        "(0 = the same computation).",
        "Not counted: a 1-epoch warm-up of each. Ours' first call took "
        f"{fmt_s(data['first_epoch_seconds_ours'])} for 1 epoch; it "
        + ("imported" if data.get("ours_imports_torch_dynamo") else "did not import")
        + " torch._dynamo (torch.optim's optimizers import it, about 2 s, on first use).",
    ]
    result.raw = data


# --------------------------------------------------------------------------- 4


def bench_scaling(ctx: Context, result: Result) -> None:
    project = ctx.built_project()
    raw = project / "data" / "raw" / "credit" / "table.parquet"
    params = project / "params.yaml"
    work = ctx.root / "scaling"
    work.mkdir()
    env = helper_env(project)
    limit = min(24 * GIB, mem_available() - GIB)
    budget = ctx.args.scaling_budget
    sizes: dict[int, dict[str, Any]] = {}
    for rows in ctx.args.sizes:
        entry: dict[str, Any] = {"rows": rows}
        sizes[rows] = entry
        source = work / f"raw-{rows}.parquet"
        workdir = work / str(rows)
        workdir.mkdir()
        module = [PYTHON, "-m", "benchmarks.scaling"]
        gen = timed(
            [*module, "generate", "--raw", str(raw), "--rows", str(rows), "--out", str(source)],
            project,
            env=env,
            timeout=600,
            rss_limit=limit,
            check=False,
        )
        if not gen.ok:
            entry["error"] = (
                f"generating the input failed ({gen.killed or gen.returncode}): {gen.tail(500)}"
            )
            continue
        entry["generate"] = json.loads(gen.stdout.strip().splitlines()[-1])
        for step, cmd in (
            (
                "clean",
                [
                    *module,
                    "clean",
                    "--input",
                    str(source),
                    "--params",
                    str(params),
                    "--workdir",
                    str(workdir),
                ],
            ),
            (
                "featurize",
                [*module, "featurize", "--params", str(params), "--workdir", str(workdir)],
            ),
        ):
            spent = sum(entry[s]["process_seconds"] for s in ("clean",) if s in entry)
            run = timed(
                cmd, project, env=env, timeout=max(30, budget - spent), rss_limit=limit, check=False
            )
            if not run.ok:
                entry["error"] = (
                    f"{step} failed after {run.seconds:.0f} s "
                    f"({run.killed or f'exit {run.returncode}'}; peak RSS seen "
                    f"{fmt_bytes(run.polled_rss_bytes)}): {run.tail(300)}"
                )
                break
            entry[step] = json.loads(run.stdout.strip().splitlines()[-1])
            entry[step]["process_seconds"] = run.seconds
            entry[step]["polled_peak_rss"] = run.polled_rss_bytes
        source.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)

    rows_out = []
    per_row: dict[int, float] = {}
    ratios: dict[int, float] = {}
    for rows, entry in sizes.items():
        if "featurize" not in entry:
            rows_out.append([f"{rows:,}", *["-"] * 8, entry.get("error", "")[:200]])
            continue
        cl, ft = entry["clean"], entry["featurize"]
        total = cl["total_seconds"] + ft["total_seconds"]
        peak = max(cl["peak_rss"], ft["peak_rss"])
        ratio = peak / cl["in_memory_bytes"]
        per_row[rows] = total / rows
        ratios[rows] = ratio
        entry["summary"] = {
            "total_seconds": total,
            "peak_rss": peak,
            "peak_over_in_memory": ratio,
            "us_per_row": total / rows * 1e6,
        }
        rows_out.append(
            [
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
        )
    result.table(
        [
            "rows",
            "clean rows/s (time)",
            "featurize rows/s (time)",
            "total",
            "time/row",
            "in memory",
            "peak RSS clean / featurize",
            "peak / in memory",
            "(peak - start-up RSS) / in memory",
            "note",
        ],
        rows_out,
    )
    steps = []
    for rows, entry in sizes.items():
        if "featurize" in entry:
            cl, ft = entry["clean"]["seconds"], entry["featurize"]["seconds"]
            middle = {k: v for k, v in cl.items() if k not in ("read", "write")}
            shown = fmt_s(sum(middle.values()))
            if len(middle) > 1:
                shown += " (" + " + ".join(f"{k} {fmt_s(v)}" for k, v in middle.items()) + ")"
            steps.append([
                f"{rows:,}", fmt_s(cl["read"]), shown, fmt_s(cl["write"]),
                *(fmt_s(ft[k]) for k in ("read", "fit", "transform", "write")),
            ])  # fmt: skip
    result.table(
        ["rows", "clean: read", "clean + split", "write splits", "featurize: read", "fit",
         "transform", "write"],
        steps,
        title="Steps",
    )  # fmt: skip

    largest = max(ratios) if ratios else None
    if largest is not None:
        result.targets.append(
            Target(
                f"peak RSS / in-memory size at {largest:,} rows",
                f"{ratios[largest]:.2f}x",
                "<= 4x",
                ratios[largest] <= 4,
            )
        )
    if len(per_row) >= 2:
        # Linear: the largest size costs no more per row than the cheapest smaller size
        # (fixed costs make the smallest sizes dearer per row, which is not a scaling problem).
        hi = max(per_row)
        lo = min((r for r in per_row if r != hi), key=lambda r: per_row[r])
        growth = per_row[hi] / per_row[lo]
        result.targets.append(
            Target(
                f"time per row, {hi:,} vs {lo:,} rows",
                f"{growth:.2f}x",
                "~1x (linear; <= 1.5x)",
                growth <= 1.5,
            )
        )
    for rows, entry in sizes.items():
        if "error" in entry:
            result.targets.append(
                Target(
                    f"{rows:,} rows",
                    "did not finish",
                    f"within {budget:.0f} s and {fmt_bytes(limit)}",
                    False,
                )
            )
            result.notes.append(f"{rows:,} rows: {entry['error']}")
    n_raw = next((e["generate"]["raw_rows"] for e in sizes.values() if "generate" in e), None)
    result.notes += [
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
        "process (it includes the interpreter and libraries, about "
        f"{fmt_bytes(next(iter(sizes.values())).get('clean', {}).get('rss_after_imports'))} before "
        "any data, which dominates the ratio at small sizes); the target is judged at the "
        "largest size.",
        f"Each size had {budget:.0f} s for clean + featurize together and a memory guard of "
        f"{fmt_bytes(limit)} (the process is killed above it).",
    ]
    result.raw = {"sizes": sizes, "rss_limit": limit, "budget_seconds": budget}


# --------------------------------------------------------------------------- 5


def bench_quality(ctx: Context, result: Result) -> None:
    built = ctx.built_project()
    copy = ctx.root / "quality" / "project"
    shutil.copytree(built, copy, symlinks=True)
    metrics = {"mlp": read_json(built / "data/reports/metrics.json")}
    trained = {"mlp": read_json(built / "data/reports/train.json")}
    seconds: dict[str, float] = {}
    for model in ("logreg", "gbdt"):
        timed(["semops", "compose", f"model={model}"], copy)
        train = timed(["python", "stages/train.py"], copy)
        evaluate = timed(["python", "stages/evaluate.py"], copy)
        seconds[model] = train.seconds + evaluate.seconds
        metrics[model] = read_json(copy / "data/reports/metrics.json")
        trained[model] = read_json(copy / "data/reports/train.json")
    timed(["git", "checkout", "params.yaml"], copy)
    auc = {m: metrics[m]["test"]["roc_auc"] for m in metrics}
    best = max(auc, key=lambda m: auc[m])
    result.targets.append(
        Target(
            "default model (mlp) test ROC AUC", f"{auc['mlp']:.4f}", ">= 0.83", auc["mlp"] >= 0.83
        )
    )
    rows = []
    for model in metrics:
        test = metrics[model]["test"]
        rows.append(
            [
                model + (" (default)" if model == "mlp" else ""),
                f"{test['roc_auc']:.4f}",
                f"{test['pr_auc']:.4f}",
                f"{test['accuracy']:.4f}",
                f"{test['f1']:.4f}",
                f"{test['log_loss']:.4f}",
                f"{test['brier']:.4f}",
                str(trained[model]["epochs_run"]),
                str(trained[model]["best_epoch"]),
            ]
        )
    result.table(
        [
            "model",
            "ROC AUC",
            "PR AUC",
            "accuracy",
            "F1",
            "log loss",
            "Brier",
            "epochs/rounds run",
            "best",
        ],
        rows,
    )
    baseline = metrics["mlp"]["baseline_logreg"]["roc_auc"]
    result.notes += [
        f"Test split: {metrics['mlp']['test_rows']} rows of `credit` (positive class 'bad'); the "
        "same split and features for every model (only params.yaml's model section differs).",
        "mlp: the cold run's result. logreg and gbdt: `semops compose model=<name>` then the train "
        "and evaluate stages in a copy of that repo (their default conf/model/*.yaml).",
        f"Best test ROC AUC: {best} ({auc[best]:.4f}). The evaluate stage's own logreg baseline "
        f"scored {baseline:.4f} (the logreg row should match it).",
    ]
    result.raw = {"metrics": metrics, "train": trained, "train_evaluate_seconds": seconds}


# --------------------------------------------------------------------------- main


def bench_research(ctx: Context, result: Result) -> None:
    research.bench_research(ctx.fresh_project("research"), result)


def bench_embedding(ctx: Context, result: Result) -> None:
    research_embedding.bench(result)


def bench_store(ctx: Context, result: Result) -> None:
    research_store.bench(result)


RUNNERS: dict[str, tuple[str, Callable[[Context, Result], None]]] = {
    "cold": ("2. Cold full run on the default data", bench_cold),
    "noop": ("1. No-op `dvc repro` vs `dvc status`", bench_noop),
    "quality": ("5. Model quality on credit", bench_quality),
    "train": ("3. MLP training throughput", bench_train),
    "scaling": ("4. clean + featurize scaling", bench_scaling),
    "research": ("6. Research index: research-embed, retrieval quality, queries", bench_research),
    "embedding": ("7. Local embedder vs sentence-transformers", bench_embedding),
    "store": ("8. Embedded Qdrant store at 50,000 vectors", bench_store),
}


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
    parser.add_argument(
        "--scaling-budget", type=float, default=300.0, help="seconds per size for clean + featurize"
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
    return args


def earlier_results(path: Path) -> dict[str, Result]:
    """The results file's benchmarks, so that a run of a subset (--only) keeps the others."""
    if not path.exists():
        return {}
    kept = {}
    for name, raw in json.loads(path.read_text())["benchmarks"].items():
        targets = [Target(t["metric"], t["display"], t["target"], t["met"]) for t in raw["targets"]]
        tables = [Table(t["columns"], t["rows"], t["title"]) for t in raw["tables"]]
        notes = [*raw["notes"], "(kept from an earlier `make bench` run: not rerun this time)"]
        kept[name] = Result(
            name, raw["title"], targets, tables, notes, raw["raw"], raw["error"], raw["seconds"]
        )
    return kept


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
    ctx = Context(root, args)
    results: list[Result] = []
    argv_note = " ".join(sys.argv[1:] if argv is None else argv)

    previous = earlier_results(args.out / "results.json")

    def write() -> None:
        total = time.perf_counter() - start
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
        atomic_write(args.out / "results.md", render(machine, ordered, total, argv_note))

    try:
        for name in [b for b in RUNNERS if b in args.only]:
            title, runner = RUNNERS[name]
            print(f"bench: {title} ...", flush=True)
            result = Result(name, title)
            t0 = time.perf_counter()
            try:
                runner(ctx, result)
            except Exception as exc:  # a failed benchmark is recorded; the others still run
                result.error = f"{type(exc).__name__}: {exc}"
                result.raw["traceback"] = traceback.format_exc()
            result.seconds = time.perf_counter() - t0
            results.append(result)
            for target in result.targets:
                shown = f"{target.display} (target {target.target})"
                print(f"  {target.metric}: {shown}: {target.verdict}")
            if result.error:
                print(f"  error: {result.error.strip().splitlines()[0][:500]}")
            print(f"  ({result.seconds:.0f} s)", flush=True)
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
