"""Benchmark 11: working as a team. (1) Sweeps of queued experiments (model=logreg, one model.C
each) run by 1, 2 and 4 workers against a real `mlflow server` on PostgreSQL (`semops server
start`): wall time, runs landed, failures. (2) A teammate's fresh clone: `dvc pull` from a
local-path DVC remote against recomputing with `make run`.

`run` drives it from benchmarks/run.py. `python -m benchmarks.team landed ...`, run inside the
project, reads what a sweep left on the server.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PYTHON,
    REPO,
    Context,
    clean_env,
    helper_env,
    project_env,
    timed,
)
from benchmarks.report import Result, Target, fmt_s
from benchmarks.serve import free_port

TITLE = "11. Team: sweeps against the MLflow server, `dvc pull` vs `make run`"
TASK = re.compile(r"^[0-9a-f]{7}\s+(\S+)\s.*\s(Queued|Running|Success|Failed)\s*$", re.M)
STAGE = re.compile(r"Running stage '([^']+)'")
# The clones' .venv is this repo's, symlinked: make must not reinstall it from a clone whose
# pyproject.toml is newer than the stamp (pip would point the editable install there).
RECOMPUTE = ["make", "-o", ".venv/.installed", "run"]
FIRST_C = 0.101  # sweeps' model.C values count up from here: none the built project has run


def team_folder() -> Path:
    """A folder of its own in /tmp that PostgreSQL can enter: run as root, it runs as the
    `postgres` user, and the run's folder (mkdtemp's) is the owner's alone."""
    folder = Path(tempfile.mkdtemp(prefix="semops-bench-team-", dir="/tmp"))
    folder.chmod(0o755)
    return folder


def queue_status(project: Path) -> dict[str, str]:
    output = timed(["dvc", "queue", "status"], project).stdout
    return dict(TASK.findall(output))


def sweep(project: Path, url: str, jobs: int, count: int, first: float) -> dict[str, Any]:
    """Queue `count` experiments, run them with `jobs` workers logging to `url`; what landed.

    `dvc exp run --run-all -j N` starts the workers `dvc queue start -j N` starts, and returns
    once it has followed every queued experiment to its end: its wall time is the sweep's."""
    experiment = f"bench-j{jobs}"
    values = ",".join(f"{first + i / 1000:.3f}" for i in range(count))
    before = set(queue_status(project))
    overrides = ["model=logreg", f"model.C={values}", f"tracking.experiment={experiment}"]
    timed(["dvc", "exp", "run", "--queue", *(f"-S{o}" for o in overrides)], project)
    env = project_env(project, MLFLOW_TRACKING_URI=url)
    ran = timed(
        ["dvc", "exp", "run", "--run-all", "-j", str(jobs)], project, env, 3600, check=False
    )
    tasks = {k: v for k, v in queue_status(project).items() if k not in before}
    timed(["dvc", "queue", "stop"], project, check=False)  # idle workers would linger a minute
    helper = [PYTHON, "-m", "benchmarks.team", "landed", "--url", url]
    found = timed([*helper, "--experiment", experiment], project, helper_env(project)).last_json()
    pending = project / "mlruns" / "pending"
    return {
        "jobs": jobs,
        "experiments": count,
        "seconds": ran.seconds,
        "returncode": ran.returncode,
        "succeeded": sorted(k for k, v in tasks.items() if v == "Success"),
        "failed": sorted(k for k, v in tasks.items() if v != "Success"),
        "pending": sorted(p.name for p in pending.glob("[!.]*")),
        "tail": ran.tail(1500) if not ran.ok else "",
        **found,
    }


