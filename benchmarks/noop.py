"""Benchmark 1: a no-op `dvc repro` against `dvc status` on the built project (no stage may run,
nothing may change)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Timed, median, ran_stages, timed
from benchmarks.report import Result, Target, fmt_s

TITLE = "1. No-op `dvc repro` vs `dvc status`"


def mlflow_run_count(project: Path) -> int:
    db = project / "mlruns" / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


@dataclass
class Timings:
    first_status: Timed  # not counted: the first call after a run refreshes DVC's state database
    first_repro: Timed
    status: list[Timed]
    repro: list[Timed]
    make_repro: list[Timed]


def _timings(project: Path, runs: int) -> Timings:
    """One untimed call of each, then `dvc status` and `dvc repro` interleaved, each going first
    in turn, then `make repro`."""
    first_status = timed(["dvc", "status"], project)
    first_repro = timed(["dvc", "repro"], project)
    status: list[Timed] = []
    repro: list[Timed] = []
    for i in range(runs):
        for which in ("status", "repro") if i % 2 == 0 else ("repro", "status"):
            (status if which == "status" else repro).append(timed(["dvc", which], project))
    make_repro = [timed(["make", "repro"], project) for _ in range(3)]
    return Timings(first_status, first_repro, status, repro, make_repro)


def _row(command: str, runs: list[Timed], first: Timed | None) -> list[Any]:
    seconds = [r.seconds for r in runs]
    return [
        command,
        len(runs),
        fmt_s(median(seconds)),
        fmt_s(min(seconds)),
        fmt_s(max(seconds)),
        fmt_s(first.seconds) if first else "-",
    ]


def run(ctx: Context, result: Result) -> None:
    project = ctx.built_project()
    lock_before = (project / "dvc.lock").read_bytes()
    mlflow_before = mlflow_run_count(project)
    t = _timings(project, ctx.args.noop_runs)
    repros = [*t.repro, *t.make_repro, t.first_repro]
    ran = sorted({s for r in repros for s in ran_stages(r.stdout)})
    up_to_date = all("Data and pipelines are up to date" in r.stdout for r in [*t.repro, *t.status])
    lock_same = (project / "dvc.lock").read_bytes() == lock_before
    mlflow_same = mlflow_run_count(project) == mlflow_before
    med_status = median([r.seconds for r in t.status])
    med_repro = median([r.seconds for r in t.repro])
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
            _row("dvc status", t.status, t.first_status),
            _row("dvc repro (no-op)", t.repro, t.first_repro),
            _row("make repro (compose + no-op repro)", t.make_repro, None),
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
        "status_seconds": [r.seconds for r in t.status],
        "repro_seconds": [r.seconds for r in t.repro],
        "make_repro_seconds": [r.seconds for r in t.make_repro],
        "first_status_seconds": t.first_status.seconds,
        "first_repro_seconds": t.first_repro.seconds,
        "median_status": med_status,
        "median_repro": med_repro,
        "ratio": ratio,
        "stages_ran": ran,
        "up_to_date": up_to_date,
        "dvc_lock_unchanged": lock_same,
        "mlflow_runs_unchanged": mlflow_same,
    }
