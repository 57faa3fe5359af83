"""Exact duplicate rows of a table larger than memory: the first occurrence kept, as
`DataFrame.duplicated` decides over the whole table.

A pass appends each row's 64-bit content hash and position to one of a few partition files, by
the hash's top bits (16 bytes a row, on disk). Rows whose hash occurs more than once in their
partition are the candidates; a second look at the candidates alone, again partitioned by hash,
compares their values with `duplicated`: equal rows always share a hash and so a partition, and a
hash collision never drops a distinct row. Memory: one partition of hash records (at most
`PARTITION_ROWS` of them, 16 MiB) or of candidate rows, and 8 bytes per candidate row.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semops.tabular.cleaning import arrow_rows
from semops.tabular.stream import Column

if TYPE_CHECKING:
    import pandas as pd

PARTITION_ROWS = 1 << 20
POSITION = "__position__"


def partition_bits(rows: int) -> int:
    """Bits of the hash that pick a partition: about `PARTITION_ROWS` rows in each."""
    return max(0, math.ceil(math.log2(max(rows, 1) / PARTITION_ROWS)))


def partition_of(hashes: np.ndarray, bits: int) -> np.ndarray:
    if not bits:
        return np.zeros(len(hashes), dtype=np.int64)
    return (hashes >> np.uint64(64 - bits)).astype(np.int64)


def by_partition(hashes: np.ndarray, bits: int) -> Iterator[tuple[int, np.ndarray]]:
    """(partition, the indices of `hashes` in it, in order) for each partition with a row."""
    part = partition_of(hashes, bits)
    order = np.argsort(part, kind="stable")
    cuts = np.searchsorted(part[order], np.arange(2**bits + 1))
    for k in range(2**bits):
        if cuts[k] < cuts[k + 1]:
            yield k, order[cuts[k] : cuts[k + 1]]


class HashPartitions:
    """Each row's content hash and position (counted from 0 over the rows added), by partition."""

    def __init__(self, folder: Path, rows: int) -> None:
        self.bits = partition_bits(rows)
        self.folder = folder
        parts = range(2**self.bits)
        self.hashes = [Column(folder / f"hash-{k}", np.uint64) for k in parts]
        self.positions = [Column(folder / f"position-{k}", np.int64) for k in parts]

    def add(self, hashes: np.ndarray, positions: np.ndarray) -> None:
        for k, rows in by_partition(hashes, self.bits):
            self.hashes[k].append(hashes[rows])
            self.positions[k].append(positions[rows])

    def candidates(self) -> np.ndarray:
        """Positions (sorted) of the rows whose hash another row shares."""
        found = []
        for hashes, positions in zip(self.hashes, self.positions, strict=True):
            h = hashes.read(0, hashes.length)
            order = np.argsort(h, kind="stable")
            same = h[order][1:] == h[order][:-1]
            shared = np.zeros(len(h), dtype=bool)
            shared[1:] |= same
            shared[:-1] |= same
            found.append(positions.read(0, positions.length)[order[shared]])
        return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


class CandidateRows:
    """The candidates' cleaned rows, by partition, and the duplicates among them. Open files
    until `duplicates` or `close`."""

    def __init__(self, folder: Path, bits: int) -> None:
        self.folder, self.bits = folder, bits
        self.schema: Any = None  # every partition's: the first rows' (`arrow_rows`)
        self.writers: dict[int, Any] = {}
        self.files = contextlib.ExitStack()

    def add(self, cleaned: pd.DataFrame, hashes: np.ndarray, positions: np.ndarray) -> None:
        import pyarrow as pa

        table = arrow_rows(cleaned.assign(**{POSITION: positions}), self.schema)
        self.schema = table.schema
        for k, rows in by_partition(hashes, self.bits):
            if k not in self.writers:
                # A stream writer given a path leaves that file open when closed: ours is.
                sink = self.files.enter_context(pa.OSFile(str(self.path(k)), "wb"))
                self.writers[k] = self.files.enter_context(pa.ipc.new_stream(sink, self.schema))
            self.writers[k].write_table(table.take(rows))

    def path(self, k: int) -> Path:
        return self.folder / f"rows-{k}.arrow"

    def close(self) -> None:
        self.files.close()

    def duplicates(self) -> np.ndarray:
        """Positions (sorted) of the rows equal to an earlier row."""
        import pyarrow as pa

        self.close()
        found = [np.zeros(0, dtype=np.int64)]
        for k in sorted(self.writers):
            with pa.ipc.open_stream(self.path(k)) as reader:
                frame = reader.read_all().to_pandas()
            positions = frame.pop(POSITION).to_numpy()
            found.append(positions[frame.duplicated().to_numpy()])
        self.writers = {}
        return np.sort(np.concatenate(found))
