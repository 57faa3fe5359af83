"""Gradient-boosted trees: scikit-learn's HistGradientBoostingClassifier for fitting, its trees
exported to flat arrays (safetensors) so that loading unpickles nothing.

Prediction walks each tree with scikit-learn's compiled tree predictor, built from those arrays:
the numpy walk it replaced scored about 95,000 rows/s, seven times slower (benchmarks/predict.py),
for the same bits. Its price is importing scikit-learn's ensemble package (about 1 s), paid only
where a gbdt model predicts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from semops.config.schema import GbdtConfig, TrainConfig
from semops.tabular.metrics import log_loss, scores_to_proba
from semops.tabular.models.base import (
    EarlyStopper,
    EpochReport,
    Trained,
    TrainingData,
    history_row,
    ignore_epoch,
)


class TreeEnsemble:
    """Sum of regression trees per class on raw feature values, then a sigmoid or softmax."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.trees = [compiled_tree(tensors, tree) for tree in range(len(tensors["roots"]))]
        self.tree_class = tensors["tree_class"]
        self.baseline = tensors["baseline"]
        # Rows are scored independently: any thread count gives the same values.
        usable = getattr(os, "sched_getaffinity", None)  # Linux: the CPUs this process may use
        self.threads = len(usable(0)) if usable else os.cpu_count() or 1

    def staged_scores(self, features: np.ndarray) -> Iterator[np.ndarray]:
        """Raw scores after each tree, accumulated in place (one pass over the ensemble)."""
        x = np.ascontiguousarray(features, dtype=np.float64)
        scores = np.tile(self.baseline, (len(x), 1))
        no_categories = np.zeros((0, 8), dtype=np.uint32)
        no_feature_map = np.zeros(0, dtype=np.uint32)
        for tree, cls in zip(self.trees, self.tree_class, strict=True):
            scores[:, cls] += tree.predict(x, no_categories, no_feature_map, self.threads)
            yield scores

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        final = np.tile(self.baseline, (len(features), 1))
        for final in self.staged_scores(features):  # noqa: B007 (the last stage is the result)
            pass
        return scores_to_proba(final)


def compiled_tree(tensors: dict[str, np.ndarray], tree: int) -> Any:
    """Tree number `tree` of the flat arrays as scikit-learn's compiled predictor (its nodes
    numbered from 0; a leaf's children are unused)."""
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    roots = tensors["roots"]
    start = int(roots[tree])
    end = int(roots[tree + 1]) if tree + 1 < len(roots) else len(tensors["feature"])
    span = slice(start, end)
    leaf = tensors["is_leaf"][span].astype(bool)
    nodes = np.zeros(end - start, dtype=PREDICTOR_RECORD_DTYPE)
    nodes["value"] = tensors["value"][span]
    nodes["feature_idx"] = tensors["feature"][span]
    nodes["num_threshold"] = tensors["threshold"][span]
    nodes["missing_go_to_left"] = tensors["missing_left"][span]
    nodes["left"] = np.where(leaf, 0, tensors["left"][span] - start)
    nodes["right"] = np.where(leaf, 0, tensors["right"][span] - start)
    nodes["is_leaf"] = leaf
    no_categories = np.zeros((0, 8), dtype=np.uint32)
    return TreePredictor(nodes, no_categories, no_categories)


def export_trees(model: Any) -> dict[str, np.ndarray]:
    """Flatten a fitted HistGradientBoostingClassifier's trees into arrays of global node ids."""
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value")
    }
    roots, tree_class = [], []
    offset = 0
    for iteration in model._predictors:
        for cls, predictor in enumerate(iteration):
            nodes = predictor.nodes
            roots.append(offset)
            tree_class.append(cls)
            parts["feature"].append(nodes["feature_idx"].astype(np.int64))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(np.uint8))
            parts["left"].append(nodes["left"].astype(np.int64) + offset)
            parts["right"].append(nodes["right"].astype(np.int64) + offset)
            parts["is_leaf"].append(nodes["is_leaf"].astype(np.uint8))
            parts["value"].append(nodes["value"].astype(np.float64))
            offset += len(nodes)
    tensors = {k: np.concatenate(v) for k, v in parts.items()}
    tensors["roots"] = np.asarray(roots, dtype=np.int64)
    tensors["tree_class"] = np.asarray(tree_class, dtype=np.int64)
    tensors["baseline"] = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    return tensors


def fit(
    model: GbdtConfig, train: TrainConfig, data: TrainingData, on_epoch: EpochReport = ignore_epoch
) -> Trained:
    """Boost up to `max_iter` rounds, then keep the rounds up to the best validation loss,
    stopping after `train.early_stopping.patience` rounds without improvement."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    estimator = HistGradientBoostingClassifier(
        max_iter=model.max_iter,
        learning_rate=model.learning_rate,
        max_leaf_nodes=model.max_leaf_nodes,
        min_samples_leaf=model.min_samples_leaf,
        l2_regularization=model.l2_regularization,
        early_stopping=False,
        random_state=train.seed,
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=train.threads, user_api="openmp"):
        estimator.fit(data.x_train, data.y_train)
    tensors = export_trees(estimator)
    ensemble = TreeEnsemble(tensors)
    per_round = len(estimator._predictors[0])
    stopper = EarlyStopper(train.early_stopping.patience, train.early_stopping.min_delta)
    stages = zip(
        ensemble.staged_scores(data.x_train), ensemble.staged_scores(data.x_val), strict=True
    )
    history = []
    for tree, (train_scores, val_scores) in enumerate(stages, start=1):
        if tree % per_round:
            continue
        train_loss = log_loss(scores_to_proba(train_scores), data.y_train)
        history.append(
            history_row(tree // per_round, train_loss, scores_to_proba(val_scores), data.y_val)
        )
        on_epoch(history[-1])
        stopper.improved(history[-1]["val_loss"], tree // per_round)
        if stopper.should_stop:
            break
    return Trained(
        keep_rounds(tensors, stopper.best_epoch * per_round), history, stopper.best_epoch
    )


def keep_rounds(tensors: dict[str, np.ndarray], n_trees: int) -> dict[str, np.ndarray]:
    """The first `n_trees` trees (their nodes are stored contiguously, in order)."""
    n_nodes = (
        int(tensors["roots"][n_trees])
        if n_trees < len(tensors["roots"])
        else len(tensors["feature"])
    )
    kept = {
        k: v[:n_nodes] for k, v in tensors.items() if k not in {"roots", "tree_class", "baseline"}
    }
    kept["roots"] = tensors["roots"][:n_trees]
    kept["tree_class"] = tensors["tree_class"][:n_trees]
    kept["baseline"] = tensors["baseline"]
    return kept


def from_tensors(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> TreeEnsemble:
    return TreeEnsemble(tensors)
