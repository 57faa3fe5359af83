"""Mirror pipeline results to MLflow, faithfully and at most once.

A result is written as bundles (`bundle`: the tabular result, and the research result in a run
and experiment of its own) under mlruns/pending/<result id>/ in the main repository (`spool`),
then logged (`runlog`: the run; `mlmodel`: its MLflow Model; `registry`: the model's version and
the `champion` alias); a bundle is removed once MLflow has all of it. When MLflow cannot be
reached the bundles stay, the DVC results stand, and `semops mirror` logs every pending bundle
later. The result id is a hash of the result's content, so logging it twice (a re-run, a retried
mirror) never adds a second run nor a second model version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from semops import paths
from semops.errors import SemopsError
from semops.io import FileLockedError, locked, read_json
from semops.redaction import redact
from semops.tracking.bundle import BUNDLE, RESEARCH, RESULT_TAG, TABULAR, build_bundles
from semops.tracking.spool import pending_dir, spool

log = logging.getLogger(__name__)

# How long a process waits for another logging to the same sqlite store before spooling.
STORE_LOCK_TIMEOUT_S = 300.0


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI (the environment, or the project's .env that entry points load); else
    the sqlite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri or local_store()


def local_store() -> str:
    """The project's own sqlite store (what the track stage logs to without a server)."""
    return f"sqlite:///{paths.mlruns_dir() / 'mlflow.db'}"


def import_mlflow_client() -> None:
    configure_client_env()
    try:
        # Seconds of imports, done while the plots render.
        import mlflow.pyfunc
        import mlflow.tracking  # noqa: F401
    except ImportError as exc:
        raise SemopsError(
            f"the track stage needs MLflow ({exc}); install the project with its `mlops` "
            "extra: pip install -e '.[mlops]' (make setup does)"
        ) from exc

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not the store's table creation


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """The gist of a client error: MLflow's own messages quote whole request URLs and causes."""
    text = redact(f"{type(exc).__name__}: {exc}")
    gists = (
        "Connection refused",
        "Connection aborted",
        "timed out",
        "Name or service not known",
        "status code 5",
    )
    for gist in gists:
        if gist in text:
            return gist
    return text if len(text) <= limit else text[: limit - 1] + "…"


def configure_client_env() -> None:
    """MLflow client settings for this process, unless the environment sets them."""
    # Fail within seconds, not minutes of retries, when a tracking server is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # No progress bars in the stage's output (saving a model copies its artifacts with one).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class TrackingRejected(SemopsError):
    """MLflow was reached but refused the result (not a connectivity problem)."""


def log_bundle(directory: Path, uri: str, bundle: dict[str, Any] | None = None) -> tuple[str, bool]:
    """Log one spooled bundle (`bundle`: its content, where the caller has it): its run, and for
    a tabular result its MLflow Model's registry version; return (run id, whether the run is
    new). Removes the bundle once all of it is logged. Processes logging to one sqlite store
    (queue workers, `semops mirror`) take turns.

    Processes may deliver one bundle at once (queued experiments share their research result).
    A bundle that is gone once this process holds the store (or, on a server, gone part-way)
    was logged by another process, which removes it only once MLflow has all of it: the result
    is looked up by its id and reported as already logged. A result whose run another process
    is still logging is left to it (the bundle stays until that run is complete)."""
    configure_client_env()
    if bundle is None:
        bundle = read_json(directory / BUNDLE)
    exclusive = bool(sqlite_database(uri))
    with store_lock(uri):
        if not (directory / BUNDLE).exists():
            return _logged_by_another(directory, uri, bundle, exclusive)
        try:
            return _log_bundle(directory, uri, bundle, exclusive)
        except Exception:
            if (directory / BUNDLE).exists():
                raise
            return _logged_by_another(directory, uri, bundle, exclusive)


def sqlite_database(uri: str) -> str:
    """The file of a sqlite store URI; "" for a server or an in-memory database."""
    database = uri.removeprefix("sqlite:///").split("?")[0] if uri.startswith("sqlite:///") else ""
    return "" if database == ":memory:" else database


def store_lock(
    uri: str, timeout: float = STORE_LOCK_TIMEOUT_S
) -> contextlib.AbstractContextManager[None]:
    """A lock file beside a sqlite store, held while one process uses it: MLflow's first use
    creates the tables, which two processes at once break ("duplicate column name"), and looking
    a result up then logging it becomes one step. None for a server: it orders its own writes.

    Waits (saying so) up to `timeout` seconds, then FileLockedError, which counts as the store
    being out of reach: the result stays spooled for `semops mirror`."""
    database = sqlite_database(uri)
    if not database:
        return contextlib.nullcontext()
    message = f"track: waiting for process {{holder}}, which is logging to {database}"
    return locked(f"{database}.lock", wait_message=message, timeout=timeout)


