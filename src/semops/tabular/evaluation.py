"""Test-split metrics and curves (pure functions on probabilities and labels)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from semops.errors import SemopsError
from semops.tabular.metrics import log_loss

DECIMALS = 6

# numpy only: importing sklearn.metrics costs the evaluate stage seconds of scipy imports. ROC
# AUC, average precision, F1, log loss and the ROC/PR curves follow scikit-learn's definitions
# (tests/test_evaluation.py holds them equal); calibration bins are [a, b), the last one closed.


def _binary_curve(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive counts at each distinct score, from the highest score down."""
    order = np.argsort(score, kind="mergesort")[::-1]
    score, truth = score[order], truth[order].astype(np.float64)
    cut = np.r_[np.flatnonzero(np.diff(score)), truth.size - 1]
    tps = np.cumsum(truth)[cut]
    return 1 + cut - tps, tps


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float:
    fps, tps = _binary_curve(truth, score)
    fpr, tpr = np.r_[0, fps] / fps[-1], np.r_[0, tps] / tps[-1]
    return float(np.trapezoid(tpr, fpr))


def average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    fps, tps = _binary_curve(truth, score)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    tp = float(np.sum(truth & predicted))
    denominator = 2 * tp + np.sum(truth & ~predicted) + np.sum(~truth & predicted)
    return 2 * tp / denominator if denominator else 0.0


def _mean(values: Iterable[float]) -> float:
    return float(np.mean(list(values)))


def classification_metrics(
    proba: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Binary: scores of the positive class (the last column). Multiclass: macro one-vs-rest."""
    n_classes = proba.shape[1]
    absent = sorted(set(range(n_classes)) - set(np.unique(labels).tolist()))
    if absent:
        raise SemopsError(f"the test split has no rows of class index {absent}; AUCs are undefined")
    predicted = predicted_labels(proba, threshold)
    onehot = np.eye(n_classes)[labels]
    if n_classes == 2:
        score, truth = proba[:, 1], labels == 1
        result = {
            "roc_auc": roc_auc(truth, score),
            "pr_auc": average_precision(truth, score),
            "f1": f1(truth, predicted == 1),
            "brier": float(np.mean((score - truth) ** 2)),
        }
    else:
        present = np.union1d(labels, predicted)
        result = {
            "roc_auc": _mean(roc_auc(labels == k, proba[:, k]) for k in range(n_classes)),
            "pr_auc": _mean(average_precision(labels == k, proba[:, k]) for k in range(n_classes)),
            "f1": _mean(f1(labels == k, predicted == k) for k in present),
            "brier": float(((proba - onehot) ** 2).sum(axis=1).mean()),
        }
    result["accuracy"] = float(np.mean(predicted == labels))
    result["log_loss"] = log_loss(proba, labels)
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
    fps, tps = _binary_curve(truth, score)
    if len(fps) > 2:  # drop points on straight segments, as scikit-learn does
        corners = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.flatnonzero(np.r_[True, corners, True])
        fps, tps = fps[keep], tps[keep]
    return {"fpr": _round(np.r_[0, fps] / fps[-1]), "tpr": _round(np.r_[0, tps] / tps[-1])}


def pr_points(proba: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Precision against recall, recall falling from 1 to 0 (scikit-learn's order)."""
    truth, score = curve_scores(proba, labels)
    fps, tps = _binary_curve(truth, score)
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(tps[:-1]), np.diff(tps[1:])), True])
        fps, tps = fps[keep], tps[keep]
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return {
        "recall": _round(np.r_[recall[::-1], 0]),
        "precision": _round(np.r_[precision[::-1], 1]),
    }


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