def landed(url: str, experiment: str) -> dict[str, Any]:
    """The experiment's runs on the server (complete ones per DVC experiment), the versions of
    its registered model, and whether `champion` is on the best test ROC AUC (ties: the older
    version), computed from the runs' own metrics."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from semops.tracking.bundle import COMPLETE_TAG
    from semops.tracking.describe import ROC_METRIC, registered_model_name

    client = MlflowClient(tracking_uri=url)
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else client.search_runs([found.experiment_id], max_results=1000)
    complete = [r for r in runs if r.data.tags.get(COMPLETE_TAG) == "true"]
    per_experiment = Counter(r.data.tags.get("dvc_experiment", "") for r in complete)
    name = registered_model_name(experiment, "credit")
    versions = client.search_model_versions(f"name = '{name}'", max_results=1000)
    roc = {r.info.run_id: r.data.metrics.get(ROC_METRIC, float("nan")) for r in complete}
    best = max(roc.values(), default=None)
    expected = min((int(v.version) for v in versions if roc.get(v.run_id) == best), default=None)
    try:
        champion: int | None = int(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        champion = None
    return {
        "landed": sorted(per_experiment),
        "runs": len(runs),
        "complete_runs": len(complete),
        "duplicates": sum(n - 1 for n in per_experiment.values()),
        "versions": len(versions),
        "versions_per_run": sorted(Counter(v.run_id for v in versions).values()),
        "champion": champion,
        "champion_on_best": champion is not None and champion == expected,
    }


def clone(source: Path, dest: Path) -> Path:
    """A teammate's clone: git's files, the venv symlinked, an empty private DVC cache."""
    env = clean_env()
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], env=env, check=True)
    (dest / ".venv").symlink_to(REPO / ".venv")
    for cmd in (
        ["dvc", "cache", "dir", "--local", str(dest.parent / f"{dest.name}-cache")],
        ["dvc", "config", "--local", "core.site_cache_dir", str(dest.parent / f"{dest.name}-site")],
    ):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest


def share(project: Path, folder: Path) -> dict[str, Any]:
    """Push the project's results to a local-path remote and commit them; then a fresh clone
    pulls them (and `dvc repro` there must run nothing), another recomputes them."""
    make = ["make", "-o", ".venv/.installed"]
    timed([*make, "remote", f"URL={folder / 'remote'}"], project)
    push = timed([*make, "push"], project, timeout=1800)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "results, shared on the remote"]):
        subprocess.run(cmd, cwd=project, env=clean_env(), check=True, capture_output=True)
    pulled = clone(project, folder / "clone-pull")
    pull = timed(["dvc", "pull"], pulled, timeout=1800)
    after = timed(["dvc", "repro"], pulled, timeout=1800)
    recomputed = clone(project, folder / "clone-run")
    rerun = timed(RECOMPUTE, recomputed, timeout=3600)
    return {
        "push_seconds": push.seconds,
        "pull_seconds": pull.seconds,
        "pull_cpu_seconds": pull.cpu_seconds,
        "repro_after_pull_seconds": after.seconds,
        "stages_after_pull": STAGE.findall(after.stdout),
        "up_to_date_after_pull": "Data and pipelines are up to date" in after.stdout,
        "make_run_seconds": rerun.seconds,
        "make_run_cpu_seconds": rerun.cpu_seconds,
        "make_run_stages": STAGE.findall(rerun.stdout),
        "remote_bytes": sum(
            f.stat().st_size for f in (folder / "remote").rglob("*") if f.is_file()
        ),
    }


def measure(ctx: Context, folder: Path) -> dict[str, Any]:
    """The server started in a copy of the built project, the sweeps, then the sharing."""
    project = folder / "project"
    shutil.copytree(ctx.built_project(), project, symlinks=True)
    started = timed(["semops", "server", "start", "--port", str(free_port())], project)
    url = json.loads((project / "mlruns" / "server" / "server.json").read_text())["url"]
    data: dict[str, Any] = {"server_start_seconds": started.seconds, "sweeps": []}
    try:
        for i, jobs in enumerate(ctx.args.team_jobs):
            first = FIRST_C + i * ctx.args.team_experiments / 1000
            data["sweeps"].append(sweep(project, url, jobs, ctx.args.team_experiments, first))
    finally:
        timed(["dvc", "queue", "stop"], project, check=False)
        timed(["semops", "server", "stop"], project, check=False)
    data.update(share(project, folder))
    data["cold_build"] = ctx.build_info
    return data


def run(ctx: Context, result: Result) -> None:
    folder = team_folder()
    try:
        data = measure(ctx, folder)
    finally:
        if not ctx.args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    result.raw = data
    report(data, result)
    if ctx.args.keep:
        result.notes.append(f"Its repos, remote and server folder are kept in {folder}.")


def report(data: dict[str, Any], result: Result) -> None:
    sweeps = data["sweeps"]
    every = all(
        s["landed"] == s["succeeded"]
        and not s["failed"]
        and s["duplicates"] == 0
        and s["versions_per_run"] == [1] * len(s["landed"])
        and not s["pending"]
        and s["champion_on_best"]
        for s in sweeps
    )
    shown = ", ".join(f"-j {s['jobs']}: {len(s['landed'])}/{s['experiments']}" for s in sweeps)
    ratio = data["pull_seconds"] / data["make_run_seconds"]
    pulled = f"{fmt_s(data['pull_seconds'])} vs {fmt_s(data['make_run_seconds'])}"
    result.targets += [
        Target(
            "experiments landed: one run and one version each, none failed, none pending, "
            "champion on the best",
            shown,
            "all",
            every,
        ),
        Target(
            "fresh clone: `dvc pull` / `make run` wall time",
            f"{ratio:.2f}x ({pulled})",
            "< 1x",
            ratio < 1,
        ),
        Target(
            "stages `dvc repro` runs after `dvc pull`",
            ", ".join(data["stages_after_pull"]) or "none",
            "none",
            not data["stages_after_pull"] and data["up_to_date_after_pull"],
        ),
    ]
    sweep_table(sweeps, result)
    share_table(data, result)
    result.notes += notes(data)


def sweep_table(sweeps: list[dict[str, Any]], result: Result) -> None:
    base = sweeps[0]["seconds"] if sweeps else 0.0
    columns = ["workers (-j)", "experiments", "wall", "vs the first", "runs landed", "failed"]
    columns += ["versions", "duplicates", "pending after", "champion on best"]
    rows = [
        [
            s["jobs"],
            s["experiments"],
            fmt_s(s["seconds"]),
            f"{base / s['seconds']:.2f}x",
            s["complete_runs"],
            len(s["failed"]),
            s["versions"],
            s["duplicates"],
            len(s["pending"]),
            s["champion_on_best"],
        ]
        for s in sweeps
    ]
    result.table(columns, rows, "Sweeps against the team server")


def share_table(data: dict[str, Any], result: Result) -> None:
    cold = data["cold_build"]
    pull = ["`dvc pull` (local-path remote)", fmt_s(data["pull_seconds"])]
    repro = ["`dvc repro` after the pull", fmt_s(data["repro_after_pull_seconds"]), "-"]
    run = ["`make run` (recompute from scratch)", fmt_s(data["make_run_seconds"])]
    reference = [
        "(benchmark 2's cold `dvc repro`, for reference)",
        fmt_s(cold.get("repro_seconds")),
    ]
    rows = [
        [*pull, fmt_s(data["pull_cpu_seconds"]), "-"],
        [*repro, ", ".join(data["stages_after_pull"]) or "none"],
        [*run, fmt_s(data["make_run_cpu_seconds"]), ", ".join(data["make_run_stages"])],
        [*reference, fmt_s(cold.get("repro_cpu_seconds")), "-"],
    ]
    columns = ["command, in a fresh clone", "wall", "CPU", "stages run"]
    result.table(columns, rows, "Sharing results: pull against recompute")


def notes(data: dict[str, Any]) -> list[str]:
    failed = [
        f"-j {s['jobs']}: {', '.join(s['failed'])} ({s['tail']})"
        for s in data["sweeps"]
        if s["failed"]
    ]
    return [
        "Reproduce: `python -m benchmarks.run --only team` (`--team-experiments N "
        "--team-jobs 1,2,4`).",
        "Server: `semops server start --port <free>` in a copy of the built project: PostgreSQL "
        "(its own cluster) and `mlflow server --workers 2` serving the artifacts, up in "
        f"{fmt_s(data['server_start_seconds'])}; stopped with `semops server stop`.",
        "Sweep: `dvc exp run --queue -S model=logreg -S model.C=<N values> -S "
        "tracking.experiment=bench-j<N>`, then `dvc exp run --run-all -j <N>` with "
        "MLFLOW_TRACKING_URI=<server> (the workers of `dvc queue start -j <N>`; it returns once "
        "every experiment has ended): wall time from its start to its end. New C values for "
        "each sweep, so DVC's run cache serves none: train, evaluate and track run for each. "
        "Landed: complete runs per DVC experiment on the server; versions of "
        "bench-j<N>-credit; champion checked against the runs' test.roc_auc.",
        "Sharing: `make remote URL=<folder>` and `make push` (`dvc add` of the embedding store, "
        f"`dvc push`: {fmt_s(data['push_seconds'])}, "
        f"{data['remote_bytes'] / 2**20:.1f} MiB on the remote) in the project, results "
        "committed; `git clone` twice, each with an empty DVC cache. One runs `dvc pull` then "
        "`dvc repro`; the other `make run` (compose, `dvc repro` of every stage, the embedding "
        "of the research corpus included, report), as `make -o .venv/.installed run`: the "
        "clones share this repo's venv, which make must not reinstall from a clone.",
        *(["Failed experiments: " + "; ".join(failed)] if failed else []),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    found = steps.add_parser("landed")
    found.add_argument("--url", required=True)
    found.add_argument("--experiment", required=True)
    args = parser.parse_args()
    print(json.dumps(landed(args.url, args.experiment)))


if __name__ == "__main__":
    main()
