"""Tables read a batch of rows at a time, and the scratch files of passes over them.

A `Batches` yields a table as pandas frames of at most `batch_rows` rows, indexed by their row
number in the table, with the dtypes the whole table read at once would have (an integer column
with a missing value anywhere is float64 in every batch, a boolean one object), so that a batch's
rows hash and clean as they would in the whole table. Or it yields the table's blocks: pieces
fixed by the data, whatever the batch size (a Parquet file's row groups), over which statistics
that depend on the order of additions are computed, so that they do not depend on the batch size.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from semops.errors import SemopsError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

T = TypeVar("T")


class Batches(Protocol):
    columns: list[str]
    rows: int
    batch_rows: int
    blocks: int

    def frames(
        self, columns: list[str] | None = None, blocks: bool = False
    ) -> Iterator[pd.DataFrame]:
        """The table's rows in order, a batch (or a block) at a time (only `columns`, when
        given)."""
        ...

    def empty(self) -> pd.DataFrame:
        """No rows: the columns and their dtypes."""
        ...


class FrameBatches:
    """A DataFrame in memory, in batches numbered by row like a file's (`labels`: its index)."""

    def __init__(
        self, frame: pd.DataFrame, batch_rows: int | None = None, block_rows: int | None = None
    ) -> None:
        self.labels = frame.index
        self.frame = frame.reset_index(drop=True)
        self.columns = [str(c) for c in frame.columns]
        self.rows = len(frame)
        self.batch_rows = batch_rows or max(self.rows, 1)
        self.block_rows = block_rows or max(self.rows, 1)
        self.blocks = max(1, -(-self.rows // self.block_rows))

    def frames(
        self, columns: list[str] | None = None, blocks: bool = False
    ) -> Iterator[pd.DataFrame]:
        frame = self.frame if columns is None else self.frame[columns]
        step = self.block_rows if blocks else self.batch_rows
        for start in range(0, max(self.rows, 1), step):
            yield frame.iloc[start : start + step]

    def empty(self) -> pd.DataFrame:
        return self.frame.head(0)


class ParquetBatches:
    """A Parquet file read in record batches of `batch_rows` rows (`ParquetFile.iter_batches`).
    `widened`: its `widened_columns`, when known (they may cost a read of whole columns)."""

    def __init__(self, path: Path, batch_rows: int, widened: set[str] | None = None) -> None:
        import pyarrow.parquet as pq

        if not path.exists():
            raise SemopsError(f"{path}: file not found")
        self.path, self.batch_rows = path, batch_rows
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise SemopsError(f"{path}: not a valid Parquet file ({exc})") from exc
        self.columns = [str(name) for name in self.file.schema_arrow.names]
        self.rows = self.file.metadata.num_rows
        self.blocks = max(1, self.file.metadata.num_row_groups)
        self.widened = widened_columns(self.file) if widened is None else widened

    def frames(
        self, columns: list[str] | None = None, blocks: bool = False
    ) -> Iterator[pd.DataFrame]:
        for group in range(self.file.metadata.num_row_groups):
            yield from self.group_frames(group, columns, blocks)
        if not self.rows:  # no rows: one empty batch, with the columns
            empty = self.empty()
            yield empty if columns is None else empty[columns]

    def group_frames(
        self, group: int, columns: list[str] | None = None, blocks: bool = False
    ) -> Iterator[pd.DataFrame]:
        """The batches (or the one block) of row group `group`."""
        import pandas as pd
        import pyarrow as pa

        meta = self.file.metadata
        offset = sum(meta.row_group(i).num_rows for i in range(group))
        if blocks:
            tables: Iterator[pa.Table] = iter([self.file.read_row_group(group, columns=columns)])
        else:
            batches = self.file.iter_batches(self.batch_rows, [group], columns)
            tables = (pa.Table.from_batches([batch]) for batch in batches)
        for table in tables:
            frame = as_frame(table, self.widened)
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            offset += len(frame)
            yield frame

    def empty(self) -> pd.DataFrame:
        return as_frame(self.file.schema_arrow.empty_table(), self.widened)


def widened_columns(file: Any) -> set[str]:
    """Integer and boolean columns with a missing value in some row group: pandas reads them
    as float64 and object, as it reads the whole file."""
    import pyarrow as pa

    schema, meta = file.schema_arrow, file.metadata
    kinds = (pa.types.is_integer, pa.types.is_boolean)
    wanted = [field.name for field in schema if any(kind(field.type) for kind in kinds)]
    leaves = {file.schema.column(j).path: j for j in range(len(file.schema))}
    widened = set()
    for name in wanted:
        nulls: list[int | None] = [None]
        if name in leaves:
            nulls = []
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(leaves[name]).statistics
                known = stats is not None and stats.has_null_count
                nulls.append(stats.null_count if known else None)
        if None in nulls:  # no statistics: count them
            nulls = [file.read(columns=[name]).column(0).null_count]
        if any(nulls):
            widened.add(name)
    return widened


def as_frame(table: pa.Table, widened: set[str]) -> pd.DataFrame:
    import pyarrow as pa

    for name in widened & set(table.column_names):
        if pa.types.is_integer(table.schema.field(name).type):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table.column(name).cast(pa.float64()))
    frame = table.to_pandas()
    for name in widened & set(frame.columns):
        if frame[name].dtype == bool:
            frame[name] = frame[name].astype(object)
    return frame


# ----------------------------------------------------------------------- scratch files


@contextlib.contextmanager
def scratch(near: Path | None = None) -> Iterator[Path]:
    """A private temporary folder in `near` (the system's temporary folder when None), removed at
    the end. The scratch files of a large table belong beside its outputs, on their disk: a
    memory-backed /tmp may not hold them."""
    if near is not None:
        near.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".spill-", dir=near))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Column:
    """A column of fixed-width numbers appended to a file and read back in chunks: per-row
    values of a table too large to keep in memory."""

    def __init__(self, path: Path, dtype: Any) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self.length = 0
        path.touch()

    def append(self, values: np.ndarray) -> None:
        with open(self.path, "ab") as fh:
            np.ascontiguousarray(values, dtype=self.dtype).tofile(fh)
        self.length += len(values)

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as fh:
            while True:
                chunk = np.fromfile(fh, dtype=self.dtype, count=rows)
                if not len(chunk):
                    return
                yield chunk

    def read(self, start: int, count: int) -> np.ndarray:
        with open(self.path, "rb") as fh:
            offset = start * self.dtype.itemsize
            return np.fromfile(fh, dtype=self.dtype, count=count, offset=offset)


class Cursor:
    """Sequential reads of a `Column`: the next `count` values, one call after another."""

    def __init__(self, column: Column) -> None:
        self.fh = open(column.path, "rb")  # noqa: SIM115 (closed by close())
        self.dtype = column.dtype

    def take(self, count: int) -> np.ndarray:
        return np.fromfile(self.fh, dtype=self.dtype, count=count)

    def close(self) -> None:
        self.fh.close()


class Engine(Protocol):
    def map(
        self,
        fn: Callable[[pd.DataFrame], T],
        batches: Batches,
        columns: list[str] | None = None,
        blocks: bool = False,
    ) -> Iterator[T]:
        """`fn` of each batch (or block) of `batches` (only `columns`, when given), in the
        table's order."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a cluster connection): the stages close it."""
        ...


class LocalEngine:
    """This process, one batch after another: the default."""

    def map(
        self,
        fn: Callable[[pd.DataFrame], T],
        batches: Batches,
        columns: list[str] | None = None,
        blocks: bool = False,
    ) -> Iterator[T]:
        for frame in batches.frames(columns, blocks):
            yield fn(frame)

    def close(self) -> None:
        pass  # holds nothing
