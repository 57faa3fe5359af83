"""Loading a saved model for prediction, whatever trained it: numpy for mlp and logreg,
scikit-learn's compiled tree predictor for gbdt; never torch, never unpickling."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from semops.errors import SemopsError
from semops.io import read_json
from semops.tabular.models import KINDS, META, WEIGHTS


class Classifier(Protocol):
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes), rows summing to 1."""
        ...


def predictor(kind: str) -> ModuleType:
    """The module that predicts with a saved `kind`: training's heavy imports stay out."""
    if kind == "mlp":
        from semops.tabular.models import mlp_predict

        return mlp_predict
    if kind == "logreg":
        from semops.tabular.models import linear

        return linear
    from semops.tabular.models import gbdt

    return gbdt


def load(directory: Path) -> tuple[Classifier, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    meta = read_json(directory / META)
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in KINDS:
        raise SemopsError(f"{directory / META}: unknown model kind {kind!r}")
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:  # a corrupt file raises SafetensorError
        raise SemopsError(f"{directory / WEIGHTS}: cannot load weights ({exc})") from exc
    classifier: Classifier = predictor(kind).from_tensors(meta, tensors)
    return classifier, meta
