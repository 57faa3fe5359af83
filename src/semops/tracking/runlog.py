"""Logging one spooled bundle as one MLflow run, at most once.

The run carries its result id from its creation and is marked complete last: a run cut off
part-way is deleted (with the model logged with it) and logged again by the next attempt, never
taken for the result. What the MLflow run page shows: params, metrics (per-epoch ones at the
time each epoch ended), the raw data set under "Datasets", the MLflow Model under "Logged
models", plots, and the standard source, commit and user tags.

Processes may log one result at once (queued experiments share their research result; on a
tracking server no lock makes them take turns). An incomplete run is therefore deleted only when
it is abandoned (`abandoned`), and of the runs of one result the one that stands is the first
started, complete or not (`keeper`): a process whose run is not it deletes its own, and one that
finds another process's run in progress leaves the result to it."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from semops.io import process_alive
from semops.tracking.bundle import COMPLETE_TAG, RESULT_TAG
from semops.tracking.mlmodel import delete_run_models, log_model
from semops.tracking.spool import CODE, MODEL, REPORT

BATCH = 100  # MLflow takes at most 100 params (and 1000 metrics) per log_batch
DATASET_CONTEXT = "raw"  # the raw table, which the pipeline splits into train, val and test
# The process logging a run, `<host>:<pid>`: on its own machine, whether it still runs.
LOGGER_TAG = "semops.logged_by"
# When that process began logging the run, where that is not the run's start time (a run copied
# from another store keeps the start time it had there).
LOGGING_SINCE_TAG = "semops.logging_since"
# An incomplete run of another machine (or without LOGGER_TAG) begun longer ago than this is
# taken for abandoned: logging one result takes seconds, a minute with a large model.
STALE_RUN_S = 3600.0


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_complete(run: Any) -> bool:
    return bool(run.data.tags.get(COMPLETE_TAG) == "true")


def abandoned(run: Any, now_ms: int, exclusive: bool) -> bool:
    """Whether an incomplete run is one no process is logging any more: the caller holds the
    sqlite store's lock (`exclusive`: every process logging there holds it while it logs), or
    the process named in its LOGGER_TAG is on this machine and has ended, or it began logging
    more than STALE_RUN_S ago. A complete run is never abandoned."""
    if is_complete(run):
        return False
    if exclusive:
        return True
    host, _, pid = str(run.data.tags.get(LOGGER_TAG, "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
        return True
    began = run.data.tags.get(LOGGING_SINCE_TAG) or run.info.start_time or 0
    return bool(now_ms - int(began) > STALE_RUN_S * 1000)


def keeper(runs: Iterable[Any]) -> Any | None:
    """The run that stands for a result: the first started (then the lowest run id)."""
    return min(runs, key=lambda r: (int(r.info.start_time or 0), r.info.run_id), default=None)


def result_runs(
    client: Any, experiment_id: str, result_id: str, tag: str = RESULT_TAG
) -> list[Any]:
    """The active runs of a result (keyed by `tag`: the result id, or another key a run is
    known by), complete or not."""
    return list(
        client.search_runs(
            [experiment_id], filter_string=f"tags.`{tag}` = '{result_id}'", max_results=1000
        )
    )


def standing_run(
    client: Any, experiment_id: str, result_id: str, exclusive: bool, tag: str = RESULT_TAG
) -> Any | None:
    """The run that stands for a result, complete or still being logged by another process,
    once its abandoned runs are deleted; None where none does."""
    from mlflow.exceptions import MlflowException

    found = result_runs(client, experiment_id, result_id, tag)
    moment = now_ms()
    for run in found:
        if abandoned(run, moment, exclusive):
            # Another process may be deleting it too; one left behind is never a keeper.
            with contextlib.suppress(MlflowException):
                discard(client, experiment_id, run.info.run_id)
    return keeper(r for r in found if not abandoned(r, moment, exclusive))


def now_ms() -> int:
    return int(time.time() * 1000)


def note_experiment(client: Any, run: Any, tags: dict[str, str]) -> None:
    """On a run logged before, the DVC experiment that produced the same result again."""
    name = tags.get("dvc_experiment", "")
    if name and name != run.data.tags.get("dvc_experiment"):
        client.set_tag(run.info.run_id, f"dvc_experiment.{name}", "same result")


def discard(client: Any, experiment_id: str, run_id: str) -> None:
    delete_run_models(client, experiment_id, run_id)
    client.delete_run(run_id)


@contextlib.contextmanager
def discarded_on_failure(client: Any, experiment_id: str, run_id: str) -> Iterator[None]:
    """A run whose logging fails is deleted, with its models; one cut off by the store going
    out of reach is left to the next attempt, which finds it abandoned."""
    try:
        yield
    except Exception as exc:
        from semops.tracking.mirror import is_unreachable

        if not is_unreachable(exc):
            with contextlib.suppress(Exception):
                discard(client, experiment_id, run_id)
        raise


def log_run(
    client: Any,
    experiment_id: str,
    directory: Path,
    bundle: dict[str, Any],
    exclusive: bool = False,
) -> tuple[str, bool]:
    """Log the bundle in `directory` to the experiment; return (run id, whether it is new).

    The run returned is the result's keeper: a run logged before (not new), or this new one, or
    another process's run still in progress (not new, and not complete yet: that process
    completes it). `exclusive`: the caller holds the store's lock (see `abandoned`)."""
    tags = bundle["tags"]
    result_id = tags[RESULT_TAG]
    standing = standing_run(client, experiment_id, result_id, exclusive)
    if standing is not None:
        if is_complete(standing):
            note_experiment(client, standing, tags)
        return standing.info.run_id, False

    run = client.create_run(
        experiment_id,
        run_name=bundle["run_name"],
        tags={**tags, COMPLETE_TAG: "false", LOGGER_TAG: this_process()},
    )
    run_id = run.info.run_id
    with discarded_on_failure(client, experiment_id, run_id):
        model_id = None
        if bundle.get("model") and (directory / CODE).is_dir():
            model_id = log_model(client, experiment_id, run_id, directory, bundle)
        log_values(client, run_id, bundle, run.info.start_time, model_id)
        if bundle.get("dataset"):
            log_dataset(client, run_id, bundle["dataset"])
        log_files(client, run_id, directory, with_model=model_id is None)
        from mlflow.entities import RunTag

        client.log_batch(run_id, tags=[RunTag(COMPLETE_TAG, "true")])
        client.set_terminated(run_id)
    return settle(client, experiment_id, result_id, run_id, exclusive)


