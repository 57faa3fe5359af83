"""Benchmark 2: `dvc repro` from scratch on the default data, whole and stage by stage, with
the time each stage spends importing."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from benchmarks.common import PYTHON, STAGES, Context, Timed, median, timed
from benchmarks.report import Result, Target, fmt_bytes, fmt_s

TITLE = "2. Cold full run on the default data"

NOTES = [
    "Per-stage figures come from another fresh repo, each `python stages/<stage>.py` run in "
    "order after `semops compose`, as DVC runs them. CPU = user + system time; wall well "
    "above CPU means waiting (for I/O or for a CPU other processes hold). Peak RSS: "
    "ru_maxrss.",
    "Imports: the stages run again under `python -X importtime`; the sum of its top-level "
    "entries, which include imports made lazily inside functions (torch in train, "
    "scikit-learn in evaluate, mlflow in track). The 2nd run's wall is shown too: there "
    "track finds its result already in MLflow and the MLflow database already created, so "
    "its difference to the first run is (mostly) MLflow's table creation plus logging.",
]


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


@dataclass
class StageRuns:
    interpreter_start: float  # median `python -c pass`
    compose: Timed
    stages: dict[str, Timed]
    reruns: dict[str, Timed]  # the second run, under -X importtime
    imports: dict[str, tuple[float, list[tuple[str, float]]]]

    @property
    def stage_sum(self) -> float:
        return sum(r.seconds for r in self.stages.values())

    @property
    def stage_cpu(self) -> float:
        return sum(r.cpu_seconds for r in self.stages.values())


def cold_runs(ctx: Context) -> list[dict[str, Any]]:
    """The shared build's cold run, then more cold runs in throwaway repos."""
    ctx.built_project()
    cold = [ctx.build_info]
    for i in range(1, ctx.args.cold_runs):
        project, extra = ctx.cold_repro(f"cold-{i + 1}")
        shutil.rmtree(project.parent)
        cold.append(extra)
    return cold


def stage_runs(ctx: Context) -> StageRuns:
    """A fresh repo, `semops compose`, then each stage in order as DVC would run it; then the
    stages again under -X importtime (outputs are rewritten alike; track finds its result
    already logged, which skips MLflow's table creation)."""
    staged = ctx.fresh_project("stages")
    startup = median([timed([PYTHON, "-c", "pass"], staged).seconds for _ in range(3)])
    compose = timed(["semops", "compose"], staged)
    stages = {s: timed(["python", f"stages/{s}.py"], staged) for s in STAGES}
    reruns = {s: timed(["python", "-X", "importtime", f"stages/{s}.py"], staged) for s in STAGES}
    imports = {s: parse_importtime(r.stderr) for s, r in reruns.items()}
    return StageRuns(startup, compose, stages, reruns, imports)


def _stage_table(runs: StageRuns, result: Result) -> None:
    rows = []
    for stage in STAGES:
        total, top = runs.imports[stage]
        run = runs.stages[stage]
        rows.append([
            stage, fmt_s(run.seconds), fmt_s(run.cpu_seconds), fmt_s(total),
            f"{total / run.seconds:.0%}", fmt_bytes(run.max_rss_bytes),
            fmt_s(runs.reruns[stage].seconds),
            ", ".join(f"{name} {s:.2f} s" for name, s in top[:3]),
        ])  # fmt: skip
    rows.append([
        "**all stages**", fmt_s(runs.stage_sum), fmt_s(runs.stage_cpu),
        fmt_s(sum(t for t, _ in runs.imports.values())), "", "",
        fmt_s(sum(r.seconds for r in runs.reruns.values())), "",
    ])  # fmt: skip
    result.table(
        ["stage", "wall", "CPU", "imports", "imports / wall", "peak RSS",
         "2nd run (-X importtime)", "largest top-level imports"],
        rows,
    )  # fmt: skip


def _whole_table(cold: list[dict[str, Any]], runs: StageRuns, result: Result) -> None:
    best = min(c["repro_seconds"] for c in cold)
    whole = [
        [f"`dvc repro` from scratch, run {i + 1}" + (" (the shared build)" if i == 0 else ""),
         fmt_s(c["repro_seconds"]), fmt_s(c["repro_cpu_seconds"]), fmt_bytes(c["repro_peak_rss"])]
        for i, c in enumerate(cold)
    ]  # fmt: skip
    whole += [
        ["sum of the stages run one by one (above)", fmt_s(runs.stage_sum),
         fmt_s(runs.stage_cpu), "-"],
        ["DVC's own share (best repro - sum of stages)", fmt_s(best - runs.stage_sum), "-", "-"],
        ["`semops compose` before each cold repro",
         ", ".join(fmt_s(c["compose_seconds"]) for c in cold), "-", "-"],
        ["`python -c pass` (interpreter start)", fmt_s(runs.interpreter_start), "-", "-"],
    ]  # fmt: skip
    result.table(["run", "wall", "CPU", "peak RSS"], whole, title="Whole run")


def _raw(cold: list[dict[str, Any]], runs: StageRuns) -> dict[str, Any]:
    return {
        "cold_runs": cold,
        "best_repro_seconds": min(c["repro_seconds"] for c in cold),
        "interpreter_start_seconds": runs.interpreter_start,
        "compose_seconds_stage_repo": runs.compose.seconds,
        "stage_seconds": {s: r.seconds for s, r in runs.stages.items()},
        "stage_cpu_seconds": {s: r.cpu_seconds for s, r in runs.stages.items()},
        "stage_peak_rss": {s: r.max_rss_bytes for s, r in runs.stages.items()},
        "stage_import_seconds": {s: t for s, (t, _) in runs.imports.items()},
        "stage_rerun_importtime_seconds": {s: r.seconds for s, r in runs.reruns.items()},
        "stage_top_imports": {s: top[:10] for s, (_, top) in runs.imports.items()},
        "stage_output": {s: r.stdout.strip()[-500:] for s, r in runs.stages.items()},
        "sum_of_stages_seconds": runs.stage_sum,
    }


def run(ctx: Context, result: Result) -> None:
    cold = cold_runs(ctx)
    repro_s = min(c["repro_seconds"] for c in cold)
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
    runs = stage_runs(ctx)
    _stage_table(runs, result)
    _whole_table(cold, runs, result)
    result.notes += [
        f"Every cold run ran every stage: {all_ran}; each started with an empty private DVC "
        f"cache and an empty mlruns/: {empty}. The target is judged on the fastest run (the "
        "least disturbed by other load on the machine).",
        *NOTES,
        "Each repo runs its own copy of src/ (PYTHONPATH), taken when the run started. "
        "Before timing, the heavy modules were imported once "
        f"({fmt_s(ctx.build_info['warm_imports_seconds'])}) so that disk reads into the page "
        "cache are not counted: 'cold' means empty DVC and MLflow stores, not a cold OS.",
    ]
    result.raw = _raw(cold, runs)
    if not all_ran:
        ran = [c["stages_ran"] for c in cold]
        result.error = f"a cold run did not run every stage: {ran}"
