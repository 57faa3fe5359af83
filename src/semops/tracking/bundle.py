"""What one pipeline result is, as MLflow will see it: two bundles, each keyed by a hash of its
own content (its result id), so that logging one twice never adds a second run.

- The tabular bundle: the data, split, featurize, model, train, evaluate and tracking params, the
  tabular metrics, the per-epoch history (with each epoch's real end time where the train stage
  recorded it), the raw data set as an MLflow dataset, the tags, and what the MLflow Model and
  its registry version need (`describe`).
- The research bundle: the research params and reports/research.json, logged to their own
  run in the experiment `<tracking.experiment>-research`. A research change therefore adds no
  tabular run, and a tabular change no research run.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from semops import paths
from semops.config.schema import flatten, read_params
from semops.errors import SemopsError
from semops.io import dump_json, read_csv_rows, read_json, sha256_file
from semops.redaction import redact
from semops.tabular.models import FEATURIZER, META, WEIGHTS
from semops.tracking import describe

RESULT_TAG = "semops.result_id"
COMPLETE_TAG = "semops.complete"
BUNDLE = "bundle.json"
TABULAR, RESEARCH = "tabular", "research"
RESEARCH_SECTION = "research"
TABULAR_METRIC_FILES = (paths.EVAL_METRICS, paths.TRAIN_METRICS, paths.CLEAN_METRICS)
RESEARCH_EXPERIMENT_SUFFIX = "-research"
# What the MLflow UI shows as the run's source: the pipeline that produced it.
SOURCE_NAME = "dvc.yaml"


def mlflow_key(key: str) -> str:
    """MLflow accepts letters, digits and `_-. /:` in names; anything else becomes `_`."""
    return re.sub(r"[^\w\-. /:]", "_", key)


def metric_key_prefix(path: Path) -> str:
    """Metrics of reports/metrics.json keep their own names; other files are prefixed."""
    return "" if path == paths.EVAL_METRICS else f"{path.stem}."


def collect_metrics(files: tuple[Path, ...]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for path in files:
        for key, value in flatten(read_json(path), metric_key_prefix(path)).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[mlflow_key(key)] = value
    return metrics


def read_history(path: Path = paths.TRAIN_HISTORY) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in read_csv_rows(path)]


def epoch_times(model_hash: str, epochs: int) -> list[int] | None:
    """When each epoch ended (ms since the epoch), as the train stage recorded it for this very
    model; None where it did not (a model restored from DVC's run cache has no fresh times)."""
    try:
        times = read_json(paths.TRAIN_TIMES)
    except SemopsError:  # absent or unreadable: the run's start time stands in
        return None
    if not isinstance(times, dict) or times.get("model_sha256") != model_hash:
        return None
    ends = times.get("epoch_end_ms")
    if not isinstance(ends, list) or len(ends) != epochs:
        return None
    return [int(t) for t in ends]


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


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (getpass raises several types)
        return "unknown"


def standard_tags(commit: str) -> dict[str, str]:
    """The tags the MLflow UI reads for a run's Source and Created by."""
    tags = {"mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "PROJECT"}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return {**tags, "mlflow.user": user()}


def result_id(content: dict[str, Any]) -> str:
    return hashlib.sha256(dump_json(content).encode()).hexdigest()[:16]


def split_params(raw_params: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(tabular params, research params), flattened with MLflow-safe keys."""
    tabular = {k: v for k, v in raw_params.items() if k != RESEARCH_SECTION}
    research = {RESEARCH_SECTION: raw_params.get(RESEARCH_SECTION, {})}
    return _flat(tabular), _flat(research)


def _flat(tree: dict[str, Any]) -> dict[str, str]:
    return {mlflow_key(k): _param_value(v) for k, v in flatten(tree).items()}


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def common(experiment: str, uri: str, rid: str, commit: str) -> dict[str, Any]:
    """What both bundles carry: where they go, their run name and shared tags."""
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    return {
        "experiment": experiment,
        "tracking_uri": redact(uri),
        "run_name": exp_name or f"workspace-{rid[:8]}",
        "tags": {
            RESULT_TAG: rid,
            "git_commit": commit,
            "dvc_experiment": exp_name or "workspace",
            **standard_tags(commit),
        },
    }


def build_tabular(experiment: str, uri: str, raw_params: dict[str, Any]) -> dict[str, Any]:
    params, _ = split_params(raw_params)
    metrics = collect_metrics(TABULAR_METRIC_FILES)
    history = read_history()
    data_name = raw_params["data"]["name"]
    manifest = read_json(paths.raw_manifest(data_name))
    model_hash = sha256_file(paths.MODEL_DIR / WEIGHTS)
    content = {
        "params": params,
        "metrics": metrics,
        "history": history,
        "data": manifest["sha256"],
        "model": model_hash,
    }
    rid, commit = result_id(content), git_commit()
    bundle = common(experiment, uri, rid, commit)
    bundle["tags"].update(
        {
            "git_dirty": str(git_dirty()).lower(),
            "data_sha256": manifest["sha256"],
            "model_sha256": model_hash,
            "model": str(params.get("model.name", "")),
            "dataset": data_name,
            "device": str(read_json(paths.MODEL_DIR / META).get("device", "")),
        }
    )
    return {
        "kind": TABULAR,
        **bundle,
        "params": params,
        "metrics": metrics,
        "history": history,
        "epoch_times": epoch_times(model_hash, len(history)),
        "dataset": describe.dataset(manifest, _featurizer().get("input")),
        "model": _model_section(experiment, bundle, params, metrics),
    }


def _featurizer() -> dict[str, Any]:
    path = paths.MODEL_DIR / FEATURIZER
    spec = read_json(path) if path.exists() else {}
    return spec if isinstance(spec, dict) else {}


def _model_section(
    experiment: str, bundle: dict[str, Any], params: dict[str, str], metrics: dict[str, float]
) -> dict[str, Any] | None:
    """What the MLflow Model and its registry version need; None for a model folder without an
    input schema (trained before models scored raw rows): its run has no MLflow Model."""
    spec = _featurizer()
    if "input" not in spec:
        return None
    tags = bundle["tags"]
    version = describe.version(tags["dataset"], metrics, tags)
    version["tags"][RESULT_TAG] = tags[RESULT_TAG]
    return {
        "signature": describe.signature(spec["input"], spec["target"]["classes"]),
        "input_example": spec["input"].get("example", []),
        "pip_requirements": describe.pip_requirements(),
        "params": {k: v for k, v in params.items() if k.startswith(("model.", "train."))},
        "registered_name": describe.registered_model_name(experiment, tags["dataset"]),
        "version": version,
    }


def build_research(experiment: str, uri: str, raw_params: dict[str, Any]) -> dict[str, Any] | None:
    """The research bundle; None where the pipeline produced no research result."""
    if not paths.RESEARCH_METRICS.exists():
        return None
    _, params = split_params(raw_params)
    metrics = collect_metrics((paths.RESEARCH_METRICS,))
    rid = result_id({"kind": RESEARCH, "params": params, "metrics": metrics})
    bundle = common(experiment + RESEARCH_EXPERIMENT_SUFFIX, uri, rid, git_commit())
    return {"kind": RESEARCH, **bundle, "params": params, "metrics": metrics, "history": []}


def build_bundles(experiment: str, uri: str) -> list[dict[str, Any]]:
    """The tabular bundle, then the research one where there is a research result."""
    raw_params = read_params()
    research = build_research(experiment, uri, raw_params)
    tabular = build_tabular(experiment, uri, raw_params)
    return [tabular] if research is None else [tabular, research]