def settle(
    client: Any,
    experiment_id: str,
    result_id: str,
    run_id: str,
    exclusive: bool = False,
    tag: str = RESULT_TAG,
) -> tuple[str, bool]:
    """One run per result, also when processes logged it at once to a server (which, unlike
    the sqlite store, no lock serialises): the keeper among the result's runs that are not
    abandoned, complete or still in progress, stands; `run_id`, if it is not the keeper,
    deletes itself, with its model. Every process chooses alike, whichever settles first."""
    moment = now_ms()
    found = [
        r
        for r in result_runs(client, experiment_id, result_id, tag)
        if r.info.run_id == run_id or not abandoned(r, moment, exclusive)
    ]
    standing = keeper(found)
    if standing is None or standing.info.run_id == run_id:
        return run_id, True
    discard(client, experiment_id, run_id)
    return standing.info.run_id, False


def log_values(
    client: Any, run_id: str, bundle: dict[str, Any], start_ms: int, model_id: str | None
) -> None:
    """Params, final metrics (linked to the run's model too) and the per-epoch history, each
    epoch at its recorded end time, else at the run's start."""
    from mlflow.entities import Metric, Param

    metrics = [Metric(k, v, start_ms, 0, model_id=model_id) for k, v in bundle["metrics"].items()]
    history = bundle.get("history") or []
    times = bundle.get("epoch_times") or [start_ms] * len(history)
    for row, timestamp in zip(history, times, strict=True):
        step = int(row["epoch"])
        metrics += [Metric(k, v, int(timestamp), step) for k, v in row.items() if k != "epoch"]
    log_batches(client, run_id, metrics, [Param(k, v) for k, v in bundle["params"].items()])


def log_batches(client: Any, run_id: str, metrics: list[Any], params: list[Any]) -> None:
    for start in range(0, max(len(metrics), len(params)), BATCH):
        client.log_batch(
            run_id, metrics=metrics[start : start + BATCH], params=params[start : start + BATCH]
        )


def inserted_meanwhile(exc: Any, constraint: str) -> bool:
    """Whether a server refused a write because another process inserted the same row at the
    same moment: its SQL store looks the row up, then inserts it, so two processes that both
    found none collide on `constraint` (PostgreSQL: "duplicate key value violates unique
    constraint"; sqlite: "UNIQUE constraint failed"). Seen with four queue workers."""
    text = str(exc)
    return constraint in text and (
        "duplicate key value" in text or "UNIQUE constraint failed" in text
    )


def log_dataset(client: Any, run_id: str, dataset: dict[str, Any]) -> None:
    """The raw table under the run page's "Datasets": its name, digest, source and schema.
    Queued experiments log one data set at once: where another process's insert of it won,
    logging again links the run to that one."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    entity = Dataset(
        name=dataset["name"],
        digest=dataset["digest"],
        source_type=dataset["source_type"],
        source=dataset["source"],
        schema=dataset.get("schema"),
        profile=dataset.get("profile"),
    )
    context = InputTag(key="mlflow.data.context", value=DATASET_CONTEXT)
    inputs = [DatasetInput(dataset=entity, tags=[context])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException as exc:
        if not inserted_meanwhile(exc, "dataset"):
            raise
        client.log_inputs(run_id, datasets=inputs)


def log_files(client: Any, run_id: str, directory: Path, with_model: bool) -> None:
    """The plots' data and renderings, the report (absent from bundles spooled before there
    was one); the model folder itself only for a run without an MLflow Model (a bundle spooled
    before models were logged as such)."""
    for name in sorted(os.listdir(directory)):
        if name.endswith(".csv"):
            client.log_artifact(run_id, str(directory / name), "plots/data")
    if (directory / "plots").is_dir():
        client.log_artifacts(run_id, str(directory / "plots"), "plots")
    if (directory / REPORT).is_file():
        client.log_artifact(run_id, str(directory / REPORT))
    if with_model and (directory / MODEL).is_dir():
        client.log_artifacts(run_id, str(directory / MODEL), MODEL)
