"""The rules that clean raw rows, one batch at a time: how each column is typed and normalised,
the checks on the target and on inferred categoricals, and the hash that places a row in its
split. The clean stage applies them to every batch of the raw table (`semops.tabular.clean`), a
served model to every row it scores (`semops.tabular.scoring`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from semops.config.schema import DataConfig, ValidRange
from semops.errors import SemopsError
from semops.tabular.columns import is_categorical, normalised_label

_GOLDEN = 0x9E3779B97F4A7C15
WHITESPACE = re.compile(r"\s+")


def normalise_categorical(values: pd.Series, categories: list[str] | None = None) -> pd.Series:
    """Trim, casefold and collapse whitespace; empty strings become missing; a whole number
    stored as a float is written as an integer (`1.0` is `1`, as a column read as integers or
    as text spells it). The categories are `categories` (the whole column's, sorted, when these
    values are one batch of it) or else these values' own, sorted.

    Works on the distinct values only, so it costs the same for 1k or 10M rows.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = normalised_texts(uniques)
    if categories is None:
        categories = sorted({t for t in text if t is not None})
    position = {c: i for i, c in enumerate(categories)}
    remap = np.array([-1 if t is None else position.get(t, -1) for t in text], dtype=np.int64)
    new_codes = np.where(codes >= 0, remap[np.maximum(codes, 0)] if len(remap) else -1, -1)
    normalised = pd.Categorical.from_codes(new_codes, categories=pd.Index(categories))
    return pd.Series(normalised, index=values.index, name=values.name)


def normalised_texts(uniques: Iterable[Any]) -> list[str | None]:
    """The category each distinct raw value becomes (None where it is empty). Plain Python on
    the distinct values: pandas' string methods cost milliseconds a call, once per batch."""
    texts = [WHITESPACE.sub(" ", category_text(value).strip().casefold()) for value in uniques]
    return [text or None for text in texts]


def category_text(value: Any) -> str:
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def column_kinds(raw: pd.DataFrame, cfg: DataConfig) -> dict[str, str]:
    """How each feature column is cleaned and encoded, from the raw table's dtypes (`raw` may be
    any batch of it): as declared in data.types, else numeric for numbers and categorical for
    anything else. Whether an undeclared categorical is fit to be one is checked on its
    distinct values (`check_inferred_categorical`)."""
    kinds: dict[str, str] = {}
    for name in raw.columns:
        if name == cfg.target or name in cfg.drop:
            continue
        kind = cfg.types.get(name) or ("categorical" if is_categorical(raw[name]) else "numeric")
        if kind != "numeric" and name in cfg.valid:
            raise SemopsError(
                f"data.valid.{name}: {name!r} is {kind}; a valid range needs a numeric "
                "column (declare it in data.types if it should be numeric)"
            )
        kinds[str(name)] = kind
    return kinds


def clean_batch(
    raw: pd.DataFrame, cfg: DataConfig, kinds: dict[str, str], categories: dict[str, list[str]]
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """One batch of raw rows typed and normalised (same index; the dropped columns left out),
    and how many values were set missing per reason and column. `categories` holds each
    categorical column's categories (the whole table's); a column absent from it gets its
    batch's own."""
    set_missing: dict[str, dict[str, int]] = {"impossible": {}, "unparseable": {}, "non_finite": {}}
    columns: dict[str, pd.Series] = {}
    for name in raw.columns:
        if name in cfg.drop:
            continue
        column = raw[name]
        if name == cfg.target:
            columns[name] = normalise_categorical(column, categories.get(name))
            continue
        bounds = cfg.valid.get(name)
        columns[name], counts = clean_column(column, kinds[name], bounds, categories.get(name))
        for reason, count in counts.items():
            if count or (reason == "impossible" and bounds is not None):
                set_missing[reason][name] = count
    return pd.DataFrame(columns, index=raw.index), set_missing


def clean_column(
    column: pd.Series,
    kind: str,
    bounds: ValidRange | None,
    categories: list[str] | None = None,
) -> tuple[pd.Series, dict[str, int]]:
    """One feature column cleaned as `kind`, and how many values were set missing per reason
    (numeric columns only): the rule the clean stage applies and a served model applies to
    each raw row it scores."""
    if kind == "numeric":
        return clean_numeric(column, bounds)
    if kind == "text":
        return clean_text(column), {}
    return normalise_categorical(column, categories), {}


def clean_text(column: pd.Series) -> pd.Series:
    """Free text with its whitespace collapsed and stripped (case and punctuation kept: the
    featurizer reads them); empty text becomes missing. Works on the distinct values only."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    texts = np.array([" ".join(str(u).split()) or None for u in uniques] + [None], dtype=object)
    return pd.Series(texts[codes], index=column.index, name=column.name, dtype=object)


def arrow_rows(rows: pd.DataFrame, schema: Any) -> Any:
    """Cleaned rows as Arrow, cast to `schema`: the schema of every batch written to one file.
    None: these rows' own, fixed for the batches after (a text column missing in all these rows,
    which Arrow types null, taken as text): a later batch of another type cannot be written."""
    import pyarrow as pa

    table = pa.Table.from_pandas(rows, preserve_index=False)
    if schema is None:
        fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
        schema = pa.schema(fields, metadata=table.schema.metadata)
    return table.cast(schema)


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


def too_many_distinct(distinct: int, present: int) -> bool:
    return distinct > max(HIGH_CARDINALITY_DISTINCT, HIGH_CARDINALITY_SHARE * present)


def check_inferred_categorical(name: str, uniques: Sequence[Any], rows: np.ndarray) -> None:
    """Fail, naming the column, its distinct count, a sample value and the three ways out, when
    an undeclared non-numeric column would become hundreds of one-hot features that mean
    nothing: more than max(50, half its non-missing rows) distinct values, or free text (at
    least 20 distinct values, most with a space, of median length 30 characters or more).
    `uniques`: the column's distinct values in order of appearance; `rows`: how many rows hold
    each."""
    stripped = pd.Series([str(u).strip() for u in uniques], dtype=object)
    present = int(np.asarray(rows)[(stripped != "").to_numpy()].sum())
    distinct = pd.Series(stripped[stripped != ""].unique(), dtype=object)
    counted = f"{len(distinct)} distinct values in {present} non-missing rows"
    if (
        len(distinct) >= FREE_TEXT_DISTINCT
        and distinct.str.contains(r"\s", regex=True).mean() >= 0.5
        and distinct.str.len().median() >= FREE_TEXT_LENGTH
    ):
        looks = f"looks like free text ({counted})"
    elif too_many_distinct(len(distinct), present):
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


def content_hash(cleaned: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each cleaned row, equal for rows `DataFrame.duplicated` calls equal
    (-0.0 hashed as 0.0, every NaN alike); rows with equal hashes are compared value by value
    before one is dropped as a duplicate."""
    columns = {}
    for name in cleaned.columns:
        column = cleaned[name]
        if pd.api.types.is_float_dtype(column.dtype):
            values = column.to_numpy(dtype=np.float64) + 0.0
            column = pd.Series(np.where(np.isnan(values), np.nan, values), index=column.index)
        columns[name] = column
    return pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy()


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
