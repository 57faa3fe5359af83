"""train: fit the configured model on train with early stopping on val; save it and its history."""

from semops import paths
from semops.config.schema import load_section
from semops.io import read_json, write_csv, write_json
from semops.stage import run_stage
from semops.tabular import models
from semops.tabular.featureio import load_features
from semops.tabular.models import base, training


def main() -> None:
    model_cfg = load_section("model")
    train_cfg = load_section("train")
    classes = read_json(paths.FEATURIZER)["target"]["classes"]
    x_train, y_train, names = load_features(paths.processed_split("train"))
    x_val, y_val, _ = load_features(paths.processed_split("val"))
    data = base.TrainingData(x_train, y_train, x_val, y_val, n_classes=len(classes))
    fitted = training.fit(model_cfg, train_cfg, data)
    models.save(fitted, paths.MODEL_DIR, {"features": names, "classes": classes})
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
    )


if __name__ == "__main__":
    run_stage(main)
