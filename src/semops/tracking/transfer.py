"""Copying one MLflow store's content into another, each thing at most once: `semops mirror --to
URI` moves the local sqlite store's runs, MLflow Models, registered models and aliases to a
team's server.

A run is copied whole: name, status, times, params, each metric's whole history (values, steps,
timestamps, links to the run's model), tags, datasets, artifacts, and its MLflow Models (their
artifacts, the MLmodel file naming the copy). As the track stage logs a result (`runlog`), the
copy carries its key from its creation and is marked complete last: a copy cut off part-way is
deleted and made again by the next one, never taken for the run. The key is the result id; a
run without one (logged by other means) is keyed by the run it was first copied from. A registry
version is keyed alike (`registry.add_version`).

The target may hold teammates' results: a result it holds already is not copied again, and
`champion` is chosen among all the target's versions (`registry.set_aliases`), not taken over
from the source. Another alias is copied where the target has none of that name."""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semops.errors import SemopsError
from semops.redaction import redact
from semops.tracking import registry
from semops.tracking.bundle import COMPLETE_TAG, RESULT_TAG
from semops.tracking.mirror import (
    experiment_id_for,
    import_mlflow_client,
    is_unreachable,
    process_tracking_uri,
    short_reason,
    sqlite_database,
    store_lock,
)
from semops.tracking.runlog import (
    LOGGER_TAG,
    LOGGING_SINCE_TAG,
    discarded_on_failure,
    is_complete,
    log_batches,
    now_ms,
    settle,
    standing_run,
    this_process,
)

log = logging.getLogger(__name__)

# The run, or a version's MLflow Model, a copy was made from (in the store it was first logged
# to, also after further copies): the key of what has no result id.
COPIED_TAG = "semops.copied_from"
# A copied run's tags that are its own: its name (passed as such), and who is copying it.
OWN_TAGS = frozenset({"mlflow.runName", COMPLETE_TAG, LOGGER_TAG, LOGGING_SINCE_TAG})
UNFINISHED = frozenset({"RUNNING", "SCHEDULED"})
MODELS_URI = "models:/"
MLMODEL = "MLmodel"


@dataclass
class Copied:
    """What a copy did: counts, each registered model's aliases in the target afterwards, what
    it left out (and why) and what failed."""

    runs: int = 0
    runs_there: int = 0
    versions: int = 0
    versions_there: int = 0
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def same_store(first: str, second: str) -> bool:
    """Whether two tracking URIs name one store (a sqlite file by any path to it)."""
    one, other = sqlite_database(first), sqlite_database(second)
    if one and other:
        return Path(one).resolve() == Path(other).resolve()
    return first.rstrip("/") == second.rstrip("/")


def copy_store(source: str, target: str) -> Copied:
    """Copy every active run of `source` (into the experiment of the same name), its MLflow
    Models, and every registered model with its versions and aliases into `target`, each at
    most once. What fails is reported in `failed` and the rest copied; a target out of reach
    stops the copy (SemopsError): running it again completes it."""
    if same_store(source, target):
        raise SemopsError(f"{redact(target)} is the store being copied: name another with --to")
    database = sqlite_database(source)
    if source.startswith("sqlite:") and not (database and Path(database).is_file()):
        raise SemopsError(f"no MLflow store to copy at {redact(source)}: {database} is no file")
    import_mlflow_client()
    copier = _Copier(source, target)
    with process_tracking_uri(target):  # a sqlite registry resolves models:/ sources there
        for experiment in _every(copier.src.search_experiments):
            runs = _every(
                copier.src.search_runs,
                [experiment.experiment_id],
                order_by=["attributes.start_time ASC"],
            )
            for run in runs:
                where = f"run {run.info.run_id} ({experiment.name})"
                copier.guarded(where, functools.partial(copier.run, run, experiment.name))
        for model in _every(copier.src.search_registered_models):
            action = functools.partial(copier.registered_model, model)
            copier.guarded(f"registered model {model.name}", action)
    return copier.copied


