"""Mirror pipeline results to MLflow, faithfully and at most once.

A result (params, DVC metrics, per-epoch history, plots, model, tags) is first written as a
bundle under mlruns/pending/<result id>/ in the main repository, then logged; the bundle is
removed once MLflow has it. When MLflow cannot be reached the bundle stays, the DVC results
stand, and `semops mirror` logs every pending bundle later. The result id is a hash of the
result's content, so logging it twice (a re-run, a retried mirror) never adds a second run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semops import paths
from semops.config.schema import flatten, read_params
from semops.errors import SemopsError
from semops.io import FileLockedError, dump_json, locked, read_csv_rows, read_json, sha256_file
from semops.redaction import redact

RESULT_TAG = "semops.result_id"
METRIC_FILES = (
    paths.EVAL_METRICS,
    paths.TRAIN_METRICS,
    paths.CLEAN_METRICS,
    paths.RESEARCH_METRICS,
)
PLOT_FILES = (
    paths.ROC_PLOT,
    paths.PR_PLOT,
    paths.CALIBRATION_PLOT,
    paths.CONFUSION_PLOT,
    paths.TRAIN_HISTORY,
)
BUNDLE = "bundle.json"
# How long a process waits for another logging to the same sqlite store before spooling.
STORE_LOCK_TIMEOUT_S = 300.0


def pending_dir() -> Path:
    return paths.mlruns_dir() / "pending"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI (the environment, or the project's .env that entry points load); else
    the sqlite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{paths.mlruns_dir() / 'mlflow.db'}"


def mlflow_key(key: str) -> str:
    """MLflow accepts letters, digits and `_-. /:` in names; anything else becomes `_`."""
    return re.sub(r"[^\w\-. /:]", "_", key)


def metric_key_prefix(path: Path) -> str:
    """Metrics of data/reports/metrics.json keep their own names; other files are prefixed."""
    return "" if path == paths.EVAL_METRICS else f"{path.stem}."


def collect_metrics() -> dict[str, float]:
    metrics: dict[str, float] = {}
    for path in METRIC_FILES:
        for key, value in flatten(read_json(path), metric_key_prefix(path)).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[key] = value
    return metrics


def read_history(path: Path = paths.TRAIN_HISTORY) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in read_csv_rows(path)]


def git_commit() -> str:
    if rev := os.environ.get("DVC_EXP_BASELINE_REV"):
        return rev
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def git_dirty() -> bool:
    """Whether code or config differs from the commit (the commit alone does not describe the
    run); dvc.lock and params.yaml are left out: DVC rewrites them as the pipeline runs."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return False  # an experiment: its params and outputs are committed to its own ref
    result = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "stages", "conf", "dvc.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(result.stdout.strip())


