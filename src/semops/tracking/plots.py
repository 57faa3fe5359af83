"""PNG renderings of the DVC plot data, for MLflow (DVC renders its own from the same CSVs)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from semops import paths
from semops.io import read_csv_rows


def _columns(path: Path) -> dict[str, list[str]]:
    rows = read_csv_rows(path)
    return {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}


def _floats(values: list[str]) -> list[float]:
    return [float(v) for v in values]


def render_all(data_dir: Path, out_dir: Path) -> list[Path]:
    """Render each plot whose CSV is in `data_dir`; return the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rendered = []

    def save(fig: object, name: str) -> None:
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        rendered.append(path)

    line_plots = [
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
    for filename, name, x, y, title in line_plots:
        if (data_dir / filename).exists():
            cols = _columns(data_dir / filename)
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.plot(
                _floats(cols[x]), _floats(cols[y]), marker="." if name == "calibration" else None
            )
            if name != "pr":
                ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
            ax.set(xlabel=x, ylabel=y, title=title)
            save(fig, name)
    if (data_dir / paths.CONFUSION_PLOT.name).exists():
        cols = _columns(data_dir / paths.CONFUSION_PLOT.name)
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
        save(fig, "confusion")
    if (data_dir / paths.TRAIN_HISTORY.name).exists():
        cols = _columns(data_dir / paths.TRAIN_HISTORY.name)
        fig, ax = plt.subplots(figsize=(5, 4))
        for key in ("train_loss", "val_loss"):
            ax.plot(_floats(cols["epoch"]), _floats(cols[key]), label=key)
        ax.set(xlabel="epoch", ylabel="loss", title="Training history")
        ax.legend()
        save(fig, "history")
    return rendered


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    render_all(Path(sys.argv[1]), out)
