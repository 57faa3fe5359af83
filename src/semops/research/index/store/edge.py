"""The research index in Qdrant's engine in this process (qdrant-edge), its files in a folder
that one process at a time may open."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semops.errors import SemopsError
from semops.io import FileLockedError, locked, write_json
from semops.research.index.store.base import (
    BM25,
    DENSE,
    ClosingContext,
    Hit,
    IndexMismatchError,
    Point,
    batches,
    best_hits,
    bm25_model,
    index_meta,
    named_vectors,
    point_batches,
    setting_differences,
    unit_vectors,
)

if TYPE_CHECKING:
    import qdrant_edge

# Dense search in EdgeStore: no HNSW graph (m=0). Segments big enough to be optimized keep an
# int8 copy of their vectors that is scanned in full, and the best 4 x limit are rescored with
# the float32 vectors. On 50k x 384 (benchmarks/research_store.py) that found the exact top 10
# of every query, random or clustered (2 x limit missed 1%), in a third of a float32 scan's
# time; an HNSW graph took 48-167 s to build there and, on random vectors, found 16-64% of it.
RESCORE_OVERSAMPLING = 4.0
META = "meta.json"
LOCK = "lock"
SHARD = "shard"


class IndexLockedError(SemopsError):
    """Another process (or another store object) has the embedded index open."""


def edge_config(dim: int) -> qdrant_edge.EdgeConfig:
    from qdrant_edge import (
        Distance,
        EdgeConfig,
        EdgeOptimizersConfig,
        EdgeSparseVectorParams,
        EdgeVectorParams,
        HnswIndexConfig,
        Modifier,
        ScalarQuantizationConfig,
        ScalarType,
    )

    return EdgeConfig(
        vectors={DENSE: EdgeVectorParams(size=dim, distance=Distance.Cosine)},
        sparse_vectors={BM25: EdgeSparseVectorParams(modifier=Modifier.Idf)},
        hnsw_config=HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        quantization_config=ScalarQuantizationConfig(type=ScalarType.Int8, always_ram=True),
        # The engine counts deleted and replaced points in its BM25 IDF statistics until their
        # segment is vacuumed: vacuum any segment with a deletion (at flush), so that scores
        # depend on what the index holds, not on how it got there.
        optimizers=EdgeOptimizersConfig(deleted_threshold=0.0, vacuum_min_vector_number=0),
    )


class EdgeStore(ClosingContext):
    """Qdrant's engine in this process (qdrant-edge), its files in `path`.

    One process at a time: a lock file in `path` is held while the store is open, and a second
    opener gets a clear error. `path/meta.json` records the embedder, dimension and layout the
    vectors were made with; opening with others is an IndexMismatchError unless `recreate`,
    which starts an empty index.
    """

    def __init__(self, path: Path | str, dim: int, embedder: str, *, recreate: bool = False):
        self.path = Path(path)
        self.dim = dim
        self.embedder = embedder
        self._lock = _lock_index(self.path)
        self._dirty = False
        self._closed = False
        try:
            self._shard = self._open_shard(recreate)
        except BaseException:
            self._lock.close()
            raise

    def _open_shard(self, recreate: bool) -> qdrant_edge.EdgeShard:
        from qdrant_edge import EdgeShard

        meta_path, shard_dir = self.path / META, self.path / SHARD
        wanted = index_meta(self.dim, self.embedder)
        if recreate:
            meta_path.unlink(missing_ok=True)
            shutil.rmtree(shard_dir, ignore_errors=True)
        if meta_path.exists():
            found = _read_meta(meta_path)
            if found != wanted:
                raise IndexMismatchError(_mismatch(f"research index {self.path}", found, wanted))
        elif shard_dir.exists():
            raise IndexMismatchError(
                f"research index {self.path} has no {META} (the embedder its vectors came from is "
                "unknown): rebuild it"
            )
        else:
            # Written first: a shard never exists without the record of what its vectors are.
            write_json(meta_path, wanted)
        try:
            if (shard_dir / "edge_config.json").exists():
                return EdgeShard.load(str(shard_dir), edge_config(self.dim))
            shutil.rmtree(shard_dir, ignore_errors=True)  # a create killed before it finished
            return EdgeShard.create(str(shard_dir), edge_config(self.dim))
        except Exception as exc:  # the engine raises bare Exception with its message
            raise SemopsError(
                f"research index {self.path}: the Qdrant engine cannot open it ({exc}); delete "
                "the folder to rebuild it"
            ) from exc

    @property
    def _live(self) -> qdrant_edge.EdgeShard:
        if self._closed:
            raise SemopsError(f"research index {self.path} is closed")
        return self._shard

    def upsert(self, points: Sequence[Point]) -> None:
        from qdrant_edge import Point as EdgePoint
        from qdrant_edge import UpdateOperation

        for batch in point_batches(points, self.dim):
            edge_points = [
                EdgePoint(p.id, named_vectors(row, terms), p.payload) for p, row, terms in batch
            ]
            self._live.update(UpdateOperation.upsert_points(edge_points))
            self._dirty = True

    def delete(self, point_ids: Sequence[str]) -> None:
        from qdrant_edge import UpdateOperation

        for batch in batches(point_ids):
            self._live.update(UpdateOperation.delete_points(list(batch)))
            self._dirty = True

    def ids(self) -> dict[str, str]:
        from qdrant_edge import ScrollRequest

        found: dict[str, str] = {}
        offset = None
        while True:
            records, offset = self._live.scroll(
                ScrollRequest(offset=offset, limit=1000, with_payload=["text_sha256"])
            )
            found.update((str(r.id), (r.payload or {}).get("text_sha256", "")) for r in records)
            if offset is None:
                return found

    def count(self) -> int:
        from qdrant_edge import CountRequest

        return self._live.count(CountRequest(exact=True))

    def search_dense(self, vector: np.ndarray, limit: int) -> list[Hit]:
        from qdrant_edge import QuantizationSearchParams, Query, SearchParams

        query = Query.Nearest(unit_vectors([vector], self.dim, ["query"])[0].tolist(), using=DENSE)
        params = SearchParams(
            quantization=QuantizationSearchParams(rescore=True, oversampling=RESCORE_OVERSAMPLING)
        )
        return best_hits(lambda n: self._query(query, n, params), limit)

    def search_bm25(self, text: str, limit: int) -> list[Hit]:
        from qdrant_edge import Query

        terms = bm25_model().embed_query(text)
        if not terms.indices:  # only stopwords or punctuation: nothing to match
            return []
        query = Query.Nearest(terms, using=BM25)
        return best_hits(lambda n: self._query(query, n, None), limit)

    def _query(
        self, query: qdrant_edge.Query, limit: int, params: qdrant_edge.SearchParams | None
    ) -> list[Hit]:
        from qdrant_edge import QueryRequest

        request = QueryRequest(limit=limit, query=query, params=params, with_payload=True)
        return [Hit(str(p.id), p.score, p.payload or {}) for p in self._live.query(request)]

    def flush(self) -> None:
        """Make the writes durable, and let the engine merge segments, drop deleted points and
        build the int8 copies of large segments (nothing to do on a small or unchanged index)."""
        self._live.flush()
        self._live.optimize()
        self._dirty = False

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._dirty:
                self.flush()
            self._shard.close()
        finally:
            self._closed = True
            self._lock.close()


def _lock_index(path: Path) -> contextlib.ExitStack:
    """Hold the exclusive lock of the index at `path` until the returned stack is closed."""
    held = contextlib.ExitStack()
    try:
        held.enter_context(locked(path / LOCK, timeout=0))
        return held
    except OSError as exc:
        raise SemopsError(f"research index {path}: cannot create it ({exc.strerror})") from exc
    except FileLockedError as exc:
        if exc.holder == str(os.getpid()):
            raise IndexLockedError(
                f"research index {path} is already open in this process (pid {exc.holder}); "
                "close the other store first"
            ) from None
        raise IndexLockedError(
            f"research index {path} is in use by another process (pid {exc.holder}); close it "
            "and retry"
        ) from None


def _mismatch(where: str, found: dict[str, Any], wanted: dict[str, Any]) -> str:
    """Why an index recording `found` (its meta.json) is not the index `wanted` describes."""
    if "embedder" not in found or "layout" not in found:
        return (
            f"{where} records no embedder (it was not built by semops): rebuild it or choose "
            "another"
        )
    differences = setting_differences(found, wanted) or [
        f"{META} keys {sorted(found)} vs {sorted(wanted)}"
    ]
    return (
        f"{where} was built with other settings (the index's vs this project's): "
        f"{'; '.join(differences)}: rebuild it (its vectors cannot be compared with this "
        "embedder's) or switch back to those settings"
    )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexMismatchError(f"{path}: unreadable ({exc}); rebuild the index") from exc
    if not isinstance(found, dict):
        raise IndexMismatchError(f"{path}: not an index record; rebuild the index")
    return found
