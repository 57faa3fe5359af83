"""Vega-Lite specs of the report's charts, their data inline: the page draws them with the Vega
bundle it carries, so it needs no network and no file beside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from semops.reporting.content import Cell, Plots, Point

Spec = dict[str, Any]
# The Vega-Lite the bundle holds (semops.reporting.vega): v5 specs.
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
WIDTH, HEIGHT = 300, 260
# Chance-level references: the diagonal of ROC and of a perfect calibration.
_DIAGONAL = [{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}]


def _base(title: str) -> Spec:
    return {"$schema": SCHEMA, "title": title, "width": WIDTH, "height": HEIGHT}


def _axis(field: str, title: str, kind: str = "quantitative", unit: bool = True) -> Spec:
    encoding: Spec = {"field": field, "type": kind, "title": title}
    if unit:
        encoding["scale"] = {"domain": [0, 1]}
    return encoding


def _points(points: Sequence[Point]) -> list[dict[str, float]]:
    # Numbered: Vega-Lite draws a line in x order unless told another (a PR curve's x repeats).
    return [{"i": i, "x": p.x, "y": p.y} for i, p in enumerate(points)]


def _diagonal() -> Spec:
    return {
        "data": {"values": _DIAGONAL},
        "mark": {"type": "line", "strokeDash": [4, 4], "color": "#999"},
        "encoding": {
            "x": {"field": "x", "type": "quantitative"},
            "y": {"field": "y", "type": "quantitative"},
        },
    }


def curve(
    points: Sequence[Point], title: str, x: str, y: str, diagonal: bool, dots: bool = False
) -> Spec:
    """A curve over [0, 1]², in the order of its points (ROC, precision-recall, calibration)."""
    line: Spec = {
        "data": {"values": _points(points)},
        "mark": {"type": "line", "point": dots},
        "encoding": {"x": _axis("x", x), "y": _axis("y", y), "order": {"field": "i"}},
    }
    layers = [_diagonal(), line] if diagonal else [line]
    return {**_base(title), "layer": layers}


def confusion(cells: Sequence[Cell]) -> Spec:
    """The confusion matrix: actual class down, predicted across, each cell's count written."""
    values = [{"actual": c.actual, "predicted": c.predicted, "count": c.count} for c in cells]
    position = {
        "x": {"field": "predicted", "type": "nominal", "title": "predicted"},
        "y": {"field": "actual", "type": "nominal", "title": "actual"},
    }
    return {
        **_base("Confusion matrix (test)"),
        "data": {"values": values},
        "encoding": position,
        "layer": [
            {
                "mark": "rect",
                "encoding": {
                    "color": {
                        "field": "count",
                        "type": "quantitative",
                        "scale": {"scheme": "blues"},
                    }
                },
            },
            {
                "mark": {"type": "text", "fontSize": 14},
                "encoding": {
                    "text": {"field": "count", "type": "quantitative"},
                    "color": {"value": "#222"},
                },
            },
        ],
    }


def history(rows: Sequence[Mapping[str, float]], keys: Sequence[str], title: str, y: str) -> Spec:
    """Values per epoch (one line each of `keys` the history has), folded into one chart."""
    present = [k for k in keys if rows and k in rows[0]]
    values = [{"epoch": row["epoch"], **{k: row[k] for k in present}} for row in rows]
    return {
        **_base(title),
        "data": {"values": values},
        "transform": [{"fold": present, "as": ["series", "value"]}],
        "mark": {"type": "line", "point": len(values) < 30},
        "encoding": {
            "x": _axis("epoch", "epoch", unit=False),
            "y": {"field": "value", "type": "quantitative", "title": y, "scale": {"zero": False}},
            "color": {"field": "series", "type": "nominal", "title": None},
        },
    }


def model_charts(plots: Plots) -> list[tuple[str, Spec]]:
    """(id, spec) of each evaluation chart the data allows, in the page's order."""
    charts = []
    if plots.roc:
        charts.append(
            (
                "roc",
                curve(
                    plots.roc, "ROC curve (test)", "false positive rate", "true positive rate", True
                ),
            )
        )
    if plots.pr:
        charts.append(
            ("pr", curve(plots.pr, "Precision-recall (test)", "recall", "precision", False))
        )
    if plots.calibration:
        charts.append(
            (
                "calibration",
                curve(
                    plots.calibration,
                    "Calibration (test)",
                    "mean predicted probability",
                    "fraction positive",
                    True,
                    dots=True,
                ),
            )
        )
    if plots.confusion:
        charts.append(("confusion", confusion(plots.confusion)))
    return charts


LOSSES = ("train_loss", "val_loss")


def training_charts(plots: Plots) -> list[tuple[str, Spec]]:
    """The loss curves, and every other per-epoch value (validation accuracy) in its own chart."""
    if not plots.history:
        return []
    rows = list(plots.history)
    others = sorted(k for k in rows[0] if k != "epoch" and k not in LOSSES)
    charts = [("history-loss", history(rows, LOSSES, "Loss per epoch", "loss"))]
    if others:
        charts.append(("history-other", history(rows, others, "Validation per epoch", "value")))
    return charts
