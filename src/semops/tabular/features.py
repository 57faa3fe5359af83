"""Featurization fitted on the training split only, saved as readable JSON, applied to every split.

Numerics are imputed (median or mean) and standardised; categoricals are one-hot encoded over
the categories seen in training, an unseen or missing category encoding as all zeros, at most
`max_categories` of them (the most frequent) with a feature each, the rarer ones sharing one
`<column>=<OTHER>` feature; free text becomes TF-IDF features (`semops.tabular.text`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from semops.config.schema import FeaturizeConfig
from semops.errors import SemopsError
from semops.tabular.columns import normalised_label
from semops.tabular.featureio import LABEL
from semops.tabular.text import feature_name, fit_text, text_matrix

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


# The feature of a column's categories merged by max_categories. Categories are casefolded by the
# clean stage, so no category can be spelt with capitals: no real category collides with it.
OTHER = "<OTHER>"


def fit_featurizer(
    train: pd.DataFrame, schema: dict[str, Any], positive: str | None, cfg: FeaturizeConfig
) -> dict[str, Any]:
    """Fit imputation, scaling and encoding on the training split, as a JSON-able spec.

    `schema` is the clean stage's input schema (`clean.input_schema`): it says how each column
    is encoded, and the spec carries it, so that the spec alone turns raw rows into features.
    The spec has `other` (categories merged per column) and `text` (vocabulary and idf per
    column) only where a column has them, so a data set without either keeps its spec."""
    target = schema["target"]
    kinds = {column["name"]: column["kind"] for column in schema["columns"]}
    observed = [str(c) for c in train[target].dropna().unique()]
    if positive is None:
        classes = sorted(observed)
    else:
        positive_label = normalised_label(positive)
        classes = [*sorted(c for c in observed if c != positive_label), positive_label]
    numeric: dict[str, dict[str, float]] = {}
    categorical: dict[str, list[str]] = {}
    other: dict[str, list[str]] = {}
    text: dict[str, dict[str, Any]] = {}
    for name in train.columns:
        if name == target:
            continue
        if kinds[name] == "categorical":
            categorical[name], merged = fit_categories(train[name], cfg)
            if merged:
                other[name] = merged
        elif kinds[name] == "text":
            text[name] = fit_text(train[name], cfg.text_features)
        else:
            numeric[name] = fit_numeric(name, train[name], cfg)
    spec: dict[str, Any] = {
        "target": {"column": target, "classes": classes},
        "numeric": numeric,
        "categorical": categorical,
        **({"other": other} if other else {}),
        **({"text": text} if text else {}),
    }
    spec["features"] = feature_names(spec)
    spec["input"] = schema
    return spec


def fit_numeric(name: str, column: pd.Series, cfg: FeaturizeConfig) -> dict[str, float]:
    """Fill value, centre and scale of a numeric column."""
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
    return {
        "fill": fill,
        "mean": mean if cfg.scale else 0.0,
        "std": std if cfg.scale and std > 0 else 1.0,
    }


def fit_categories(column: pd.Series, cfg: FeaturizeConfig) -> tuple[list[str], list[str]]:
    """The categories of a column with a feature each, and those merged into its OTHER feature
    (both sorted): of the categories seen at least min_category_count times in training (the
    rarer ones encode as all zeros, like unseen ones), the max_categories most frequent, ties
    alphabetical."""
    counts = {str(c): int(n) for c, n in column.value_counts().items()}
    seen = [c for c, n in counts.items() if n >= cfg.min_category_count]
    # Python's sort with an explicit total key: the same order on every machine.
    by_frequency = sorted(seen, key=lambda c: (-counts[c], c))
    return sorted(by_frequency[: cfg.max_categories]), sorted(by_frequency[cfg.max_categories :])


def feature_names(spec: dict[str, Any]) -> list[str]:
    """Numerics, then each categorical's categories (and OTHER), then each text's terms; a name
    made twice (a column named like another's feature) fails, naming it."""
    names = list(spec["numeric"])
    for column, categories in spec["categorical"].items():
        names += [f"{column}={category}" for category in categories]
        if column in spec.get("other", {}):
            names.append(f"{column}={OTHER}")
    for column, vocabulary in spec.get("text", {}).items():
        names += [feature_name(column, term) for term in vocabulary["terms"]]
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise SemopsError(
            f"feature {twice[0]!r} is made by two columns; rename one of them (data.drop)"
        )
    return names


def transform(table: pd.DataFrame, spec: dict[str, Any]) -> pa.Table:
    """Apply a fitted spec: float32 feature columns plus the integer class label."""
    import pyarrow as pa

    columns = feature_columns(table, spec)
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


def feature_columns(table: pd.DataFrame, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Apply a fitted spec to cleaned rows (the target need not be there): float32 columns by
    feature name."""
    columns: dict[str, np.ndarray] = {}
    for name, stats in spec["numeric"].items():
        values = table[name].to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.where(np.isnan(values), stats["fill"], values)
        columns[name] = ((values - stats["mean"]) / stats["std"]).astype(np.float32)
    for name, categories in spec["categorical"].items():
        merged = spec.get("other", {}).get(name, [])
        codes = _codes(table[name], categories + merged)
        for i, category in enumerate(categories):
            columns[f"{name}={category}"] = (codes == i).astype(np.float32)
        if merged:
            columns[f"{name}={OTHER}"] = (codes >= len(categories)).astype(np.float32)
    for name, vocabulary in spec.get("text", {}).items():
        matrix = text_matrix(table[name], vocabulary)
        for term, values in zip(vocabulary["terms"], matrix, strict=True):
            columns[feature_name(name, term)] = values
    return columns


def _codes(column: pd.Series, categories: list[str]) -> np.ndarray:
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        as_category = column.cat.set_categories(categories)
    else:
        as_category = column.astype(pd.CategoricalDtype(categories))
    return np.asarray(as_category.cat.codes.to_numpy(), dtype=np.int64)
