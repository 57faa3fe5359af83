"""Reading processed splits as matrices: pyarrow and numpy only, for the train and evaluate stages
(fitting features needs pandas; reading them does not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from semops.errors import SemopsError

LABEL = "label"


def load_features(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a processed split as (X float32 matrix, y int64 labels, feature names)."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read()  # read_table would import pyarrow.dataset: 0.5 s
    names = [n for n in table.column_names if n != LABEL]
    features = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        features[:, j] = column_values(table.column(name), np.dtype(np.float32))
    return features, column_values(table.column(LABEL), np.dtype(np.int64)), names


def column_values(column: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """A null-free primitive column's values, read from its buffers: pyarrow's own to_numpy
    imports pandas (0.4 s) which nothing else in the train and evaluate stages needs."""
    import pyarrow as pa

    if column.null_count or column.type != pa.from_numpy_dtype(dtype):
        raise SemopsError(
            f"feature column of type {column.type} with {column.null_count} nulls; expected {dtype}"
        )
    parts = [
        np.frombuffer(
            chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize
        )
        for chunk in column.chunks
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