def _every(search: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
    """Every item of a paged MLflow search."""
    token = None
    while True:
        page = search(*args, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


class _Copier:
    """One copy: the two stores and what is known of the target (source id -> target id)."""

    def __init__(self, source: str, target: str) -> None:
        from mlflow.tracking import MlflowClient

        self.source, self.target = source, target
        # Registry URIs named too: MLFLOW_REGISTRY_URI must not send both to one registry.
        self.src = MlflowClient(tracking_uri=source, registry_uri=source)
        self.dst = MlflowClient(tracking_uri=target, registry_uri=target)
        self.exclusive = bool(sqlite_database(target))  # every writer holds its lock
        self.copied = Copied()
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, str] = {}
        self.models: dict[str, str] = {}

    def guarded(self, what: str, action: Callable[[], object]) -> None:
        """Do one part of the copy, holding a sqlite target's lock; one that fails is reported
        and the copy goes on, unless the target is out of reach."""
        try:
            with store_lock(self.target):
                action()
        except Exception as exc:  # the client raises many types; reported per part
            if is_unreachable(exc):
                raise SemopsError(
                    f"MLflow at {redact(self.target)} could not be reached "
                    f"({short_reason(exc)}): what was copied stands, run the copy again"
                ) from exc
            self.copied.failed.append(f"{what}: {short_reason(exc)}")

    def experiment_id(self, name: str) -> str:
        if name not in self.experiments:
            self.experiments[name] = experiment_id_for(self.dst, name, self.target)
        return self.experiments[name]

    def run(self, run: Any, experiment: str) -> None:
        """Copy a run unless the target holds it complete; note where it is in the target."""
        tags, info = run.data.tags, run.info
        if (RESULT_TAG in tags and not is_complete(run)) or info.status in UNFINISHED:
            self.copied.skipped.append(
                f"run {info.run_id} ({experiment}): not finished (being logged, or cut off)"
            )
            return
        origin = tags.get(COPIED_TAG, info.run_id)
        tag, key = (RESULT_TAG, tags[RESULT_TAG]) if RESULT_TAG in tags else (COPIED_TAG, origin)
        experiment_id = self.experiment_id(experiment)
        standing = standing_run(self.dst, experiment_id, key, self.exclusive, tag)
        if standing is not None and not is_complete(standing):
            self.copied.skipped.append(
                f"run {info.run_id} ({experiment}): another process is logging it there as "
                f"run {standing.info.run_id}"
            )
            return
        if standing is None:
            written = self.write_run(run, experiment_id, origin)
            run_id, new = settle(self.dst, experiment_id, key, written, self.exclusive, tag)
        else:
            run_id, new = standing.info.run_id, False
        self.copied.runs += new
        self.copied.runs_there += not new
        self.runs[info.run_id] = run_id
        there = {m.name: m.model_id for m in _models(self.dst, experiment_id, run_id)}
        for model in _models(self.src, info.experiment_id, info.run_id):
            if model.name in there:
                self.models[model.model_id] = there[model.name]
        state = "copied as" if new else "already there as"
        log.info("mirror: run %s (%s) %s %s", info.run_id, experiment, state, run_id)

    def write_run(self, run: Any, experiment_id: str, origin: str) -> str:
        """A new run in the target holding all of `run`, marked complete last."""
        from mlflow.entities import RunTag

        info = run.info
        own = {
            COPIED_TAG: origin,
            COMPLETE_TAG: "false",
            LOGGER_TAG: this_process(),
            LOGGING_SINCE_TAG: str(now_ms()),
        }
        tags = {k: v for k, v in run.data.tags.items() if k not in OWN_TAGS}
        created = self.dst.create_run(
            experiment_id, start_time=info.start_time, tags={**tags, **own}, run_name=info.run_name
        )
        run_id = str(created.info.run_id)
        with discarded_on_failure(self.dst, experiment_id, run_id):
            linked = self.write_models(run, experiment_id, run_id)
            self.write_values(run, run_id, linked)
            if run.inputs is not None and run.inputs.dataset_inputs:
                self.dst.log_inputs(run_id, datasets=run.inputs.dataset_inputs)
            if self.src.list_artifacts(info.run_id):
                with tempfile.TemporaryDirectory(prefix="semops-copy-") as scratch:
                    local = self.src.download_artifacts(info.run_id, "", scratch)
                    self.dst.log_artifacts(run_id, local)
            self.dst.set_terminated(run_id, status=info.status, end_time=info.end_time)
            self.dst.log_batch(run_id, tags=[RunTag(COMPLETE_TAG, "true")])
        return run_id

    def write_models(self, run: Any, experiment_id: str, run_id: str) -> dict[tuple[Any, ...], Any]:
        """Copy the run's MLflow Models to `run_id`; return the metrics linked to one, as the
        copy's model has them, by (key, step, timestamp, value)."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

        outputs = run.outputs.model_outputs if run.outputs is not None else []
        steps = {output.model_id: output.step for output in outputs}
        linked = {}
        for model in _models(self.src, run.info.experiment_id, run.info.run_id):
            logged = self.dst.create_logged_model(
                experiment_id,
                name=model.name,
                source_run_id=run_id,
                tags=model.tags,
                params=model.params,
                model_type=model.model_type,
            )
            self.write_model_artifacts(model, logged, run_id)
            if model.model_id in steps:
                output = LoggedModelOutput(logged.model_id, step=steps[model.model_id])
                self.dst.log_outputs(run_id, [output])
            self.dst.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            for m in model.metrics or []:
                linked[(m.key, m.step, m.timestamp, m.value)] = Metric(
                    m.key,
                    m.value,
                    m.timestamp,
                    m.step,
                    model_id=logged.model_id,
                    dataset_name=m.dataset_name,
                    dataset_digest=m.dataset_digest,
                )
        return linked

    def write_model_artifacts(self, model: Any, logged: Any, run_id: str) -> None:
        import mlflow.artifacts

        with tempfile.TemporaryDirectory(prefix="semops-copy-") as scratch:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model.artifact_location, dst_path=scratch, tracking_uri=self.source
            )
            _repoint(Path(local), model.model_id, logged, run_id)
            self.dst.log_model_artifacts(logged.model_id, local)

    def write_values(self, run: Any, run_id: str, linked: dict[tuple[Any, ...], Any]) -> None:
        """Params, and each metric's whole history (linked to the copied model where the
        source's was)."""
        from mlflow.entities import Metric, Param

        metrics = []
        for key in run.data.metrics:
            for point in self.src.get_metric_history(run.info.run_id, key):
                same = (point.key, point.step, point.timestamp, point.value)
                copy = Metric(point.key, point.value, point.timestamp, point.step)
                metrics.append(linked.get(same, copy))
        params = [Param(k, v) for k, v in run.data.params.items()]
        log_batches(self.dst, run_id, metrics, params)

    def registered_model(self, model: Any) -> None:
        """The registered model, each of its versions whose MLflow Model the target holds, and
        its aliases: champion chosen among all the target's versions, others copied where the
        target has none of that name."""
        name = model.name
        if not registry.ensure_registered_model(self.dst, name, model.description, model.tags):
            have = self.dst.get_registered_model(name).tags
            for key, value in (model.tags or {}).items():
                if key not in have:
                    self.dst.set_registered_model_tag(name, key, value)
        numbers = {}  # source version -> target version
        for version in sorted(registry.versions(self.src, name), key=lambda v: int(v.version)):
            if (number := self.version(name, version)) is not None:
                numbers[str(version.version)] = number
        registry.set_aliases(self.dst, name)
        current = self.dst.get_registered_model(name).aliases or {}
        for alias, number in (model.aliases or {}).items():
            if alias not in current and str(number) in numbers:
                self.dst.set_registered_model_alias(name, alias, numbers[str(number)])
        aliases = self.dst.get_registered_model(name).aliases or {}
        self.copied.aliases[name] = {alias: str(number) for alias, number in aliases.items()}

    def version(self, name: str, version: Any) -> str | None:
        """The target's version of a source version (added where it has none); None where the
        target does not hold its MLflow Model."""
        source = str(version.source)
        model_id = self.models.get(source.removeprefix(MODELS_URI), "")
        if not source.startswith(MODELS_URI) or not model_id:
            self.copied.skipped.append(
                f"{name} version {version.version}: its model ({source}) was not copied"
            )
            return None
        tags = {COPIED_TAG: source.removeprefix(MODELS_URI), **version.tags}
        key = RESULT_TAG if RESULT_TAG in tags else COPIED_TAG
        run_id = self.runs.get(version.run_id) if version.run_id else None
        description = version.description or ""
        number, new = registry.add_version(self.dst, name, model_id, run_id, tags, description, key)
        self.copied.versions += new
        self.copied.versions_there += not new
        return number


def _models(client: Any, experiment_id: str, run_id: str) -> list[Any]:
    """The run's MLflow Models that are complete (READY)."""
    from mlflow.entities import LoggedModelStatus

    found = _every(
        client.search_logged_models, [experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    return [model for model in found if model.status == LoggedModelStatus.READY]


def _repoint(folder: Path, source_id: str, logged: Any, run_id: str) -> None:
    """The MLmodel file names its model, run and artifact location: the copy's."""
    from mlflow.models import Model

    path = folder / MLMODEL
    if not path.is_file():
        return
    model = Model.load(str(path))
    if model.model_uuid == source_id:  # semops's MLflow Models use the model id as uuid
        model.model_uuid = logged.model_id
    model.model_id, model.run_id = logged.model_id, run_id
    model.artifact_path = logged.artifact_location
    model.save(str(path))
