"""L2-regularised logistic regression in numpy: scikit-learn's objective (penalty 0.5 * |W|^2,
intercept unpenalised, C times the summed log loss; multinomial for more than two classes)
solved exactly by Newton's method, so neither the `logreg` model nor the evaluate stage's
baseline pays for importing scikit-learn and scipy."""

from __future__ import annotations

from typing import Any

import numpy as np

from semops.config.schema import LogregConfig, TrainConfig
from semops.errors import SemopsError
from semops.tabular.metrics import log_loss, scores_to_proba, softmax
from semops.tabular.models.base import (
    EpochReport,
    Trained,
    TrainingData,
    history_row,
    ignore_epoch,
)


class LinearClassifier:
    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef = coef
        self.intercept = intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return scores_to_proba(features.astype(np.float64) @ self.coef.T + self.intercept)


def fit_logreg(
    x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0, max_iter: int = 100
) -> LinearClassifier:
    present = np.unique(y)
    if len(present) < 2:
        raise SemopsError(
            f"logistic regression needs two classes in training; found {present.tolist()}"
        )
    design = np.column_stack([x.astype(np.float64), np.ones(len(x))])
    targets = (y == 1).astype(np.float64)[:, None] if n_classes == 2 else np.eye(n_classes)[y]
    n_out = targets.shape[1]
    theta = np.zeros((n_out, design.shape[1]))  # rows: classes; last column: intercept
    penalised = np.ones(design.shape[1])
    penalised[-1] = 0.0

    def objective(params: np.ndarray) -> float:
        logits = design @ params.T
        if n_out == 1:
            data = np.logaddexp(0, logits[:, 0]) - targets[:, 0] * logits[:, 0]
        else:
            data = np.logaddexp.reduce(logits, axis=1) - (targets * logits).sum(axis=1)
        return float(0.5 * np.sum(params**2 * penalised) + c * data.sum())

    current = objective(theta)
    for _ in range(max_iter):
        logits = design @ theta.T
        proba = 1 / (1 + np.exp(-logits)) if n_out == 1 else softmax(logits)
        gradient = (theta * penalised + c * (proba - targets).T @ design).ravel()
        hessian = np.zeros((gradient.size, gradient.size))
        size = design.shape[1]
        for k in range(n_out):
            for m in range(n_out):
                weight = (
                    proba[:, k] * ((k == m) - proba[:, m])
                    if n_out > 1
                    else proba[:, 0] * (1 - proba[:, 0])
                )
                block = c * (design * weight[:, None]).T @ design
                if k == m:
                    block += np.diag(penalised)
                hessian[k * size : (k + 1) * size, m * size : (m + 1) * size] = block
        # Least squares: softmax ignores a shift shared by all intercepts, a flat direction.
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0].reshape(theta.shape)
        scale = 1.0
        while scale > 1e-10 and objective(theta - scale * step) > current:
            scale /= 2
        theta -= scale * step
        previous, current = current, objective(theta)
        if previous - current <= 1e-12 * max(1.0, abs(current)):
            break
    return LinearClassifier(theta[:, :-1].copy(), theta[:, -1].copy())


def fit(
    model: LogregConfig,
    train: TrainConfig,
    data: TrainingData,
    on_epoch: EpochReport = ignore_epoch,
) -> Trained:
    fitted = fit_logreg(data.x_train, data.y_train, data.n_classes, model.C, model.max_iter)
    train_loss = log_loss(fitted.predict_proba(data.x_train), data.y_train)
    history = [history_row(1, train_loss, fitted.predict_proba(data.x_val), data.y_val)]
    on_epoch(history[0])
    return Trained({"coef": fitted.coef, "intercept": fitted.intercept}, history, best_epoch=1)


def from_tensors(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> LinearClassifier:
    return LinearClassifier(tensors["coef"], tensors["intercept"])
