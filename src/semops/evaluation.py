"""Test-split metrics and curves (pure functions on probabilities and labels)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

DECIMALS = 6


def classification_metrics(
    proba: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Binary: scores of the positive class (the last column). Multiclass: macro one-vs-rest."""
    n_classes = proba.shape[1]
    if n_classes == 2:
        score = proba[:, 1]
        predicted = (score >= threshold).astype(np.int64)
        result = {
            "roc_auc": skm.roc_auc_score(labels, score),
            "pr_auc": skm.average_precision_score(labels, score),
            "f1": skm.f1_score(labels, predicted),
            "brier": skm.brier_score_loss(labels, score),
        }
    else:
        predicted = proba.argmax(axis=1)
        onehot = np.eye(n_classes)[labels]
        result = {
            "roc_auc": skm.roc_auc_score(
                labels, proba, multi_class="ovr", average="macro", labels=range(n_classes)
            ),
            "pr_auc": skm.average_precision_score(onehot, proba, average="macro"),
            "f1": skm.f1_score(labels, predicted, average="macro"),
            "brier": float(((proba - onehot) ** 2).sum(axis=1).mean()),
        }
    result["accuracy"] = skm.accuracy_score(labels, predicted)
    result["log_loss"] = skm.log_loss(labels, proba, labels=range(n_classes))
    return {k: round(float(v), DECIMALS) for k, v in sorted(result.items())}


def predicted_labels(proba: np.ndarray, threshold: float) -> np.ndarray:
    if proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(np.int64)
    return proba.argmax(axis=1)


def lift(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    return {k: round(model[k] - baseline[k], DECIMALS) for k in model}


def curve_scores(proba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_positive, score) pairs: the positive class if binary, else micro one-vs-rest."""
    if proba.shape[1] == 2:
        return labels == 1, proba[:, 1]
    return (np.eye(proba.shape[1])[labels] == 1).ravel(), proba.ravel()


def roc_points(proba: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    truth, score = curve_scores(proba, labels)
    fpr, tpr, _ = skm.roc_curve(truth, score, drop_intermediate=True)
    return {"fpr": _round(fpr), "tpr": _round(tpr)}


def pr_points(proba: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    truth, score = curve_scores(proba, labels)
    precision, recall, _ = skm.precision_recall_curve(truth, score, drop_intermediate=True)
    return {"recall": _round(recall), "precision": _round(precision)}


def calibration_points(proba: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, list[Any]]:
    """Mean predicted probability vs observed frequency in equal-width bins (empty bins omitted)."""
    truth, score = curve_scores(proba, labels)
    which = np.minimum((score * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    predicted = np.bincount(which, weights=score, minlength=bins)
    observed = np.bincount(which, weights=truth.astype(np.float64), minlength=bins)
    keep = count > 0
    return {
        "mean_predicted": _round(predicted[keep] / count[keep]),
        "fraction_positive": _round(observed[keep] / count[keep]),
        "count": count[keep].tolist(),
    }


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), DECIMALS) for v in values]
