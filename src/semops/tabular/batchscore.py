"""Scoring a file of raw rows in batches: CSV or Parquet in, Parquet or CSV out, memory bounded
by the batch size whatever the file's size. The output is written to a temporary file and renamed
into place, so it is complete or absent."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semops.errors import SemopsError
from semops.io import atomic_path
from semops.progress import Progress
from semops.tabular.scoring import (
    InputError,
    RawScorer,
    check_columns,
    predicted_index,
    prediction_columns,
    raw_numbers,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

log = logging.getLogger(__name__)

BATCH_ROWS = 65_536
FORMATS = (".csv", ".parquet")


@dataclass(frozen=True)
class Scored:
    rows: int
    output: Path
    kept: list[str]


def file_format(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SemopsError(f"{path}: the {role} must be .csv or .parquet, not {suffix or 'none'!r}")
    return suffix


def input_columns(path: Path) -> list[str]:
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    if not path.exists():
        raise SemopsError(f"{path}: no such file")
    if file_format(path, "input") == ".parquet":
        return [str(name) for name in pq.ParquetFile(path).schema_arrow.names]
    with pv.open_csv(path) as reader:
        return [str(name) for name in reader.schema.names]


def arrow_schema(path: Path, schema: dict[str, Any]) -> pa.Schema:
    """The input's columns and types as read: a Parquet file's own, a CSV's as `csv_types`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if file_format(path, "input") == ".parquet":
        return pq.ParquetFile(path).schema_arrow
    return pa.schema(list(csv_types(input_columns(path), schema).items()))


def csv_types(names: list[str], schema: dict[str, Any]) -> dict[str, pa.DataType]:
    """Model columns that held numbers in the raw data as numbers (a categorical coded as
    numbers too: `1.0` and `1` are one category), all others as text: types inferred per block
    could change between blocks."""
    import pyarrow as pa

    numbers = {c["name"] for c in schema["columns"] if raw_numbers(c["dtype"])}
    return {name: pa.float64() if name in numbers else pa.string() for name in names}


def kept_columns(available: list[str], schema: dict[str, Any], keep: list[str] | None) -> list[str]:
    """Columns copied from the input to the output beside the predictions: `keep` when given,
    else the key columns and every column the model does not read (ids, the target)."""
    if keep is not None:
        missing = [name for name in keep if name not in available]
        if missing:
            raise SemopsError(
                f"--keep: column {missing[0]!r} is not in the input; it has: {', '.join(available)}"
            )
        return keep
    read = {column["name"] for column in schema["columns"]}
    return [name for name in available if name in schema["key"] or name not in read]


def read_batches(path: Path, schema: dict[str, Any], rows: int) -> Iterator[pa.RecordBatch]:
    """The input in batches of about `rows` rows (CSV: typed by `csv_types`)."""
    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    if file_format(path, "input") == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=rows)
        return
    names = input_columns(path)
    convert = pv.ConvertOptions(column_types=csv_types(names, schema), strings_can_be_null=True)
    # About 100 bytes a row: blocks near the batch size without reading the file to count.
    read = pv.ReadOptions(block_size=max(1 << 20, rows * 100))
    try:
        with pv.open_csv(path, read_options=read, convert_options=convert) as reader:
            for block in reader:
                for start in range(0, block.num_rows, rows):
                    yield block.slice(start, rows)
    except pa.ArrowInvalid as exc:
        raise csv_error(path, names, exc) from exc


def csv_error(path: Path, names: list[str], exc: Exception) -> SemopsError:
    """pyarrow names a CSV column by its number: name it by its header."""
    found = re.search(
        r"CSV column #(\d+): CSV conversion error to \w+: invalid value (.*)", str(exc)
    )
    if found is None:
        return SemopsError(f"{path}: cannot read as CSV ({exc})")
    name = names[int(found.group(1))]
    return InputError(
        name, f"{path}: column {name!r} is numeric; it holds {found.group(2)} (not a number)"
    )


def total_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows if path.suffix.lower() == ".parquet" else None


def score_file(
    scorer: RawScorer,
    source: Path,
    output: Path,
    keep: list[str] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Scored:
    """Score every row of `source` into `output`: the kept columns, then a probability column
    per class and the prediction. An error names the column, and the row (counted from 0) where
    the value was read (a CSV value that is not a number fails as it is read, with its text)."""
    available = input_columns(source)
    check_columns(available, scorer.schema)
    kept = kept_columns(available, scorer.schema, keep)
    out_format = file_format(output, "output")
    done = 0
    with (
        atomic_path(output) as tmp,
        Progress(log, "predict", total_rows(source), "rows", 10 * batch_rows) as progress,
    ):
        writer: Any = None
        try:
            for batch in read_batches(source, scorer.schema, batch_rows):
                table = scored_table(scorer, batch, kept, done)
                if writer is None:
                    writer = open_writer(tmp, out_format, table.schema)
                writer.write_table(table)
                done += len(batch)
                progress.update(len(batch))
            if writer is None:  # no rows: still a file, with the columns
                empty = arrow_schema(source, scorer.schema).empty_table()
                writer = open_writer(tmp, out_format, scored_table(scorer, empty, kept, 0).schema)
        finally:
            if writer is not None:
                writer.close()
    return Scored(done, output, kept)


def scored_table(
    scorer: RawScorer, batch: pa.RecordBatch | pa.Table, kept: list[str], offset: int
) -> pa.Table:
    """The kept columns of `batch` as read, then the predictions. Rows are numbered from
    `offset`, so that an error names the row of the file."""
    import pandas as pd
    import pyarrow as pa

    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    model_columns = [column["name"] for column in scorer.schema["columns"]]
    rows = table.select(model_columns).to_pandas()
    rows.index = pd.RangeIndex(offset, offset + len(rows))
    try:
        proba = scorer.predict_proba(rows)
    except InputError as exc:
        raise InputError(exc.column, f"{exc} (rows counted from 0 in the file)") from exc
    return pa.Table.from_arrays(
        [*(table.column(name) for name in kept), *prediction_arrays(proba, scorer.classes)],
        names=[*kept, *prediction_columns(scorer.classes)],
    )


def prediction_arrays(proba: np.ndarray, classes: list[str]) -> list[pa.Array]:
    """As `scoring.prediction_frame`, as Arrow columns: no pandas frame to build and join."""
    import pyarrow as pa

    predicted = pa.array(classes, pa.string()).take(pa.array(predicted_index(proba)))
    return [*(pa.array(proba[:, k]) for k in range(len(classes))), predicted]


def open_writer(path: Path, out_format: str, schema: pa.Schema) -> Any:
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    if out_format == ".parquet":
        return pq.ParquetWriter(path, schema, compression="zstd")
    return pv.CSVWriter(path, schema)
