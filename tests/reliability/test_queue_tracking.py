"""Queue workers running at once each log their experiment to one MLflow store: on a new store
two track stages once raced MLflow's table creation ("duplicate column name: step"), on an
existing one the creation of the experiment ("UNIQUE constraint failed"), and the stage failed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conftest import run
from projectkit import clean_env

import semops
from semops.tracking.mirror import experiment_id_for

TASK = re.compile(r"^([0-9a-f]{7})\s+(\S+)\s.*\s(Queued|Running|Success|Failed)\s*$", re.M)
# The stages run the semops this test imports: the venv's editable install, or PYTHONPATH's.
SRC = str(Path(semops.__file__).resolve().parents[1])


NO_WORKERS = "Worker status: 0 active, 0 idle"


def queue_status(project: Path) -> dict[str, str]:
    """Task name -> status, from `dvc queue status`."""
    output = run(["dvc", "queue", "status"], project, PYTHONPATH=SRC).stdout
    return {name: status for _, name, status in TASK.findall(output)}


def run_queue(project: Path, jobs: int, values: str, experiment: str) -> dict[str, str]:
    """Queue one experiment per value of model.C (logged to MLflow experiment `experiment`),
    start `jobs` workers, wait for every task; the statuses of the new tasks."""
    before = set(queue_status(project))
    overrides = ["model=logreg", f"model.C={values}", f"tracking.experiment={experiment}"]
    run(["dvc", "exp", "run", "--queue", *(f"-S{o}" for o in overrides)], project, PYTHONPATH=SRC)
    start_workers(project, jobs)
    return finished(project, before)


def start_workers(project: Path, jobs: int, **env: str) -> None:
    """`dvc queue start -j jobs`, with `env` in the workers' environment."""
    # The workers outlive `dvc queue start` and hold on to its output: a pipe there (run's)
    # would keep this waiting until every worker has gone, however long an idle one lingers.
    with (project.parent / "queue-start.log").open("a") as out:
        subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)],
            cwd=project,
            env=clean_env(PYTHONPATH=SRC, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=True,
        )


def finished(project: Path, before: set[str], timeout: float = 600) -> dict[str, str]:
    """Task name -> status of the tasks not in `before`, once every one has ended."""
    deadline = time.monotonic() + timeout
    tasks: dict[str, str] = {}
    while time.monotonic() < deadline:
        tasks = {k: v for k, v in queue_status(project).items() if k not in before}
        if tasks and all(status in {"Success", "Failed"} for status in tasks.values()):
            # Idle workers would race the next tasks queued: one that shuts down as a task
            # arrives leaves it queued with no worker (DVC's own race). The next start gets
            # workers of its own.
            run(["dvc", "queue", "stop"], project, PYTHONPATH=SRC)
            while NO_WORKERS not in run(["dvc", "queue", "status"], project, PYTHONPATH=SRC).stdout:
                assert time.monotonic() < deadline, "the queue's workers did not stop"
                time.sleep(1)
            return tasks
        time.sleep(2)
    raise AssertionError(f"the queue did not finish: {tasks}\n{failure_logs(project, tasks)}")


def mlflow_runs(project: Path, experiment: str) -> list[str]:
    """The DVC experiment name of each run logged to `experiment`, every run complete."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    assert all(r.data.tags.get("semops.complete") == "true" for r in runs)
    return [r.data.tags["dvc_experiment"] for r in runs]


def failure_logs(project: Path, tasks: dict[str, str]) -> str:
    """The end of `dvc queue logs` of each task that did not succeed."""
    logs = []
    for name in [name for name, status in tasks.items() if status != "Success"]:
        log = run(["dvc", "queue", "logs", name], project, False, PYTHONPATH=SRC).stdout
        logs.append(f"{name}: {log[-3000:]}")
    return "\n".join(logs)


def test_concurrent_workers_log_one_run_per_experiment(project_copy: Path) -> None:
    mlruns = project_copy / "mlruns"
    (mlruns / "mlflow.db").unlink()  # a new store: the first track stages create its tables
    shutil.rmtree(mlruns / "artifacts", ignore_errors=True)
    try:
        # No C here equals conf's (1.0): the shared run cache must not hold results that other
        # tests expect to compute. Each batch logs to an MLflow experiment of its own: the
        # second creates one too, in the store the first created.
        for jobs, values, store in ((2, "0.01,10", "new"), (4, "2,3,4,5", "existing")):
            tasks = run_queue(project_copy, jobs, values, experiment=f"{store}-store")
            assert set(tasks.values()) == {"Success"}, failure_logs(project_copy, tasks)
            assert len(tasks) == jobs
            logged = Counter(mlflow_runs(project_copy, f"{store}-store"))
            assert logged == dict.fromkeys(tasks, 1), f"-j {jobs}, {store} store: {logged}"
        assert not [p for p in (mlruns / "pending").iterdir() if not p.name.startswith(".")]
    finally:
        run(["dvc", "queue", "stop"], project_copy, False, PYTHONPATH=SRC)


class RacedClient:
    """A server's client that another client beats to creating the experiment."""

    def __init__(self) -> None:
        self.lookups = 0

    def get_experiment_by_name(self, name: str) -> Any:
        self.lookups += 1
        return (
            None
            if self.lookups == 1
            else SimpleNamespace(experiment_id="7", lifecycle_stage="active")
        )

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

        raise MlflowException(f"Experiment(name={name}) already exists", RESOURCE_ALREADY_EXISTS)


def test_an_experiment_created_meanwhile_on_a_server_is_taken() -> None:
    client = RacedClient()
    assert experiment_id_for(client, "semops", "http://mlflow.invalid:5000") == "7"
    assert client.lookups == 2
