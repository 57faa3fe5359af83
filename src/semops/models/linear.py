"""Logistic regression (scikit-learn for fitting; numpy alone for prediction)."""

from __future__ import annotations

from typing import Any

import numpy as np

from semops.models import (
    Trained,
    TrainingData,
    binary_to_two_columns,
    history_row,
    log_loss,
    softmax,
)
from semops.params import LogregConfig, TrainConfig


class LinearClassifier:
    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef = coef
        self.intercept = intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        logits = features.astype(np.float64) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            return binary_to_two_columns(1.0 / (1.0 + np.exp(-logits[:, 0])))
        return softmax(logits)


def fit_logreg(
    x: np.ndarray, y: np.ndarray, c: float = 1.0, max_iter: int = 1000
) -> LinearClassifier:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=max_iter)
    model.fit(x.astype(np.float64), y)
    return LinearClassifier(model.coef_.astype(np.float64), model.intercept_.astype(np.float64))


def fit(model: LogregConfig, train: TrainConfig, data: TrainingData) -> Trained:
    fitted = fit_logreg(data.x_train, data.y_train, model.C, model.max_iter)
    train_loss = log_loss(fitted.predict_proba(data.x_train), data.y_train)
    history = [history_row(1, train_loss, fitted.predict_proba(data.x_val), data.y_val)]
    return Trained({"coef": fitted.coef, "intercept": fitted.intercept}, history, best_epoch=1)


def from_tensors(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> LinearClassifier:
    return LinearClassifier(tensors["coef"], tensors["intercept"])