def _log_bundle(
    directory: Path, uri: str, bundle: dict[str, Any], exclusive: bool
) -> tuple[str, bool]:
    from mlflow.tracking import MlflowClient

    from semops.tracking.mlmodel import run_model_id
    from semops.tracking.registry import register
    from semops.tracking.runlog import is_complete, log_run

    client = MlflowClient(tracking_uri=uri)
    with process_tracking_uri(uri):
        experiment_id = experiment_id_for(client, bundle["experiment"], uri)
        run_id, new = log_run(client, experiment_id, directory, bundle, exclusive)
        if not new and not is_complete(client.get_run(run_id)):
            log.info(
                "track: result %s is being logged by another process as run %s; its bundle "
                "stays in %s until that run is complete",
                directory.name,
                run_id,
                directory,
            )
            return run_id, False
        if bundle.get("kind", TABULAR) == TABULAR and bundle.get("model"):
            model_id = run_model_id(client, run_id)
            if model_id is not None:  # None: a run logged before runs had MLflow Models
                version, added = register(client, bundle, run_id, model_id)
                name, new_version = bundle["model"]["registered_name"], " (new)" if added else ""
                log.info("track: its model is %s version %s%s", name, version, new_version)
    remove_bundle(directory)
    return run_id, new


def remove_bundle(directory: Path) -> None:
    """Remove a logged bundle; another process that logged it too may be removing it as well."""

    def gone_already(function: Any, path: str, error: Any) -> None:
        if not issubclass(error[0], FileNotFoundError):
            raise error[1]

    shutil.rmtree(directory, onerror=gone_already)


def _logged_by_another(
    directory: Path, uri: str, bundle: dict[str, Any], exclusive: bool
) -> tuple[str, bool]:
    """(run id, False) of a result whose bundle another process logged and removed."""
    from mlflow.tracking import MlflowClient

    from semops.tracking.runlog import (
        abandoned,
        is_complete,
        keeper,
        note_experiment,
        now_ms,
        result_runs,
    )

    client = MlflowClient(tracking_uri=uri)
    result_id = bundle["tags"][RESULT_TAG]
    experiment = client.get_experiment_by_name(bundle["experiment"])
    found = [] if experiment is None else result_runs(client, experiment.experiment_id, result_id)
    moment = now_ms()
    standing = keeper(r for r in found if not abandoned(r, moment, exclusive))
    if standing is None:
        raise SemopsError(
            f"{directory} was removed by another process, yet MLflow at {redact(uri)} has no "
            f"run of result {result_id}: was it mirrored to another store?"
        )
    if is_complete(standing):
        note_experiment(client, standing, bundle["tags"])
    log.info("track: result %s was logged by another process", result_id)
    return standing.info.run_id, False


@contextlib.contextmanager
def process_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's own tracking URI for this process set to `uri` while a bundle is logged, then
    put back (the environment variable too). A sqlite registry looks a `models:/<model id>`
    version source up through it, not through the client's URI (MLflow's TODO): without this
    it would look in (and create) ./mlflow.db."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