def build_bundle(experiment: str) -> dict[str, Any]:
    raw_params = read_params()
    params = {mlflow_key(k): _param_value(v) for k, v in flatten(raw_params).items()}
    metrics = {mlflow_key(k): v for k, v in collect_metrics().items()}
    history = read_history()
    data_name = raw_params["data"]["name"]
    data_hash = read_json(paths.raw_manifest(data_name))["sha256"]
    model_hash = sha256_file(paths.MODEL_DIR / "model.safetensors")
    model_meta = read_json(paths.MODEL_DIR / "model.json")
    content = dump_json(
        {
            "params": params,
            "metrics": metrics,
            "history": history,
            "data": data_hash,
            "model": model_hash,
        }
    )
    result_id = hashlib.sha256(content.encode()).hexdigest()[:16]
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    tags = {
        RESULT_TAG: result_id,
        "git_commit": git_commit(),
        "git_dirty": str(git_dirty()).lower(),
        "dvc_experiment": exp_name or "workspace",
        "data_sha256": data_hash,
        "model_sha256": model_hash,
        "model": str(params.get("model.name", "")),
        "dataset": data_name,
        "device": str(model_meta.get("device", "")),
    }
    return {
        "experiment": experiment,
        "tracking_uri": redact(tracking_uri()),
        "run_name": exp_name or f"workspace-{result_id[:8]}",
        "params": params,
        "metrics": metrics,
        "history": history,
        "tags": tags,
    }


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def spool(bundle: dict[str, Any], while_rendering: Callable[[], object] = lambda: None) -> Path:
    """Write the bundle, copies of its files and PNG renderings of its plots under pending/
    (atomically, by rename). The plots are drawn by a subprocess, so `while_rendering` runs at
    the same time on the other core (matplotlib's import alone takes over a second)."""
    target = pending_dir() / bundle["tags"][RESULT_TAG]
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".spool-", dir=target.parent))
    try:
        (staging / BUNDLE).write_text(dump_json(bundle))
        for path in PLOT_FILES:
            shutil.copy2(path, staging / path.name)
        shutil.copytree(paths.MODEL_DIR, staging / "model")
        renderer = subprocess.Popen(
            [sys.executable, "-m", "semops.tracking.plots", str(staging), str(staging / "plots")],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while_rendering()
        finally:
            _, errors = renderer.communicate()
        if renderer.returncode != 0:
            raise SemopsError(f"rendering the plots failed: {errors.strip()}")
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _import_mlflow_client() -> None:
    _configure_client_env()
    try:
        import mlflow.tracking  # noqa: F401 (seconds of imports, done while the plots render)
    except ImportError as exc:
        raise SemopsError(
            f"the track stage needs MLflow ({exc}); install the project with its `mlops` "
            "extra: pip install -e '.[mlops]' (make setup does)"
        ) from exc

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not the store's table creation


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """The gist of a client error: MLflow's own messages quote whole request URLs and causes."""
    text = redact(f"{type(exc).__name__}: {exc}")
    for gist in ("Connection refused", "timed out", "Name or service not known", "status code 5"):
        if gist in text:
            return gist
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _configure_client_env() -> None:
    # Fail within seconds, not minutes of retries, when a tracking server is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


COMPLETE_TAG = "semops.complete"


class TrackingRejected(SemopsError):
    """MLflow was reached but refused the result (not a connectivity problem)."""


def log_bundle(directory: Path, uri: str) -> tuple[str, bool]:
    """Log one spooled bundle; return (run id, whether it was new). Removes the bundle after.

    The run carries the result id from its creation and is marked complete last: a run cut off
    part-way is deleted and logged again by the next attempt, never taken for the result.
    Processes logging to one sqlite store (queue workers, `semops mirror`) take turns.
    """
    _configure_client_env()
    with store_lock(uri):
        return _log_bundle(directory, uri)


def store_lock(
    uri: str, timeout: float = STORE_LOCK_TIMEOUT_S
) -> contextlib.AbstractContextManager[None]:
    """A lock file beside a sqlite store, held while one process uses it: MLflow's first use
    creates the tables, which two processes at once break ("duplicate column name"), and looking
    a result up then logging it becomes one step. None for a server: it orders its own writes.

    Waits (saying so) up to `timeout` seconds, then FileLockedError, which counts as the store
    being out of reach: the result stays spooled for `semops mirror`."""
    database = uri.removeprefix("sqlite:///").split("?")[0] if uri.startswith("sqlite:///") else ""
    if database in {"", ":memory:"}:
        return contextlib.nullcontext()
    message = f"track: waiting for process {{holder}}, which is logging to {database}"
    return locked(f"{database}.lock", wait_message=message, timeout=timeout)


def _log_bundle(directory: Path, uri: str) -> tuple[str, bool]:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    bundle = read_json(directory / BUNDLE)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, bundle["experiment"], uri)
    tags = bundle["tags"]
    result_id = tags[RESULT_TAG]
    for run in client.search_runs(
        [experiment_id], filter_string=f"tags.`{RESULT_TAG}` = '{result_id}'"
    ):
        if run.data.tags.get(COMPLETE_TAG) == "true":
            name = tags["dvc_experiment"]
            if name != run.data.tags.get("dvc_experiment"):
                client.set_tag(run.info.run_id, f"dvc_experiment.{name}", "same result")
            shutil.rmtree(directory)
            return run.info.run_id, False
        client.delete_run(run.info.run_id)

    run = client.create_run(
        experiment_id, run_name=bundle["run_name"], tags={**tags, COMPLETE_TAG: "false"}
    )
    run_id = run.info.run_id
    timestamp = run.info.start_time
    metrics = [Metric(k, v, timestamp, 0) for k, v in bundle["metrics"].items()]
    for row in bundle["history"]:
        step = int(row["epoch"])
        metrics += [Metric(k, v, timestamp, step) for k, v in row.items() if k != "epoch"]
    params = [Param(k, v) for k, v in bundle["params"].items()]
    for start in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(
            run_id, metrics=metrics[start : start + 100], params=params[start : start + 100]
        )
    for name in sorted(os.listdir(directory)):
        if name.endswith(".csv"):
            client.log_artifact(run_id, str(directory / name), "plots/data")
    client.log_artifacts(run_id, str(directory / "plots"), "plots")
    client.log_artifacts(run_id, str(directory / "model"), "model")
    client.log_batch(run_id, tags=[RunTag(COMPLETE_TAG, "true")])
    client.set_terminated(run_id)
    shutil.rmtree(directory)
    return run_id, True


