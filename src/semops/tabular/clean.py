"""Cleaning and splitting: pure functions from a raw table to typed, deduplicated splits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from semops.config.schema import DataConfig, SplitConfig, ValidRange
from semops.errors import SemopsError
from semops.paths import SPLITS
from semops.tabular.columns import is_categorical, normalised_label

_GOLDEN = 0x9E3779B97F4A7C15


def normalise_categorical(values: pd.Series) -> pd.Series:
    """Trim, casefold and collapse whitespace; empty strings become missing; a whole number
    stored as a float is written as an integer (`1.0` is `1`, as a column read as integers or
    as text spells it).

    Works on the distinct values only, so it costs the same for 1k or 10M rows.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = pd.Series([category_text(value) for value in uniques], dtype="object")
    text = text.str.strip().str.casefold().str.replace(r"\s+", " ", regex=True)
    text = text.mask(text == "")
    categories = sorted(text.dropna().unique())
    position = {c: i for i, c in enumerate(categories)}
    remap = np.array(
        [position.get(t, -1) if isinstance(t, str) else -1 for t in text], dtype=np.int64
    )
    new_codes = np.where(codes >= 0, remap[np.maximum(codes, 0)] if len(remap) else -1, -1)
    normalised = pd.Categorical.from_codes(new_codes, categories=pd.Index(categories))
    return pd.Series(normalised, index=values.index, name=values.name)


