"""PNG renderings of the DVC plot data, for MLflow (DVC renders its own from the same CSVs)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from semops import paths
from semops.io import read_csv_rows


def _columns(path: Path) -> dict[str, list[str]]:
    rows = read_csv_rows(path)
    return {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}


def _floats(values: list[str]) -> list[float]:
    return [float(v) for v in values]


LINE_PLOTS = [
    (paths.ROC_PLOT.name, "roc", "fpr", "tpr", "ROC curve (test)"),
    (paths.PR_PLOT.name, "pr", "recall", "precision", "Precision-recall curve (test)"),
    (
        paths.CALIBRATION_PLOT.name,
        "calibration",
        "mean_predicted",
        "fraction_positive",
        "Calibration (test)",
    ),
]


def render_all(data_dir: Path, out_dir: Path) -> list[Path]:
    """Render each plot whose CSV is in `data_dir`; return the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: list[tuple[Any, str]] = []
    for filename, name, x, y, title in LINE_PLOTS:
        if (data_dir / filename).exists():
            figures.append(
                (_line_plot(plt, _columns(data_dir / filename), name, x, y, title), name)
            )
    if (data_dir / paths.CONFUSION_PLOT.name).exists():
        figures.append(
            (_confusion(plt, _columns(data_dir / paths.CONFUSION_PLOT.name)), "confusion")
        )
    if (data_dir / paths.TRAIN_HISTORY.name).exists():
        figures.append((_history(plt, _columns(data_dir / paths.TRAIN_HISTORY.name)), "history"))
    rendered = []
    for fig, name in figures:
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        rendered.append(path)
    return rendered


def _line_plot(plt: Any, cols: dict[str, list[str]], name: str, x: str, y: str, title: str) -> Any:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(_floats(cols[x]), _floats(cols[y]), marker="." if name == "calibration" else None)
    if name != "pr":
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel=x, ylabel=y, title=title)
    return fig


def _confusion(plt: Any, cols: dict[str, list[str]]) -> Any:
    labels = sorted(set(cols["actual"]) | set(cols["predicted"]))
    counts = Counter(zip(cols["actual"], cols["predicted"], strict=True))
    grid = [[counts[(a, p)] for p in labels] for a in labels]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(grid, cmap="Blues")
    for i, row in enumerate(grid):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center")
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="actual",
        title="Confusion matrix (test)",
    )
    return fig


def _history(plt: Any, cols: dict[str, list[str]]) -> Any:
    fig, ax = plt.subplots(figsize=(5, 4))
    for key in ("train_loss", "val_loss"):
        ax.plot(_floats(cols["epoch"]), _floats(cols[key]), label=key)
    ax.set(xlabel="epoch", ylabel="loss", title="Training history")
    ax.legend()
    return fig


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    render_all(Path(sys.argv[1]), out)