def _experiment_id(client: Any, name: str, uri: str, looked_again: bool = False) -> str:
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

    location = (paths.mlruns_dir() / "artifacts").as_uri() if uri.startswith("sqlite:") else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or looked_again:
            raise
        # Created by another client since the look-up above (a server has many): take it.
        return _experiment_id(client, name, uri, looked_again=True)


def is_unreachable(exc: BaseException) -> bool:
    """Whether an MLflow client error means the store could not be reached at all: no
    connection, a timeout, or a gateway saying the server behind it is down (502, 503, 504).
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
        }:
            return True
        current = current.__cause__ or current.__context__
    # MLflow re-raises client errors as MlflowException with the cause only in the message.
    signs = (
        "NewConnectionError",
        "Connection refused",
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
            meant_for = str(read_json(directory / BUNDLE).get("tracking_uri", ""))
            run_id, new = log_bundle(directory, uri)
        except Exception as exc:  # reported per bundle; the bundle stays pending
            failed.append(f"{directory.name}: {short_reason(exc)}")
            continue
        done.append((directory.name, run_id, new, meant_for))
    return done, failed


def track_workspace(experiment: str) -> tuple[str, str]:
    """Spool the current result and try to log it.

    MLflow out of reach never fails the pipeline: the result waits in mlruns/pending/. A store
    that is reached but refuses the result is an error. Returns the result id and a message.
    """
    bundle = build_bundle(experiment)
    result_id = bundle["tags"][RESULT_TAG]
    directory = spool(bundle, while_rendering=_import_mlflow_client)
    uri = tracking_uri()
    try:
        run_id, new = log_bundle(directory, uri)
    except Exception as exc:  # the client raises many types; sorted out just below
        reason = short_reason(exc)
        if not is_unreachable(exc):
            raise TrackingRejected(
                f"MLflow at {redact(uri)} refused result {result_id} ({reason}); it is kept "
                f"in {directory}: fix the cause, then run `make mirror`"
            ) from exc
        return result_id, (
            f"track: MLflow at {redact(uri)} could not be reached ({reason}).\n"
            f"track: the DVC results stand; the result is kept in {directory}.\n"
            "track: run `make mirror` (or `semops mirror`) to mirror it once MLflow is back."
        )
    state = "logged as new run" if new else "already logged as run"
    return result_id, f"track: result {result_id} {state} {run_id} ({redact(uri)})"
