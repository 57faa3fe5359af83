"""Featurization fitted on the training split only, saved as readable JSON, applied to every split.

Numerics are imputed (median or mean) and standardised; categoricals are one-hot encoded over
the categories seen in training, an unseen or missing category encoding as all zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from semops.config.schema import FeaturizeConfig
from semops.errors import SemopsError
from semops.tabular.columns import is_categorical, normalised_label
from semops.tabular.featureio import LABEL

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def fit_featurizer(
    train: pd.DataFrame, target: str, positive: str | None, cfg: FeaturizeConfig
) -> dict[str, Any]:
    """Fit imputation, scaling and encoding on the training split, as a JSON-able spec."""
    observed = [str(c) for c in train[target].dropna().unique()]
    if positive is None:
        classes = sorted(observed)
    else:
        positive_label = normalised_label(positive)
        classes = [*sorted(c for c in observed if c != positive_label), positive_label]
    numeric: dict[str, dict[str, float]] = {}
    categorical: dict[str, list[str]] = {}
    for name in train.columns:
        if name == target:
            continue
        column = train[name]
        if is_categorical(column):
            counts = column.value_counts()
            categorical[name] = sorted(
                str(c) for c, n in counts.items() if n >= cfg.min_category_count
            )
        else:
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            present = values[~np.isnan(values)]
            if present.size == 0:
                raise SemopsError(f"column {name!r} has no values in the training split")
            with np.errstate(over="ignore", invalid="ignore"):  # values near the float maximum
                median = cfg.numeric_impute == "median"
                fill = float(np.median(present) if median else present.mean())
                filled = np.where(np.isnan(values), fill, values)
                mean, std = float(filled.mean()), float(filled.std())
            if not np.isfinite([fill, mean, std]).all():
                raise SemopsError(
                    f"column {name!r}: its mean or spread overflows a float (values up to "
                    f"{np.abs(present).max():g}); bound it with a valid range in data.valid.{name}"
                )
            numeric[name] = {
                "fill": fill,
                "mean": mean if cfg.scale else 0.0,
                "std": std if cfg.scale and std > 0 else 1.0,
            }
    names = list(numeric) + [f"{col}={cat}" for col, cats in categorical.items() for cat in cats]
    return {
        "target": {"column": target, "classes": classes},
        "numeric": numeric,
        "categorical": categorical,
        "features": names,
    }


def transform(table: pd.DataFrame, spec: dict[str, Any]) -> pa.Table:
    """Apply a fitted spec: float32 feature columns plus the integer class label."""
    import pyarrow as pa

    columns: dict[str, np.ndarray] = {}
    for name, stats in spec["numeric"].items():
        values = table[name].to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.where(np.isnan(values), stats["fill"], values)
        columns[name] = ((values - stats["mean"]) / stats["std"]).astype(np.float32)
    for name, categories in spec["categorical"].items():
        codes = _codes(table[name], categories)
        for i, category in enumerate(categories):
            columns[f"{name}={category}"] = (codes == i).astype(np.float32)
    target = spec["target"]
    labels = _codes(table[target["column"]], target["classes"])
    if (labels < 0).any():
        unknown = sorted(set(table[target["column"]].astype(str)) - set(target["classes"]))
        raise SemopsError(
            f"target classes {unknown} are not in the training split's classes {target['classes']}"
        )
    columns[LABEL] = labels.astype(np.int64)
    # Column order from the `features` list: the numeric/categorical mappings come back from
    # featurizer.json with sorted keys, which would otherwise reorder the feature columns.
    return pa.table({name: columns[name] for name in [*spec["features"], LABEL]})


def _codes(column: pd.Series, categories: list[str]) -> np.ndarray:
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        as_category = column.cat.set_categories(categories)
    else:
        as_category = column.astype(pd.CategoricalDtype(categories))
    return np.asarray(as_category.cat.codes.to_numpy(), dtype=np.int64)
