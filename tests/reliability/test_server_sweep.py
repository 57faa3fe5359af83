"""Queued experiments logging at once to a team MLflow server on PostgreSQL: each lands as one
complete run and one model version, `champion` on the best. A server killed mid-sweep fails no
stage (a request it cut off once did: "Connection aborted" was taken for a refusal): the track
stage says so and keeps the results pending, and `make mirror` (`semops mirror`) delivers them
once the server is back, none twice.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run
from serverkit import ServerInfo, running_server
from test_queue_tracking import SRC, failure_logs, finished, queue_status, start_workers
from test_tracking import make_bundle

from semops.tracking.bundle import BUNDLE, COMPLETE_TAG
from semops.tracking.mirror import is_unreachable, log_bundle, short_reason

# C values no other test uses: the shared DVC run cache must not serve these experiments.
SWEEP = "0.031,0.032,0.033,0.034"
KILLED = "0.041,0.042,0.043"
UNREACHABLE = "could not be reached"


def start_sweep(project: Path, jobs: int, values: str, experiment: str, **env: str) -> set[str]:
    """Queue one experiment per value of model.C (logged to MLflow experiment `experiment`) and
    start `jobs` workers with `env` in their environment; the tasks there before."""
    before = set(queue_status(project))
    overrides = ["model=logreg", f"model.C={values}", f"tracking.experiment={experiment}"]
    queue = ["dvc", "exp", "run", "--queue", *(f"-S{o}" for o in overrides)]
    run(queue, project, PYTHONPATH=SRC)
    start_workers(project, jobs, **env)
    return before


def complete_runs(url: str, experiment: str) -> list[Any]:
    """The active runs of the experiment, each checked complete."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} at {url}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    assert all(r.data.tags.get(COMPLETE_TAG) == "true" for r in runs), "an incomplete run"
    return list(runs)


def assert_landed(url: str, experiment: str, tasks: dict[str, str]) -> None:
    """One complete run and one model version per task, `champion` on the best test ROC AUC
    (ties: the older version), computed from the runs' own metrics."""
    from mlflow.tracking import MlflowClient

    runs = complete_runs(url, experiment)
    landed = Counter(r.data.tags["dvc_experiment"] for r in runs)
    assert landed == dict.fromkeys(tasks, 1), landed
    client = MlflowClient(tracking_uri=url)
    name = f"{experiment}-credit"
    versions = client.search_model_versions(f"name = '{name}'", max_results=1000)
    assert Counter(v.run_id for v in versions) == {r.info.run_id: 1 for r in runs}
    roc = {r.info.run_id: r.data.metrics["test.roc_auc"] for r in runs}
    best = max(roc.values())
    expected = min(int(v.version) for v in versions if roc[v.run_id] == best)
    champion = client.get_model_version_by_alias(name, "champion")
    assert int(champion.version) == expected, (champion.version, roc)


def pending(project: Path) -> list[str]:
    root = project / "mlruns" / "pending"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def track_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(("track", "error"))]


def kept_folders(log: str) -> list[str]:
    """The folders a track stage's output says it kept its results in."""
    line = next(x for x in log.splitlines() if x.startswith("track: the DVC results stand"))
    return [folder.strip(" .") for folder in line.split("kept in", 1)[1].split(",")]


def wait_for_a_run(url: str, experiment: str, timeout: float = 300) -> None:
    """Until one run of the experiment is complete on the server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        if found is not None and client.search_runs(
            [found.experiment_id], f"tags.`{COMPLETE_TAG}` = 'true'", max_results=1
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"no run of {experiment!r} reached {url} in {timeout:.0f} s")


def stop_queue(project: Path) -> None:
    run(["dvc", "queue", "stop"], project, False, PYTHONPATH=SRC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """One team server for the sweeps (half a minute to start): each logs to its own
    experiment and registered model."""
    with running_server(tmp_path_factory.mktemp("team") / "server") as info:
        yield info


def test_four_experiments_on_four_workers_at_once_all_land_on_the_server(
    project_copy: Path, server: ServerInfo
) -> None:
    try:
        # The workers `dvc queue start` spawns keep its environment: the stages see the URI.
        before = start_sweep(project_copy, 4, SWEEP, "sweep", MLFLOW_TRACKING_URI=server.url)
        tasks = finished(project_copy, before)
    finally:
        stop_queue(project_copy)
    assert set(tasks.values()) == {"Success"}, failure_logs(project_copy, tasks)
    assert len(tasks) == 4
    assert_landed(server.url, "sweep", tasks)
    assert pending(project_copy) == []


def test_a_server_killed_mid_sweep_fails_no_stage_and_mirror_delivers(
    project_copy: Path, server: ServerInfo
) -> None:
    # The team's way: the URI in the project's .env, which every stage and `make` read.
    (project_copy / ".env").write_text(f"MLFLOW_TRACKING_URI={server.url}\n")
    try:
        before = start_sweep(project_copy, 2, KILLED, "killed")
        wait_for_a_run(server.url, "killed")
        server.kill()
        tasks = finished(project_copy, before)
    finally:
        stop_queue(project_copy)
    assert set(tasks.values()) == {"Success"}, failure_logs(project_copy, tasks)
    logs = {n: run(["dvc", "queue", "logs", n], project_copy).stdout for n in tasks}
    kept = {n: log for n, log in logs.items() if UNREACHABLE in log}
    # One run landed before the kill; the third experiment had not even started.
    assert kept, {n: track_lines(log) for n, log in logs.items()}
    # Each names the folders it kept its results in, pending until `make mirror`.
    kept_in = {Path(f) for log in kept.values() for f in kept_folders(log)}
    root = (project_copy / "mlruns" / "pending").resolve()
    assert kept_in and {f.parent for f in kept_in} == {root}, kept_in
    assert {f.name for f in kept_in} <= set(pending(project_copy))
    assert all((f / BUNDLE).is_file() for f in kept_in)

    server.restart()
    # What `make mirror` runs; make itself could reinstall the shared venv from this copy.
    mirrored = run(["semops", "mirror"], project_copy).stdout
    assert f"mirrored to {server.url}" in mirrored, mirrored
    assert_landed(server.url, "killed", tasks)
    assert pending(project_copy) == []


def test_a_server_gone_mid_request_is_out_of_reach(tmp_path: Path) -> None:
    """A server killed while it handles a request closes the connection with no reply: the
    result waits for `make mirror`; it is no refusal that fails the track stage."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def drop_every_request() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:  # closed: the test is over
                    return
                with connection:
                    connection.recv(65536)

        threading.Thread(target=drop_every_request, daemon=True).start()
        port = listener.getsockname()[1]
        with pytest.raises(Exception) as raised:
            log_bundle(make_bundle(tmp_path / "b"), f"http://127.0.0.1:{port}")
    assert is_unreachable(raised.value)
    assert short_reason(raised.value) == "Connection aborted"
