"""Fitting a model of any kind: the dispatch to the kind's trainer, and the check that training
did not diverge."""

from __future__ import annotations

import math
from types import ModuleType

from semops.config.schema import (
    GbdtConfig,
    MlpConfig,
    ModelConfig,
    TrainConfig,
    saved_settings,
)
from semops.errors import SemopsError
from semops.tabular.models import Fitted
from semops.tabular.models.base import EpochReport, Trained, TrainingData, ignore_epoch
from semops.tabular.models.predict import predictor


def _trainer(kind: str) -> ModuleType:
    """The module that fits `kind`, imported only when used (torch only for mlp); logreg and
    gbdt fit and predict in one module."""
    if kind == "mlp":
        from semops.tabular.models import mlp

        return mlp
    return predictor(kind)


def epoch_budget(model: ModelConfig, train: TrainConfig) -> int:
    """The most epochs `model` can run: boosting rounds for gbdt, one Newton solve for logreg."""
    if isinstance(model, GbdtConfig):
        return model.max_iter
    return train.epochs if isinstance(model, MlpConfig) else 1


def fit(
    model: ModelConfig, train: TrainConfig, data: TrainingData, on_epoch: EpochReport = ignore_epoch
) -> Fitted:
    trained: Trained = _trainer(model.name).fit(model, train, data, on_epoch)
    if not all(math.isfinite(v) for row in trained.history for v in row.values()):
        lower_lr = f"lower model.lr (now {model.lr:g}) or " if isinstance(model, MlpConfig) else ""
        raise SemopsError(f"training diverged (a loss is not finite); {lower_lr}check the features")
    return Fitted(
        model.name,
        saved_settings(model),
        trained.tensors,
        trained.history,
        trained.best_epoch,
        data.x_train.shape[1],
        data.n_classes,
        trained.device,
    )
