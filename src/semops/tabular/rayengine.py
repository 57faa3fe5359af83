"""data.engine: ray: the passes of clean and featurize on the Ray cluster at RAY_ADDRESS.

Each pass maps its per-batch work (cleaning a batch, a batch's partial counts, the transform)
over the row groups of the Parquet file with Ray Data (`map_batches`, one row group a task); the
results come back to the driver in the file's order and are merged or written there, as the local
engine's are. A row group is read, and cut into batches, by the task that works on it (the file
must be where every node can read it: a shared folder), so the blocks over which statistics are
merged are the local engine's and so are the outputs, byte for byte.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from semops.raycluster import cluster_address, connect
from semops.tabular.stream import Batches, LocalEngine, ParquetBatches

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
SETTING = "data.engine"


class RayEngine:
    """Connects on first use; a table in memory (no file to share) runs in this process."""

    def __init__(self) -> None:
        self.address = cluster_address(SETTING)
        self.connected = False

    def map(
        self,
        fn: Callable[[pd.DataFrame], T],
        batches: Batches,
        columns: list[str] | None = None,
        blocks: bool = False,
    ) -> Iterator[T]:
        groups = batches.blocks if isinstance(batches, ParquetBatches) else 0
        if not groups or not batches.rows:
            yield from LocalEngine().map(fn, batches, columns, blocks)
            return
        assert isinstance(batches, ParquetBatches)
        import ray

        self._connect()
        work = ray.data.from_items(
            [{"group": i} for i in range(groups)], override_num_blocks=groups
        ).map_batches(
            functools.partial(_run_groups, fn=fn, path=str(batches.path.absolute()),
                              batch_rows=batches.batch_rows, widened=batches.widened,
                              columns=columns, blocks=blocks),
            batch_size=1,
            batch_format="pandas",
        )  # fmt: skip
        for row in work.iter_rows():
            yield from pickle.loads(row["results"])

    def _connect(self) -> None:
        if not self.connected:
            connect(self.address, SETTING, preserve_order=True)  # results in the file's order
            self.connected = True

    def close(self) -> None:
        if self.connected:
            import ray

            ray.shutdown()
            self.connected = False


def _run_groups(
    rows: pd.DataFrame, *, fn: Callable[[pd.DataFrame], Any], path: str, batch_rows: int,
    widened: set[str], columns: list[str] | None, blocks: bool,
) -> pd.DataFrame:  # fmt: skip
    """A task's work: `fn` of each batch (or the block) of its row groups, pickled. `widened`:
    the driver's, found once for the file, not by each task."""
    import pandas as pd

    batches = ParquetBatches(Path(path), batch_rows, widened)
    results = [
        pickle.dumps([fn(frame) for frame in batches.group_frames(int(group), columns, blocks)])
        for group in rows["group"]
    ]
    return pd.DataFrame({"results": results})
