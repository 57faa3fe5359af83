"""Benchmark 5: test metrics of the default model (mlp) and of the other models on `credit`."""

from __future__ import annotations

import shutil
from typing import Any

from benchmarks.common import Context, read_json, timed
from benchmarks.report import Result, Target

TITLE = "5. Model quality on credit"

METRICS = ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss", "brier")
COLUMNS = [
    "model",
    "ROC AUC",
    "PR AUC",
    "accuracy",
    "F1",
    "log loss",
    "Brier",
    "epochs/rounds run",
    "best",
]


def train_each(ctx: Context) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Test metrics and training reports per model: mlp's from the built project, the others'
    from a copy of it, composed with their model and trained and evaluated there."""
    built = ctx.built_project()
    copy = ctx.root / "quality" / "project"
    shutil.copytree(built, copy, symlinks=True)
    metrics = {"mlp": read_json(built / "reports/metrics.json")}
    trained = {"mlp": read_json(built / "reports/train.json")}
    seconds: dict[str, float] = {}
    for model in ("logreg", "gbdt"):
        timed(["semops", "compose", f"model={model}"], copy)
        train = timed(["python", "stages/train.py"], copy)
        evaluate = timed(["python", "stages/evaluate.py"], copy)
        seconds[model] = train.seconds + evaluate.seconds
        metrics[model] = read_json(copy / "reports/metrics.json")
        trained[model] = read_json(copy / "reports/train.json")
    timed(["git", "checkout", "params.yaml"], copy)
    return metrics, trained, seconds


def run(ctx: Context, result: Result) -> None:
    metrics, trained, seconds = train_each(ctx)
    auc = {m: metrics[m]["test"]["roc_auc"] for m in metrics}
    best = max(auc, key=lambda m: auc[m])
    result.targets.append(
        Target(
            "default model (mlp) test ROC AUC", f"{auc['mlp']:.4f}", ">= 0.83", auc["mlp"] >= 0.83
        )
    )
    rows = []
    for model in metrics:
        test = metrics[model]["test"]
        rows.append(
            [
                model + (" (default)" if model == "mlp" else ""),
                *(f"{test[k]:.4f}" for k in METRICS),
                str(trained[model]["epochs_run"]),
                str(trained[model]["best_epoch"]),
            ]
        )
    result.table(COLUMNS, rows)
    baseline = metrics["mlp"]["baseline_logreg"]["roc_auc"]
    result.notes += [
        f"Test split: {metrics['mlp']['test_rows']} rows of `credit` (positive class 'bad'); the "
        "same split and features for every model (only params.yaml's model section differs).",
        "mlp: the cold run's result. logreg and gbdt: `semops compose model=<name>` then the train "
        "and evaluate stages in a copy of that repo (their default conf/model/*.yaml).",
        f"Best test ROC AUC: {best} ({auc[best]:.4f}). The evaluate stage's own logreg baseline "
        f"scored {baseline:.4f} (the logreg row should match it).",
    ]
    result.raw = {"metrics": metrics, "train": trained, "train_evaluate_seconds": seconds}
