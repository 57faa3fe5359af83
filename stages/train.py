"""train: fit the configured model on train with early stopping on val; save it and its history.
With train.distributed above one process, it starts torchrun on this script (DDP, mlp only);
under torchrun, rank 0 logs, saves and reports for every rank."""

import logging
import sys
import time
from pathlib import Path

from semops import paths
from semops.config.schema import ModelConfig, TrainConfig, load_section
from semops.io import read_json, sha256_file, write_csv, write_json
from semops.progress import Progress
from semops.stage import run_stage
from semops.tabular import models
from semops.tabular.featureio import load_features
from semops.tabular.models import base, torchrun, training

LOG_EVERY = 10  # epochs between progress lines where stderr is no terminal (dvc repro's logs)


def main() -> None:
    model_cfg = load_section("model")
    train_cfg = load_section("train")
    if torchrun.should_launch(train_cfg):
        sys.exit(torchrun.launch(model_cfg.name, train_cfg, Path(__file__).resolve()))
    torchrun.require_mlp(model_cfg.name, torchrun.world_size())  # torchrun started by hand
    featurizer = read_json(paths.FEATURIZER)
    classes = featurizer["target"]["classes"]
    x_train, y_train, names = load_features(paths.processed_split("train"))
    x_val, y_val, _ = load_features(paths.processed_split("val"))
    data = base.TrainingData(x_train, y_train, x_val, y_val, n_classes=len(classes))
    if torchrun.rank() != 0:
        training.fit(model_cfg, train_cfg, data)
        return
    fitted, epoch_end_ms = fit_with_progress(model_cfg, train_cfg, data)
    models.save(fitted, paths.MODEL_DIR, {"features": names, "classes": classes}, featurizer)
    write_json(
        paths.TRAIN_TIMES,
        {
            "model_sha256": sha256_file(paths.MODEL_DIR / models.WEIGHTS),
            "epoch_end_ms": epoch_end_ms,
        },
    )
    write_csv(
        paths.TRAIN_HISTORY, {k: [row[k] for row in fitted.history] for k in fitted.history[0]}
    )
    best = fitted.history[fitted.best_epoch - 1]
    write_json(
        paths.TRAIN_METRICS,
        {
            "epochs_run": len(fitted.history),
            "best_epoch": fitted.best_epoch,
            "best_val_loss": round(best["val_loss"], 6),
            "best_val_accuracy": round(best["val_accuracy"], 6),
        },
    )
    print(
        f"train: {model_cfg.name}, epochs run {len(fitted.history)}, "
        f"best {fitted.best_epoch}: val_loss {best['val_loss']:.4f}"
        + (f" ({torchrun.world_size()} processes)" if torchrun.world_size() > 1 else "")
    )


def fit_with_progress(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: base.TrainingData
) -> tuple[models.Fitted, list[int]]:
    """The fitted model, and each epoch's end time (Unix ms), with progress logged."""
    epoch_end_ms: list[int] = []
    budget = training.epoch_budget(model_cfg, train_cfg)
    log = logging.getLogger("semops.train")
    with Progress(log, "train", budget, "epoch", LOG_EVERY) as progress:

        def on_epoch(row: dict[str, float]) -> None:
            epoch_end_ms.append(time.time_ns() // 1_000_000)
            progress.update(train_loss=row["train_loss"], val_loss=row["val_loss"])

        fitted = training.fit(model_cfg, train_cfg, data, on_epoch)
    return fitted, epoch_end_ms


if __name__ == "__main__":
    run_stage(main)
