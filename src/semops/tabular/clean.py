"""Cleaning and splitting: a raw table, read a batch at a time, to typed, deduplicated splits.

Memory is bounded by the batch size, whatever the table's size. The passes over the raw rows:

1. scan: clean each batch (`semops.tabular.cleaning`); count what was set missing; gather each
   categorical column's distinct values (its categories: bounded by the distinct count); write
   each kept row's split hash, class and row number to scratch files (8 + 4 + 8 = 20 bytes a
   row, on disk), and its content hash and row number to the duplicate finder's partitions
   (`semops.tabular.dedup`: 16 bytes a row more, 36 in all);
2. only where some rows share a content hash: those rows cleaned again, written to scratch
   files, and compared by value;
3. after the splits are planned from the scratch files (`semops.tabular.splits`): clean each
   batch again, drop the duplicates, and hand each split its rows, in the raw table's order.

The results equal those of cleaning the whole table at once: every rule is per row or exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from semops.config.schema import DataConfig, SplitConfig
from semops.errors import SemopsError
from semops.paths import SPLITS
from semops.tabular import dedup
from semops.tabular.cleaning import (
    EXAMPLE_ROWS,
    arrow_rows,
    check_inferred_categorical,
    check_target,
    clean_batch,
    clean_column,
    column_kinds,
    content_hash,
    input_schema,
    normalise_categorical,
    normalised_texts,
    row_hash,
    too_many_distinct,
)
from semops.tabular.columns import normalised_label
from semops.tabular.splits import assign_splits, plan_overrides, split_codes
from semops.tabular.stream import (
    Batches,
    Column,
    Cursor,
    Engine,
    FrameBatches,
    LocalEngine,
    scratch,
)

__all__ = [  # the rules' home is semops.tabular.cleaning; these are imported from here too
    "assign_splits", "clean_column", "normalise_categorical", "normalised_label", "row_hash",
]  # fmt: skip

CHUNK_ROWS = 1 << 20
"""Rows of the scratch files read at a time."""


@dataclass
class BatchScan:
    """What the first pass learns from one batch (`scan_batch`): merged by `Scan.add`."""

    rows: int
    set_missing: dict[str, dict[str, int]]
    kept: np.ndarray  # row numbers of the rows with a target
    split_hashes: np.ndarray
    content_hashes: np.ndarray
    labels: np.ndarray  # their classes
    distinct: dict[str, tuple[list[Any], np.ndarray]]  # per categorical: values, rows of each
    whole: tuple[pd.DataFrame, pd.DataFrame] | None = None  # a table of one batch: raw, cleaned


def scan_batch(
    raw: pd.DataFrame, cfg: DataConfig, kinds: dict[str, str], seed: int, whole: bool
) -> BatchScan:
    """Pass 1's work on one batch. `whole`: the batch is the table, kept, cleaned, for the
    passes after (its categories are the table's): a small table is cleaned once."""
    cleaned, set_missing = clean_batch(raw, cfg, kinds, {})
    keep = cleaned[cfg.target].notna().to_numpy()
    distinct = {}
    for name in [cfg.target, *(n for n, kind in kinds.items() if kind == "categorical")]:
        codes, uniques = pd.factorize(raw[name], use_na_sentinel=True)
        distinct[name] = (list(uniques), np.bincount(codes[codes >= 0], minlength=len(uniques)))
    return BatchScan(
        rows=len(raw),
        set_missing=set_missing,
        kept=raw.index.to_numpy(dtype=np.int64)[keep],
        split_hashes=row_hash(raw[cfg.key] if cfg.key else raw, seed)[keep],
        content_hashes=content_hash(cleaned.loc[keep]),
        labels=cleaned[cfg.target].to_numpy()[keep],
        distinct=distinct,
        whole=(raw, cleaned) if whole else None,
    )


@dataclass
class Scan:
    """The first pass's results, merged over the batches in order."""

    cfg: DataConfig
    kinds: dict[str, str]
    folder: Path
    rows: int = 0
    set_missing: dict[str, dict[str, int]] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)  # class -> number, by first appearance
    distinct: dict[str, dict[Any, int]] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    duplicates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    whole: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def __post_init__(self) -> None:
        self.row_numbers = Column(self.folder / "rows", np.int64)
        self.hashes = Column(self.folder / "split-hashes", np.uint64)
        # Class numbers fit 32 bits: 2**31 class names would not fit in memory (`names`).
        self.labels = Column(self.folder / "labels", np.int32)

    def add(self, part: BatchScan, total_rows: int) -> None:
        self.rows += part.rows
        for reason, counts in part.set_missing.items():
            merged = self.set_missing.setdefault(reason, {})
            for name, count in counts.items():
                merged[name] = merged.get(name, 0) + count
        codes, uniques = pd.factorize(part.labels)
        numbers = np.array([self.names.setdefault(str(u), len(self.names)) for u in uniques])
        self.whole = part.whole
        self.row_numbers.append(part.kept)
        self.hashes.append(part.split_hashes)
        self.labels.append(numbers[codes] if len(codes) else codes)
        for name, (values, rows) in part.distinct.items():
            seen = self.distinct.setdefault(name, {})
            for value, count in zip(values, rows.tolist(), strict=True):
                seen[value] = seen.get(value, 0) + count
            if name in self.inferred and too_many_distinct(len(seen), total_rows):
                check_inferred_categorical(name, list(seen), np.fromiter(seen.values(), int))

    @property
    def inferred(self) -> set[str]:
        return {n for n, kind in self.kinds.items() if kind == "categorical"} - set(self.cfg.types)

    def finish(self) -> None:
        """Check the inferred categoricals; fix every categorical column's categories."""
        for name, seen in self.distinct.items():
            rows = np.fromiter(seen.values(), int)
            if name in self.inferred:
                check_inferred_categorical(name, list(seen), rows)
            self.categories[name] = sorted(
                {t for t in normalised_texts(list(seen)) if t is not None}
            )

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Split hash, class and row number of the kept rows, duplicates left out."""
        parts = zip(
            self.hashes.chunks(CHUNK_ROWS),
            self.labels.chunks(CHUNK_ROWS),
            self.row_numbers.chunks(CHUNK_ROWS),
            strict=True,
        )
        for hashes, labels, rows in parts:
            keep = ~np.isin(rows, self.duplicates[self.duplicates_between(rows)])
            yield hashes[keep], labels[keep], rows[keep]

    def pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return ((hashes, labels) for hashes, labels, _ in self.chunks())

    def duplicates_between(self, rows: np.ndarray) -> slice:
        if not len(rows):
            return slice(0, 0)
        lo, hi = np.searchsorted(self.duplicates, [rows[0], rows[-1]], side="left")
        return slice(int(lo), int(hi) + 1)


def scan(batches: Batches, cfg: DataConfig, seed: int, engine: Engine, folder: Path) -> Scan:
    """Passes 1 and 2: what cleaning every row learns, and which rows are duplicates."""
    cfg.check_columns(batches.columns)
    kinds = column_kinds(batches.empty(), cfg)
    result = Scan(cfg, kinds, folder)
    partitions = dedup.HashPartitions(folder, batches.rows)
    whole = batches.rows <= batches.batch_rows and batches.blocks == 1
    for part in engine.map(lambda raw: scan_batch(raw, cfg, kinds, seed, whole), batches):
        result.add(part, batches.rows)
        partitions.add(part.content_hashes, part.kept)
    result.finish()
    candidates = partitions.candidates()
    if not len(candidates):
        return result
    categories = result.categories

    def candidate_rows(raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        # A batch's rows are a range (no pass over an empty table looks for duplicates).
        lo = np.searchsorted(candidates, raw.index[0], side="left")
        hi = np.searchsorted(candidates, raw.index[-1], side="right")
        chosen = raw.loc[candidates[lo:hi]]
        cleaned, _ = clean_batch(chosen, cfg, kinds, categories)
        return cleaned, content_hash(cleaned)

    if result.whole is not None:
        chosen = result.whole[1].loc[candidates]
        work: Iterable[tuple[pd.DataFrame, np.ndarray]] = [(chosen, content_hash(chosen))]
    else:
        work = engine.map(candidate_rows, batches)
    with contextlib.closing(dedup.CandidateRows(folder, partitions.bits)) as rows:
        for cleaned, hashes in work:
            rows.add(cleaned, hashes, cleaned.index.to_numpy(dtype=np.int64))
        result.duplicates = rows.duplicates()
    return result


@dataclass
class Plan:
    """What the splits need before any row is written: the report so far, each class's rows,
    the key groups moved, the raw row numbers of the example rows."""

    report: dict[str, Any]
    overrides: dict[int, int]
    examples: np.ndarray


def plan(result: Scan, cfg: DataConfig, split: SplitConfig | None) -> Plan:
    """Count the classes of the kept rows, check them, and plan the splits (no split: one)."""
    counts = np.zeros(len(result.names), dtype=np.int64)
    for _, labels, _ in result.chunks():
        counts += np.bincount(labels, minlength=len(result.names))
    clean_rows, kept = int(counts.sum()), result.row_numbers.length
    if clean_rows == 0:
        raise SemopsError(f"data set {cfg.name!r} is empty after cleaning ({result.rows} raw rows)")
    classes = pd.Series(counts, index=list(result.names)).sort_index()
    classes = classes[classes > 0]
    check_target(classes, cfg)
    result.categories[cfg.target] = [str(name) for name in classes.index]
    report = {
        "rows": {"raw": result.rows, "clean": clean_rows},
        "dropped": {"missing_target": result.rows - kept, "duplicates": kept - clean_rows},
        "set_missing": {reason: result.set_missing.get(reason, {})
                        for reason in ("impossible", "unparseable", "non_finite")},
        "classes": {str(k): int(v) for k, v in classes.items()},
    }  # fmt: skip
    if split is None:
        return Plan(report, {}, np.zeros(0, dtype=np.int64))
    names = list(result.names)
    overrides = plan_overrides(result.pairs, names, cfg.target, split)
    examples: list[np.ndarray] = []
    for hashes, _, rows in result.chunks():
        examples.append(rows[split_codes(hashes, split, overrides) == SPLITS.index("test")])
        if sum(map(len, examples)) >= EXAMPLE_ROWS:
            break
    return Plan(report, overrides, np.concatenate(examples)[:EXAMPLE_ROWS])


def clean_rows(
    raw: pd.DataFrame, cfg: DataConfig, kinds: dict[str, str], categories: dict[str, list[str]],
    examples: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Pass 3's work on one batch: its rows with a target, cleaned; its example rows, raw."""
    cleaned, _ = clean_batch(raw, cfg, kinds, categories)
    return cleaned.loc[cleaned[cfg.target].notna()], raw.loc[raw.index.isin(examples)]