def experiment_id_for(client: Any, name: str, uri: str, looked_again: bool = False) -> str:
    """The experiment's id, creating it (artifacts beside the sqlite store) where it is new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise TrackingRejected(
            f"MLflow experiment {name!r} is deleted: restore it (`mlflow "
            f"experiments restore --experiment-id {experiment.experiment_id}`) or set "
            "tracking.experiment to another name"
        )
    if experiment is not None:
        return str(experiment.experiment_id)
    from mlflow.exceptions import MlflowException

    # Beside the database: mlruns/artifacts for the project's own, a copy's target keeps its own.
    database = sqlite_database(uri)
    location = (Path(database).resolve().parent / "artifacts").as_uri() if database else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or looked_again:
            raise
        # Created by another client since the look-up above (a server has many): take it.
        return experiment_id_for(client, name, uri, looked_again=True)


def is_unreachable(exc: BaseException) -> bool:
    """Whether an MLflow client error means the store could not be reached at all: no
    connection, a timeout, a server gone mid-request (killed: the connection closed with no
    reply), or a gateway saying the server behind it is down (502, 503, 504).
    A server that answers with an error (500, 4xx) was reached: its refusal is not hidden. A
    sqlite store another process kept locked past STORE_LOCK_TIMEOUT_S counts as out of reach."""
    out_of_reach = (ConnectionError, TimeoutError, FileLockedError)
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, out_of_reach) or type(current).__name__ in {
            "NewConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectTimeout",
            "ReadTimeout",
            "ProtocolError",  # urllib3: the connection aborted or broken mid-request
        }:
            return True
        current = current.__cause__ or current.__context__
    # MLflow re-raises client errors as MlflowException with the cause only in the message.
    signs = (
        "NewConnectionError",
        "Connection refused",
        "Connection aborted",
        "Connection broken",
        "ConnectTimeout",
        "Read timed out",
        "Name or service not known",
        "too many 502 error responses",
        "too many 503 error responses",
        "too many 504 error responses",
    )
    return any(sign in str(exc) for sign in signs)


def mirror_pending(uri: str | None = None) -> tuple[list[tuple[str, str, bool, str]], list[str]]:
    """Log every pending bundle, each on its own: one that fails does not stop the others.

    Returns (result id, run id, new, the store it was meant for) for each logged bundle, and a
    message for each failure.
    """
    uri = uri or tracking_uri()
    done, failed = [], []
    root = pending_dir()
    for directory in sorted(root.iterdir()) if root.exists() else []:
        if directory.name.startswith(".") or not (directory / BUNDLE).exists():
            continue
        try:
            bundle = read_json(directory / BUNDLE)
        except SemopsError as exc:
            if directory.exists():
                failed.append(f"{directory.name}: {short_reason(exc)}")
            continue  # else logged and removed by another process meanwhile
        try:
            meant_for = str(bundle.get("tracking_uri", ""))
            run_id, new = log_bundle(directory, uri, bundle)
        except Exception as exc:  # reported per bundle; the bundle stays pending
            failed.append(f"{directory.name}: {short_reason(exc)}")
            continue
        done.append((directory.name, run_id, new, meant_for))
    return done, failed


def track_workspace(
    experiment: str, delivered: Collection[str] = (), uri: str | None = None
) -> tuple[dict[str, str], str]:
    """Spool the current result's bundles and try to log them to `uri` (else `tracking_uri()`).

    A research bundle whose result id is in `delivered` (the track stage's previous result,
    logged or pending since, for this very store) is not spooled again. MLflow out of reach
    never fails the pipeline: the bundles wait in mlruns/pending/. A store that is reached but
    refuses a result is an error. Returns the result id of each kind of bundle and a message.
    """
    uri = uri or tracking_uri()
    ids: dict[str, str] = {}
    spooled = []
    for bundle in build_bundles(experiment, uri):
        ids[bundle["kind"]] = bundle["tags"][RESULT_TAG]
        if bundle["kind"] == RESEARCH and ids[RESEARCH] in delivered:
            continue
        rendering = import_mlflow_client if bundle["kind"] == TABULAR else lambda: None
        spooled.append((bundle, spool(bundle, while_rendering=rendering)))
    return ids, deliver(spooled, uri)


def deliver(spooled: list[tuple[dict[str, Any], Path]], uri: str) -> str:
    """Log each spooled bundle; once the store proves out of reach, the rest wait with it."""
    lines: list[str] = []
    kept: list[Path] = []
    reason = ""
    for bundle, directory in spooled:
        kind = bundle.get("kind", TABULAR)
        if kept:
            kept.append(directory)
            continue
        try:
            run_id, new = log_bundle(directory, uri, bundle)
        except Exception as exc:  # the client raises many types; sorted out by out_of_reach
            reason, kept = out_of_reach(exc, uri, directory), [directory]
            continue
        state = "logged as new run" if new else "already logged as run"
        lines.append(f"track: {kind} result {directory.name} {state} {run_id} ({redact(uri)})")
    if kept:
        lines += [
            f"track: MLflow at {redact(uri)} could not be reached ({reason}).",
            f"track: the DVC results stand; kept in {', '.join(map(str, kept))}.",
            "track: run `make mirror` (or `semops mirror`) to mirror it once MLflow is back.",
        ]
    return "\n".join(lines)


def out_of_reach(exc: Exception, uri: str, directory: Path) -> str:
    """The gist of why MLflow did not take a bundle when it was out of reach; a store that was
    reached and refused it is an error (TrackingRejected)."""
    reason = short_reason(exc)
    if not is_unreachable(exc):
        raise TrackingRejected(
            f"MLflow at {redact(uri)} refused result {directory.name} ({reason}); it is kept "
            f"in {directory}: fix the cause, then run `make mirror`"
        ) from exc
    return reason
