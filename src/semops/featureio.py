"""Reading processed splits as matrices: pyarrow and numpy only, for the train and evaluate stages
(fitting features needs pandas; reading them does not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABEL = "label"


def load_features(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a processed split as (X float32 matrix, y int64 labels, feature names)."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read()  # read_table would import pyarrow.dataset: 0.5 s
    names = [n for n in table.column_names if n != LABEL]
    features = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        features[:, j] = table.column(name).to_numpy()
    return features, table.column(LABEL).to_numpy().astype(np.int64), names
