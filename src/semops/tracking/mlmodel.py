"""The MLflow Model of a result, logged linked to its run (the run page's "Logged models").

MLflow's "models from code": the model is `semops/tracking/pyfunc_model.py` run by MLflow at
load time, the trained model folder as its artifact and the semops package as its code, so it
loads without semops installed and nothing is unpickled. Signature, input example and pinned
requirements come from the bundle; MLflow infers nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from semops.tracking.bundle import RESULT_TAG
from semops.tracking.spool import CODE, MODEL

# The name, among the MLflow Model's artifacts, of the semops model folder.
MODEL_ARTIFACT = "semops_model"
# The logged model's name: `runs:/<run id>/model` resolves to it.
MODEL_NAME = "model"
MODEL_CODE = Path("tracking") / "pyfunc_model.py"


def model_signature(spec: dict[str, list[dict[str, str]]]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    def schema(columns: list[dict[str, str]]) -> Schema:
        return Schema([ColSpec(c["type"], c["name"]) for c in columns])

    return ModelSignature(inputs=schema(spec["inputs"]), outputs=schema(spec["outputs"]))


def input_example(section: dict[str, Any]) -> Any:
    """The example raw rows as a DataFrame, in the signature's column order; rows with a missing
    value in an integer column are left out (no `long` holds one). None when none is left."""
    import pandas as pd

    columns = [c["name"] for c in section["signature"]["inputs"]]
    integers = [c["name"] for c in section["signature"]["inputs"] if c["type"] == "long"]
    rows = [
        row for row in section["input_example"] if all(row.get(n) is not None for n in integers)
    ]
    if not rows:
        return None
    return pd.DataFrame([[row.get(n) for n in columns] for row in rows], columns=columns)


def log_model(
    client: Any, experiment_id: str, run_id: str, directory: Path, bundle: dict[str, Any]
) -> str:
    """Log the bundle's MLflow Model as a logged model of `run_id`; return its model id. It is
    marked READY last: a model cut off part-way stays PENDING with its (deleted) run."""
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    section = bundle["model"]
    logged = client.create_logged_model(
        experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        tags={RESULT_TAG: bundle["tags"][RESULT_TAG]},
        params=section["params"],
        model_type="semops-tabular",
    )
    code = directory / CODE / "semops"
    with tempfile.TemporaryDirectory(prefix="semops-mlmodel-") as scratch:
        local = Path(scratch) / MODEL_NAME
        mlflow.pyfunc.save_model(
            str(local),
            python_model=str(code / MODEL_CODE),
            artifacts={MODEL_ARTIFACT: str(directory / MODEL)},
            code_paths=[str(code)],
            signature=model_signature(section["signature"]),
            input_example=input_example(section),
            pip_requirements=section["pip_requirements"],
            mlflow_model=Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            ),
        )
        client.log_model_artifacts(logged.model_id, str(local))
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    client.finalize_logged_model(logged.model_id, "READY")
    return str(logged.model_id)


def run_model_id(client: Any, run_id: str) -> str | None:
    """The id of the MLflow Model logged with a run, if any."""
    outputs = client.get_run(run_id).outputs
    models = outputs.model_outputs if outputs is not None else []
    return str(models[0].model_id) if models else None


def delete_run_models(client: Any, experiment_id: str, run_id: str) -> None:
    """Delete the models logged with a run that was cut off part-way (it is logged again)."""
    for model in client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'"
    ):
        client.delete_logged_model(model.model_id)