def category_text(value: Any) -> str:
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def clean_table(raw: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Type, normalise and deduplicate a raw table; return it with a report of what changed.

    The kept rows keep their index in the raw table, so each can be traced to its raw row.
    """
    cfg.check_columns([str(c) for c in raw.columns])
    table = raw.drop(columns=cfg.drop)
    # Values set missing, per reason and column (impossible: for each column with a valid range).
    set_missing: dict[str, dict[str, int]] = {"impossible": {}, "unparseable": {}, "non_finite": {}}
    columns: dict[str, pd.Series] = {}
    for name in table.columns:
        column = table[name]
        if name == cfg.target:
            columns[name] = normalise_categorical(column)
            continue
        kind = column_kind(str(name), column, cfg)
        bounds = cfg.valid.get(name)
        columns[name], counts = clean_column(column, kind, bounds)
        for reason, count in counts.items():
            if count or (reason == "impossible" and bounds is not None):
                set_missing[reason][name] = count
    table = pd.DataFrame(columns)
    rows_raw = len(table)

    missing_target = table[cfg.target].isna()
    table = table.loc[~missing_target]
    duplicated = table.duplicated()
    table = table.loc[~duplicated]
    if table.empty:
        raise SemopsError(f"data set {cfg.name!r} is empty after cleaning ({rows_raw} raw rows)")
    classes = table[cfg.target].value_counts().sort_index()
    classes = classes[classes > 0]
    check_target(classes, cfg)
    table[cfg.target] = table[cfg.target].cat.remove_unused_categories()
    report = {
        "rows": {"raw": rows_raw, "clean": len(table)},
        "dropped": {
            "missing_target": int(missing_target.sum()),
            "duplicates": int(duplicated.sum()),
        },
        "set_missing": set_missing,
        "classes": {str(k): int(v) for k, v in classes.items()},
    }
    return table, report


def column_kind(name: str, column: pd.Series, cfg: DataConfig) -> str:
    """How a feature column is cleaned and encoded: as declared in data.types, else numeric for
    numbers and categorical for anything else; an undeclared column that looks like free text or
    an id fails (see `check_inferred_categorical`)."""
    declared = cfg.types.get(name)
    kind = declared or ("categorical" if is_categorical(column) else "numeric")
    if declared is None and kind == "categorical":
        check_inferred_categorical(name, column)
    if kind != "numeric" and name in cfg.valid:
        raise SemopsError(
            f"data.valid.{name}: {name!r} is {kind}; a valid range needs a numeric "
            "column (declare it in data.types if it should be numeric)"
        )
    return kind


def clean_column(
    column: pd.Series, kind: str, bounds: ValidRange | None
) -> tuple[pd.Series, dict[str, int]]:
    """One feature column cleaned as `kind`, and how many values were set missing per reason
    (numeric columns only): the rule the clean stage applies and a served model applies to
    each raw row it scores."""
    if kind == "numeric":
        return clean_numeric(column, bounds)
    if kind == "text":
        return clean_text(column), {}
    return normalise_categorical(column), {}


def clean_text(column: pd.Series) -> pd.Series:
    """Free text with its whitespace collapsed and stripped (case and punctuation kept: the
    featurizer reads them); empty text becomes missing. Works on the distinct values only."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    texts = np.array([" ".join(str(u).split()) or None for u in uniques] + [None], dtype=object)
    return pd.Series(texts[codes], index=column.index, name=column.name, dtype=object)


# An undeclared column that would be one-hot encoded is refused when it has more distinct values
# than the larger of these (an id, or text: nearly one category per row) ...
HIGH_CARDINALITY_DISTINCT = 50
HIGH_CARDINALITY_SHARE = 0.5
# ... or when it looks like free text: this many distinct values, half of them with a space and
# their median length this long. The bundled sets' inferred categoricals have at most 6 levels
# (crashes' caseid, 9,409 ids, is dropped) of median length at most 19.5 characters (churn's
# payment_method): far from either.
FREE_TEXT_DISTINCT = 20
FREE_TEXT_LENGTH = 30
SAMPLE_CHARS = 60


def check_inferred_categorical(name: str, column: pd.Series) -> None:
    """Fail, naming the column, its distinct count, a sample value and the three ways out, when
    an undeclared non-numeric column would become hundreds of one-hot features that mean
    nothing: more than max(50, half its non-missing rows) distinct values, or free text (at
    least 20 distinct values, most with a space, of median length 30 characters or more)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)  # the distinct values only
    stripped = pd.Series([str(u).strip() for u in uniques], dtype=object)
    rows = np.bincount(codes[codes >= 0], minlength=len(uniques))
    present = int(rows[(stripped != "").to_numpy()].sum())
    distinct = pd.Series(stripped[stripped != ""].unique(), dtype=object)
    counted = f"{len(distinct)} distinct values in {present} non-missing rows"
    if (
        len(distinct) >= FREE_TEXT_DISTINCT
        and distinct.str.contains(r"\s", regex=True).mean() >= 0.5
        and distinct.str.len().median() >= FREE_TEXT_LENGTH
    ):
        looks = f"looks like free text ({counted})"
    elif len(distinct) > max(HIGH_CARDINALITY_DISTINCT, HIGH_CARDINALITY_SHARE * present):
        looks = f"has {counted}"
    else:
        return
    sample = " ".join(str(distinct.iloc[0]).split())
    if len(sample) > SAMPLE_CHARS:
        sample = sample[:SAMPLE_CHARS] + "..."
    raise SemopsError(
        f"column {name!r} {looks}, e.g. {sample!r}: one-hot encoding would make a feature of "
        f"each value. Declare `data.types.{name}: text` to featurize its words, "
        f"`data.types.{name}: categorical` to one-hot encode it anyway (featurize.max_categories "
        f"caps its width), or add it to data.drop"
    )


def clean_numeric(column: pd.Series, bounds: ValidRange | None) -> tuple[pd.Series, dict[str, int]]:
    """A numeric column as float64, and how many values were set missing for each reason:
    unparseable, non_finite (inf and -inf: no statistic or JSON file can hold them) and, with a
    valid range, impossible (outside it)."""
    numeric = pd.to_numeric(column, errors="coerce").astype("float64")
    counts = {"unparseable": int((numeric.isna() & column.notna()).sum())}
    infinite = pd.Series(np.isinf(numeric.to_numpy()), index=numeric.index)
    counts["non_finite"] = int(infinite.sum())
    numeric = numeric.mask(infinite)
    bad = pd.Series(False, index=numeric.index)
    if bounds is not None and bounds.min is not None:
        bad |= numeric < bounds.min
    if bounds is not None and bounds.max is not None:
        bad |= numeric > bounds.max
    counts["impossible"] = int(bad.sum())
    return numeric.mask(bad), counts


def check_target(classes: pd.Series, cfg: DataConfig) -> None:
    names = ", ".join(map(str, classes.index))
    if len(classes) < 2:
        raise SemopsError(
            f"data.target {cfg.target!r} has a single class ({names}); need at least two"
        )
    if len(classes) == 2:
        if cfg.positive is None:
            raise SemopsError(
                f"data.positive is required for the binary target {cfg.target!r}; classes: {names}"
            )
        if normalised_label(cfg.positive) not in classes.index:
            raise SemopsError(
                f"data.positive: {cfg.positive!r} is not a class of {cfg.target!r}; "
                f"classes: {names}"
            )
    elif cfg.positive is not None:
        raise SemopsError(
            f"data.positive is set to {cfg.positive!r}, but the target {cfg.target!r} has "
            f"{len(classes)} classes ({names}); remove it for a multiclass target"
        )


def row_hash(table: pd.DataFrame, seed: int) -> np.ndarray:
    """A 64-bit hash of each row's values, the same on every run and machine.

    Hashing the raw row (or its configured key columns), not the cleaned one, keeps every row in
    its split when cleaning settings change, so experiments share one test set.
    """
    hashed = pd.util.hash_pandas_object(table, index=False).to_numpy()
    # Multiply as Python ints, reduced mod 2**64: the same value numpy's wrapping uint64 product
    # gave, without its overflow RuntimeWarning (any seed >= 2) or OverflowError (seed < 0).
    return pd.util.hash_array(hashed ^ np.uint64(seed * _GOLDEN % 2**64))


def assign_splits(
    hashes: np.ndarray, labels: np.ndarray, target: str, cfg: SplitConfig
) -> np.ndarray:
    """Split code per row (0 train, 1 val, 2 test) from its row hash, so a row's split depends
    only on its key and the seed; then every class is guaranteed a row in every split.

    Rows with equal hashes (a shared `data.key`) form a group and always move together.
    """
    position = hashes.astype(np.float64) / 2.0**64
    bounds = np.array([cfg.train, cfg.train + cfg.val])
    split = np.searchsorted(bounds, position, side="right").astype(np.int8)
    centres = np.array([cfg.train / 2, cfg.train + cfg.val / 2, 1 - cfg.test / 2])
    classes = pd.unique(labels)
    for label in classes:
        groups = len(np.unique(hashes[labels == label]))
        if groups < 3:
            raise SemopsError(
                f"class {label!r} of {target!r} has {groups} row(s) (or key groups); each class "
                "needs at least 3 to appear in train, val and test"
            )
    # Moving a group can empty a split of another class: repeat until every class is placed.
    for _ in range(3 * len(classes)):
        missing = [
            (label, code)
            for label in classes
            for code in range(3)
            if not np.any(split[labels == label] == code)
        ]
        if not missing:
            return split
        label, code = missing[0]
        rows = np.flatnonzero(labels == label)
        donor = np.argmax(np.bincount(split[rows], minlength=3))
        candidates = rows[split[rows] == donor]
        chosen = candidates[np.argmin(np.abs(position[candidates] - centres[code]))]
        split[hashes == hashes[chosen]] = code
    raise SemopsError(
        f"cannot place every class of {target!r} in train, val and test with these key groups"
    )


def clean_and_split(
    raw: pd.DataFrame, data: DataConfig, split: SplitConfig
) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any]]:
    """The clean stage: clean the raw table, then split it by the hash of each raw row's key.

    Also returns the input schema: what a model trained on these splits takes as a raw row
    (see `input_schema`), with a few raw test rows as its example."""
    table, report = clean_table(raw, data)
    hashes = row_hash(raw[data.key] if data.key else raw, split.seed)[table.index]
    codes = assign_splits(hashes, table[data.target].to_numpy(), data.target, split)
    parts = {
        name: table.loc[codes == code].reset_index(drop=True) for code, name in enumerate(SPLITS)
    }
    report["split"] = {name: len(part) for name, part in parts.items()}
    test_rows = raw.loc[table.index[codes == SPLITS.index("test")]]
    return parts, report, input_schema(raw, table, data, test_rows.head(EXAMPLE_ROWS))


EXAMPLE_ROWS = 5


def input_schema(
    raw: pd.DataFrame, cleaned: pd.DataFrame, cfg: DataConfig, example: pd.DataFrame
) -> dict[str, Any]:
    """The raw columns a trained model reads (all but the target and the dropped ones), each
    with its dtype as downloaded, how it was cleaned (read off `cleaned`, `clean_table`'s
    result) and its valid range; the key columns; and `example` (raw rows) as JSON values."""
    features = [str(c) for c in raw.columns if c != cfg.target and c not in cfg.drop]
    columns = []
    for name in features:
        bounds = cfg.valid.get(name)
        columns.append(
            {
                "name": name,
                "dtype": str(raw[name].dtype),
                "kind": cleaned_kind(cleaned[name]),
                "min": bounds.min if bounds else None,
                "max": bounds.max if bounds else None,
            }
        )
    return {
        "columns": columns,
        "target": cfg.target,
        "key": list(cfg.key),
        "example": [
            {name: json_value(value) for name, value in zip(features, row, strict=True)}
            for row in example[features].itertuples(index=False)
        ],
    }


def cleaned_kind(column: pd.Series) -> str:
    """The kind a cleaned column was cleaned as: numeric ones are float64, categorical ones
    categories, text stays text."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return "categorical"
    return "numeric" if pd.api.types.is_float_dtype(column.dtype) else "text"


def json_value(value: Any) -> Any:
    """A raw cell as JSON: numbers as numbers, missing and non-finite ones as null, anything
    else (dates, bytes) as the text clean reads it as."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, str | int) else str(value)
