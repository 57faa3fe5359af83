"""Test-split metrics and curves (pure functions on probabilities and labels)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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
    proba: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Binary: scores of the positive class (the last column), scalars only. Multiclass: roc_auc,
    pr_auc and f1 macro one-vs-rest, roc_auc_weighted and f1_weighted weighted by support (as
    scikit-learn's average="weighted"), then `per_class` (precision, recall, f1, support) and
    `confusion_matrix` (actual -> predicted -> rows), keyed by class name (`classes`, else the
    class index)."""
    n_classes = proba.shape[1]
    absent = sorted(set(range(n_classes)) - set(np.unique(labels).tolist()))
    if absent:
        raise SemopsError(f"the test split has no rows of class index {absent}; AUCs are undefined")
    predicted = predicted_labels(proba, threshold)
    if n_classes == 2:
        score, truth = proba[:, 1], labels == 1
        result = {
            "roc_auc": roc_auc(truth, score),
            "pr_auc": average_precision(truth, score),
            "f1": f1(truth, predicted == 1),
            "brier": float(np.mean((score - truth) ** 2)),
        }
    else:
        result = _multiclass_scalars(proba, labels, predicted)
    result["accuracy"] = float(np.mean(predicted == labels))
    result["log_loss"] = log_loss(proba, labels)
    scalars: dict[str, Any] = {k: round(float(v), DECIMALS) for k, v in sorted(result.items())}
    if n_classes == 2:
        return scalars
    names = [str(k) for k in range(n_classes)] if classes is None else [str(c) for c in classes]
    return {
        **scalars,
        "per_class": per_class_metrics(labels, predicted, names),
        "confusion_matrix": confusion_matrix(labels, predicted, names),
    }


def _multiclass_scalars(
    proba: np.ndarray, labels: np.ndarray, predicted: np.ndarray
) -> dict[str, float]:
    n_classes = proba.shape[1]
    support = np.bincount(labels, minlength=n_classes).astype(np.float64)
    aucs = [roc_auc(labels == k, proba[:, k]) for k in range(n_classes)]
    f1s = [f1(labels == k, predicted == k) for k in range(n_classes)]
    onehot = np.eye(n_classes)[labels]
    return {
        "roc_auc": _mean(aucs),
        "roc_auc_weighted": _weighted(aucs, support),
        "pr_auc": _mean(average_precision(labels == k, proba[:, k]) for k in range(n_classes)),
        "f1": _mean(f1s),
        "f1_weighted": _weighted(f1s, support),
        "brier": float(((proba - onehot) ** 2).sum(axis=1).mean()),
    }


def _weighted(values: list[float], support: np.ndarray) -> float:
    # Summed in Python, in class order: the same bits on every machine.
    return math.fsum(v * w for v, w in zip(values, support.tolist(), strict=True)) / math.fsum(
        support.tolist()
    )


def per_class_metrics(
    labels: np.ndarray, predicted: np.ndarray, names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Precision, recall and F1 of each class one-vs-rest (0 where undefined, as scikit-learn's
    zero_division), and its support (test rows)."""
    found: dict[str, dict[str, float | int]] = {}
    for k, name in enumerate(names):
        truth, chosen = labels == k, predicted == k
        hits = int(np.sum(truth & chosen))
        found[name] = {
            "precision": round(hits / int(chosen.sum()), DECIMALS) if chosen.any() else 0.0,
            "recall": round(hits / int(truth.sum()), DECIMALS) if truth.any() else 0.0,
            "f1": round(f1(truth, chosen), DECIMALS),
            "support": int(truth.sum()),
        }
    return found


def confusion_matrix(
    labels: np.ndarray, predicted: np.ndarray, names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Rows of each actual class (outer key) predicted as each class (inner key)."""
    k = len(names)
    counts = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    return {
        actual: {name: int(counts[i, j]) for j, name in enumerate(names)}
        for i, actual in enumerate(names)
    }


def predicted_labels(proba: np.ndarray, threshold: float) -> np.ndarray:
    if proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(np.int64)
    return proba.argmax(axis=1)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The single-number metrics, without the per-class ones and the confusion matrix."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def lift(model: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """Model minus baseline, for each single-number metric."""
    return {k: round(model[k] - baseline[k], DECIMALS) for k in scalar_metrics(model)}


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
