"""What every trainer shares: its data, early stopping, its result and the per-epoch history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from semops.tabular.metrics import log_loss

# Called with each epoch's history row as soon as the epoch ends (progress, timestamps).
EpochReport = Callable[[dict[str, float]], None]


def ignore_epoch(row: dict[str, float]) -> None:
    """The EpochReport of a caller that does not watch."""


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
class TrainingData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int


def history_row(
    epoch: int, train_loss: float, val_proba: np.ndarray, val_labels: np.ndarray
) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": log_loss(val_proba, val_labels),
        "val_accuracy": float((val_proba.argmax(axis=1) == val_labels).mean()),
    }
