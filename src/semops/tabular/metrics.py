"""Probabilities from scores and the log loss, shared by the trainers and the evaluation (numpy:
importing scikit-learn's metrics costs a stage seconds; tests hold these equal to it)."""

from __future__ import annotations

import numpy as np


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


def log_loss(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood, probabilities clipped to [eps, 1 - eps] like scikit-learn."""
    eps = float(np.finfo(np.float64).eps)
    picked = np.clip(proba[np.arange(len(labels)), labels], eps, 1 - eps)
    return float(-np.log(picked).mean())