def emit(
    batches: Batches, result: Scan, planned: Plan, split: SplitConfig | None, engine: Engine,
    sink: Callable[[int, pd.DataFrame], None],
) -> pd.DataFrame:  # fmt: skip
    """Pass 3: each split's rows handed to `sink(split code, rows)` in the raw table's order;
    returns the example rows, raw."""
    hashes = Cursor(result.hashes)
    examples = []
    try:
        for cleaned, example in rows_to_write(batches, result, planned.examples, engine):
            rows = cleaned.index.to_numpy(dtype=np.int64)
            codes = np.zeros(len(rows), dtype=np.int8)
            if split is not None:
                codes = split_codes(hashes.take(len(rows)), split, planned.overrides)
            codes[np.isin(rows, result.duplicates[result.duplicates_between(rows)])] = -1
            for code in range(3 if split is not None else 1):
                sink(code, cleaned.loc[codes == code])
            examples.append(example)
    finally:
        hashes.close()
    return pd.concat(examples)


def rows_to_write(
    batches: Batches, result: Scan, examples: np.ndarray, engine: Engine
) -> Iterable[tuple[pd.DataFrame, pd.DataFrame]]:
    """Pass 3's work on every batch (`clean_rows`), or on the table of one batch kept by pass
    1: the same rows, cleaned once."""
    cfg, kinds, categories = result.cfg, result.kinds, result.categories
    if result.whole is None:
        return engine.map(lambda raw: clean_rows(raw, cfg, kinds, categories, examples), batches)
    raw, cleaned = result.whole
    target = cleaned[cfg.target].cat.set_categories(categories[cfg.target])
    kept = cleaned.assign(**{cfg.target: target}).loc[target.notna()]
    return [(kept, raw.loc[raw.index.isin(examples)])]


