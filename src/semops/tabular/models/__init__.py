"""Models behind one interface: fit on (train, validation), predict class probabilities, save to
and load from a directory of safetensors + JSON (nothing is unpickled on load).

Each kind lives in its own module, imported only when used: torch to train `mlp`, scikit-learn
to fit `gbdt`; `logreg` is numpy throughout, and loading and predicting needs numpy alone.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from semops.config.schema import ModelConfig, TrainConfig
from semops.errors import SemopsError
from semops.io import atomic_dir, dump_json, read_json

WEIGHTS = "model.safetensors"
META = "model.json"
# Training and prediction live apart where training needs a heavy import the predictor does not.
_TRAINERS = {
    "mlp": "semops.tabular.models.mlp",
    "logreg": "semops.tabular.models.linear",
    "gbdt": "semops.tabular.models.gbdt",
}
_PREDICTORS = {
    "mlp": "semops.tabular.models.mlp_predict",
    "logreg": "semops.tabular.models.linear",
    "gbdt": "semops.tabular.models.gbdt",
}


class Classifier(Protocol):
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes), rows summing to 1."""
        ...


class EarlyStopper:
    """Tracks the best validation loss; says stop after `patience` epochs without improvement."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = float("inf")
        self.best_epoch = 0
        self.stale = 0

    def improved(self, loss: float, epoch: int) -> bool:
        if loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.stale = loss, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience


@dataclass(frozen=True)
class Trained:
    """A model module's `fit` result: arrays to save, per-epoch history, the epoch kept."""

    tensors: dict[str, np.ndarray]
    history: list[dict[str, float]]
    best_epoch: int
    device: str = "cpu"


@dataclass(frozen=True)
class Fitted:
    """A trained model as arrays (what is saved) plus the per-epoch history it produced."""

    kind: str
    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    history: list[dict[str, float]]
    best_epoch: int
    n_features: int
    n_classes: int
    device: str


@dataclass(frozen=True)
class TrainingData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int


def fit(model: ModelConfig, train: TrainConfig, data: TrainingData) -> Fitted:
    module = importlib.import_module(_TRAINERS[model.name])
    trained: Trained = module.fit(model, train, data)
    if not all(math.isfinite(v) for row in trained.history for v in row.values()):
        raise SemopsError(
            f"training diverged (a loss is not finite); lower train.lr (now {train.lr:g}) "
            "or check the features"
        )
    return Fitted(
        model.name,
        asdict(model),
        trained.tensors,
        trained.history,
        trained.best_epoch,
        data.x_train.shape[1],
        data.n_classes,
        trained.device,
    )


def save(fitted: Fitted, directory: Path, extra: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    meta = {
        "kind": fitted.kind,
        "config": fitted.config,
        "n_features": fitted.n_features,
        "n_classes": fitted.n_classes,
        "device": fitted.device,
        **extra,
    }
    with atomic_dir(directory) as tmp:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in fitted.tensors.items()}, str(tmp / WEIGHTS)
        )
        (tmp / META).write_text(dump_json(meta))


def load(directory: Path) -> tuple[Classifier, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    meta = read_json(directory / META)
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if not isinstance(kind, str) or kind not in _PREDICTORS:
        raise SemopsError(f"{directory / META}: unknown model kind {kind!r}")
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:  # a corrupt file raises SafetensorError
        raise SemopsError(f"{directory / WEIGHTS}: cannot load weights ({exc})") from exc
    module = importlib.import_module(_PREDICTORS[kind])
    classifier: Classifier = module.from_tensors(meta, tensors)
    return classifier, meta


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def scores_to_proba(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from raw scores: one column is a binary logit, more are softmaxed."""
    if scores.shape[1] == 1:
        positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.column_stack([1.0 - positive, positive])
    return softmax(scores)


def history_row(
    epoch: int, train_loss: float, val_proba: np.ndarray, val_labels: np.ndarray
) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": log_loss(val_proba, val_labels),
        "val_accuracy": float((val_proba.argmax(axis=1) == val_labels).mean()),
    }


def log_loss(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood, probabilities clipped to [eps, 1 - eps] like scikit-learn."""
    eps = float(np.finfo(np.float64).eps)
    picked = np.clip(proba[np.arange(len(labels)), labels], eps, 1 - eps)
    return float(-np.log(picked).mean())
