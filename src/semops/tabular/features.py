"""Featurization fitted on the training split only, saved as readable JSON, applied to every split.

Numerics are imputed (median or mean) and standardised; categoricals are one-hot encoded over
the categories seen in training, an unseen or missing category encoding as all zeros, at most
`max_categories` of them (the most frequent) with a feature each, the rarer ones sharing one
`<column>=<OTHER>` feature; free text becomes TF-IDF features (`semops.tabular.text`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semops.config.schema import FeaturizeConfig
from semops.errors import SemopsError
from semops.tabular.columns import normalised_label
from semops.tabular.featureio import LABEL
from semops.tabular.stats import Moments, exact_medians
from semops.tabular.text import feature_name, fit_vocabulary, term_rows, text_matrix

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from semops.tabular.stream import Batches, Engine


# The feature of a column's categories merged by max_categories. Categories are casefolded by the
# clean stage, so no category can be spelt with capitals: no real category collides with it.
OTHER = "<OTHER>"


def fit_featurizer(
    train: pd.DataFrame, schema: dict[str, Any], positive: str | None, cfg: FeaturizeConfig
) -> dict[str, Any]:
    """Fit imputation, scaling and encoding on the training split in memory (`fit_batches`)."""
    from semops.tabular.stream import FrameBatches, LocalEngine

    return fit_batches(FrameBatches(train), schema, positive, cfg, LocalEngine())


def fit_batches(
    train: Batches, schema: dict[str, Any], positive: str | None, cfg: FeaturizeConfig,
    engine: Engine,
) -> dict[str, Any]:  # fmt: skip
    """Fit imputation, scaling and encoding on the training split, read in batches, as a
    JSON-able spec.

    `schema` is the clean stage's input schema (`clean.input_schema`): it says how each column
    is encoded, and the spec carries it, so that the spec alone turns raw rows into features.
    The spec has `other` (categories merged per column) and `text` (vocabulary and idf per
    column) only where a column has them, so a data set without either keeps its spec."""
    target = schema["target"]
    kinds = {column["name"]: column["kind"] for column in schema["columns"]}
    kinds = {name: kinds[name] for name in train.columns if name != target}
    seen = FitPartial()
    for part in engine.map(lambda rows: FitPartial.of(rows, target, kinds), train):
        seen.merge(part)
    observed = sorted(seen.classes)
    if positive is None:
        classes = observed
    else:
        positive_label = normalised_label(positive)
        classes = [*(c for c in observed if c != positive_label), positive_label]
    numeric = fit_numerics(train, [n for n, k in kinds.items() if k == "numeric"], seen, cfg,
                           engine)  # fmt: skip
    categorical: dict[str, list[str]] = {}
    other: dict[str, list[str]] = {}
    text: dict[str, dict[str, Any]] = {}
    for name, kind in kinds.items():
        if kind == "categorical":
            categorical[name], merged = fit_categories(seen.counts[name], cfg)
            if merged:
                other[name] = merged
        elif kind == "text":
            text[name] = fit_vocabulary(*seen.terms[name], cfg.text_features)
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


@dataclass
class FitPartial:
    """What fitting counts in some training rows: merged over the batches, in any order."""

    classes: set[str] = field(default_factory=set)
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # categorical
    terms: dict[str, tuple[int, Counter[str]]] = field(default_factory=dict)  # text
    present: dict[str, int] = field(default_factory=dict)  # numeric: values, largest size
    largest: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: pd.DataFrame, target: str, kinds: dict[str, str]) -> FitPartial:
        part = cls(classes={str(c) for c in rows[target].dropna().unique()})
        for name, kind in kinds.items():
            if kind == "categorical":
                part.counts[name] = Counter(
                    {str(c): int(n) for c, n in rows[name].value_counts().items() if n}
                )
            elif kind == "text":
                part.terms[name] = term_rows(rows[name])
            else:
                values = rows[name].to_numpy(dtype=np.float64, na_value=np.nan)
                present = values[~np.isnan(values)]
                part.present[name] = len(present)
                part.largest[name] = float(np.abs(present).max()) if len(present) else 0.0
        return part

    def merge(self, other: FitPartial) -> None:
        self.classes |= other.classes
        for name, counts in other.counts.items():
            self.counts.setdefault(name, Counter()).update(counts)
        for name, (rows, terms) in other.terms.items():
            before, seen = self.terms.get(name, (0, Counter()))
            seen.update(terms)
            self.terms[name] = (before + rows, seen)
        for name, present in other.present.items():
            self.present[name] = self.present.get(name, 0) + present
            self.largest[name] = max(self.largest.get(name, 0.0), other.largest[name])


def fit_numerics(
    train: Batches, names: list[str], seen: FitPartial, cfg: FeaturizeConfig, engine: Engine
) -> dict[str, dict[str, float]]:
    """Fill value, centre and scale of each numeric column: numpy's over the whole column when
    the split is one block, else exact medians and block-merged moments (`semops.tabular.stats`)."""
    if not names:
        return {}
    if train.blocks == 1:
        (block,) = train.frames(names, blocks=True)
        return {name: fit_numeric(name, block[name], cfg) for name in names}
    for name in names:
        if not seen.present[name]:
            raise SemopsError(f"column {name!r} has no values in the training split")

    def arrays(rows: pd.DataFrame) -> dict[str, np.ndarray]:
        return {str(c): rows[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in rows.columns}

    with np.errstate(over="ignore", invalid="ignore"):  # values near the float maximum
        if cfg.numeric_impute == "median":
            fills = exact_medians(seen.present, lambda cols: engine.map(arrays, train, cols))
        else:
            present = merged_moments(train, names, engine, lambda _, v: v[~np.isnan(v)])
            fills = {name: moments.mean for name, moments in present.items()}
        filled = merged_moments(
            train, names, engine, lambda name, v: np.where(np.isnan(v), fills[name], v)
        )
    return {
        name: numeric_spec(name, fills[name], filled[name].mean, filled[name].std,
                           seen.largest[name], cfg)
        for name in names
    }  # fmt: skip


def merged_moments(
    train: Batches, names: list[str], engine: Engine,
    values_of: Callable[[str, np.ndarray], np.ndarray],
) -> dict[str, Moments]:  # fmt: skip
    """Moments of `values_of(name, column)` of each block, merged in block order."""

    def block_moments(rows: pd.DataFrame) -> dict[str, Moments]:
        with np.errstate(over="ignore", invalid="ignore"):
            return {
                name: Moments.of(
                    values_of(name, rows[name].to_numpy(dtype=np.float64, na_value=np.nan))
                )
                for name in names
            }

    merged = {name: Moments() for name in names}
    for part in engine.map(block_moments, train, names, blocks=True):
        merged = {name: merged[name].merge(part[name]) for name in names}
    return merged


def fit_numeric(name: str, column: pd.Series, cfg: FeaturizeConfig) -> dict[str, float]:
    """Fill value, centre and scale of a numeric column in memory."""
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    present = values[~np.isnan(values)]
    if present.size == 0:
        raise SemopsError(f"column {name!r} has no values in the training split")
    with np.errstate(over="ignore", invalid="ignore"):  # values near the float maximum
        median = cfg.numeric_impute == "median"
        fill = float(np.median(present) if median else present.mean())
        filled = np.where(np.isnan(values), fill, values)
        mean, std = float(filled.mean()), float(filled.std())
    return numeric_spec(name, fill, mean, std, float(np.abs(present).max()), cfg)


def numeric_spec(
    name: str, fill: float, mean: float, std: float, largest: float, cfg: FeaturizeConfig
) -> dict[str, float]:
    if not np.isfinite([fill, mean, std]).all():
        raise SemopsError(
            f"column {name!r}: its mean or spread overflows a float (values up to "
            f"{largest:g}); bound it with a valid range in data.valid.{name}"
        )
    return {
        "fill": fill,
        "mean": mean if cfg.scale else 0.0,
        "std": std if cfg.scale and std > 0 else 1.0,
    }


def fit_categories(counts: Counter[str], cfg: FeaturizeConfig) -> tuple[list[str], list[str]]:
    """The categories of a column with a feature each, and those merged into its OTHER feature
    (both sorted), from each category's training rows (`counts`): of the categories seen at
    least min_category_count times in training (the rarer ones encode as all zeros, like unseen
    ones), the max_categories most frequent, ties alphabetical."""
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


def featurize_files(
    sources: dict[str, Path], outputs: dict[str, Path], schema: dict[str, Any],
    positive: str | None, cfg: FeaturizeConfig, batch_rows: int, engine: Engine,
) -> dict[str, Any]:  # fmt: skip
    """The featurize stage: fit on the `train` split's Parquet file, then transform each split
    (`sources`, by split name) into its Parquet file of features (`outputs`), a batch at a time,
    each file written whole or not at all. Returns the spec."""
    from semops.io import parquet_stream
    from semops.tabular.stream import ParquetBatches

    spec = fit_batches(ParquetBatches(sources["train"], batch_rows), schema, positive, cfg, engine)
    for name, source in sources.items():
        with parquet_stream(outputs[name]) as stream:
            for table in engine.map(lambda rows: transform(rows, spec),
                                    ParquetBatches(source, batch_rows)):  # fmt: skip
                stream.write(table)
    return spec