def clean_batches(
    batches: Batches, data: DataConfig, split: SplitConfig | None, engine: Engine, folder: Path,
    sink: Callable[[int, pd.DataFrame], None],
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Clean and split a table read in batches: each split's rows go to `sink`. Returns the
    report of what changed (with each split's rows) and the input schema (`input_schema`)."""
    result = scan(batches, data, split.seed if split else 0, engine, folder)
    planned = plan(result, data, split)
    counted = [0, 0, 0]

    def counting(code: int, rows: pd.DataFrame) -> None:
        counted[code] += len(rows)
        sink(code, rows)

    example = emit(batches, result, planned, split, engine, counting)
    if split is not None:
        planned.report["split"] = dict(zip(SPLITS, counted, strict=True))
    empty = batches.empty()
    cleaned, _ = clean_batch(empty, data, result.kinds, result.categories)
    return planned.report, input_schema(empty, cleaned, data, example)


def clean_table(raw: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Type, normalise and deduplicate a raw table in memory; return it with a report of what
    changed. The kept rows keep their index in the raw table."""
    parts: list[pd.DataFrame] = []
    batches = FrameBatches(raw)
    with scratch() as folder:
        report, _ = clean_batches(batches, cfg, None, LocalEngine(), folder,
                                  lambda _, rows: parts.append(rows))  # fmt: skip
    table = pd.concat(parts)
    table.index = batches.labels[table.index.to_numpy()]
    return table, report


def clean_and_split(
    raw: pd.DataFrame, data: DataConfig, split: SplitConfig, batch_rows: int | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any]]:
    """The clean stage on a table in memory: its splits, the report and the input schema (what
    a model trained on these splits takes as a raw row, with a few raw test rows as example)."""
    parts: list[list[pd.DataFrame]] = [[], [], []]
    batches = FrameBatches(raw, batch_rows)
    with scratch() as folder:
        report, schema = clean_batches(batches, data, split, LocalEngine(), folder,
                                       lambda code, rows: parts[code].append(rows))  # fmt: skip
    splits = {name: pd.concat(parts[code]).reset_index(drop=True)
              for code, name in enumerate(SPLITS)}  # fmt: skip
    return splits, report, schema


def clean_file(
    source: Path, outputs: dict[str, Path], data: DataConfig, split: SplitConfig,
    batch_rows: int, engine: Engine,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The clean stage: the raw Parquet file `source` to one Parquet file per split (`outputs`,
    by split name), each written whole or not at all; returns the report and input schema."""
    from semops.io import parquet_stream
    from semops.tabular.stream import ParquetBatches

    batches = ParquetBatches(source, batch_rows)
    with contextlib.ExitStack() as stack, scratch(outputs["train"].parent) as folder:
        streams = [stack.enter_context(parquet_stream(outputs[name])) for name in SPLITS]

        def write(code: int, rows: pd.DataFrame) -> None:
            if len(rows):
                streams[code].write(arrow_rows(rows, streams[code].schema))

        return clean_batches(batches, data, split, engine, folder, write)
