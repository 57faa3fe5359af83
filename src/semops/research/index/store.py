"""The research index in Qdrant, behind one interface (`Store`): Qdrant's own engine in-process
on disk (`EdgeStore`, the default: no server to run) or a Qdrant server by URL (`ServerStore`).

Every point carries a named dense vector ("dense", cosine) and a named sparse BM25 vector
("bm25", IDF applied by the engine). The BM25 term weights are computed here, on the client,
by qdrant_edge's Bm25 for both backends, so a query is tokenised as the documents were and the
two backends rank alike. Results are ordered by score, then point id, whatever the engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from semops.errors import SemopsError
from semops.io import write_json

if TYPE_CHECKING:
    import qdrant_edge
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qmodels

DENSE = "dense"
BM25 = "bm25"
# Points per engine call: big enough to amortise the call, small enough to bound a request.
BATCH = 256
API_KEY_ENV = "QDRANT_API_KEY"
# k and b: Qdrant's BM25 defaults. avg_len: the mean length in BM25 terms of the chunks of the
# bundled corpus at 256 model tokens (about 56; Qdrant's default 256 is whole documents'); it is
# a constant, not the indexed corpus's mean, so that adding a document changes no other point.
# On the evaluation set, BM25 on chunks scored nDCG@10 0.404 with 50, 0.395 with 75, 0.346
# with 256. All three shape the stored term weights, so they are part of the layout below.
BM25_K = 1.2
BM25_B = 0.75
BM25_AVG_LEN = 56.0
# Dense search in EdgeStore: no HNSW graph (m=0). Segments big enough to be optimized keep an
# int8 copy of their vectors that is scanned in full, and the best 4 x limit are rescored with
# the float32 vectors. On 50k x 384 (benchmarks/research_store.py) that found the exact top 10
# of every query, random or clustered (2 x limit missed 1%), in a third of a float32 scan's
# time; an HNSW graph took 48-167 s to build there and, on random vectors, found 16-64% of it.
RESCORE_OVERSAMPLING = 4.0
# What the stored vectors depend on besides the embedder: an index with another layout is
# rebuilt, not reused.
LAYOUT: dict[str, Any] = {
    "version": 1,
    "dense": {"name": DENSE, "distance": "cosine"},
    "bm25": {
        "name": BM25,
        "language": "english",
        "stemmer": "snowball-english",
        "stopwords": "english",
        "k": BM25_K,
        "b": BM25_B,
        "avg_len": BM25_AVG_LEN,
    },
}
META = "meta.json"
LOCK = "lock"
SHARD = "shard"


class IndexMismatchError(SemopsError):
    """The index was built for another embedder, dimension or layout: rebuild it (recreate=True)."""


class IndexLockedError(SemopsError):
    """Another process (or another store object) has the embedded index open."""


@dataclass(frozen=True)
class Point:
    """What the index holds for a chunk: `id` is a UUID string (from the chunk id), `vector` its
    embedding (None: the chunk is found by BM25 only), `text` what BM25 indexes, `payload` what a
    hit returns (source, title_path, page, text, text_sha256, n_tokens, chunk_id)."""

    id: str
    vector: np.ndarray | None
    text: str
    payload: dict[str, Any]


class Hit(NamedTuple):
    id: str
    score: float
    payload: dict[str, Any]


class Store(Protocol):
    def upsert(self, points: Sequence[Point]) -> None: ...
    def delete(self, point_ids: Sequence[str]) -> None: ...
    def ids(self) -> dict[str, str]: ...
    def count(self) -> int: ...
    def search_dense(self, vector: np.ndarray, limit: int) -> list[Hit]: ...
    def search_bm25(self, text: str, limit: int) -> list[Hit]: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


# ----------------------------------------------------------------------------- pure helpers


def unit_vectors(vectors: Sequence[np.ndarray], dim: int, names: Sequence[str]) -> np.ndarray:
    """The vectors as float32 rows of length 1; a wrong length, a NaN or a zero vector is an
    error naming the point (`names[i]`), raised before anything is written."""
    rows = [np.asarray(vector, dtype=np.float32).reshape(-1) for vector in vectors]
    for row, name in zip(rows, names, strict=True):
        if row.shape != (dim,):
            raise SemopsError(f"{name}: vector has {row.size} dimensions, the index holds {dim}")
    matrix = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise SemopsError(f"{names[int(np.argmin(finite))]}: vector holds NaN or infinite values")
    norms = np.linalg.norm(matrix, axis=1)
    if not norms.all():
        raise SemopsError(
            f"{names[int(np.argmin(norms))]}: vector is all zeros (no direction to compare)"
        )
    return matrix / norms[:, None]


def named_vectors(
    dense: list[float] | None, sparse: qdrant_edge.SparseVector | qmodels.SparseVector
) -> dict[str, Any]:
    """A point's vectors by name. A text without a term (only stopwords, say) gets no BM25
    vector at all: stored empty, it would count in the engines' IDF statistics differently."""
    named: dict[str, Any] = {} if dense is None else {DENSE: dense}
    if sparse.indices:
        named[BM25] = sparse
    return named


def dense_rows(points: Sequence[Point], dim: int) -> list[list[float] | None]:
    """Each point's unit vector as a list (None where it has none), checked before any write."""
    given = [(p.id, p.vector) for p in points if p.vector is not None]
    matrix = unit_vectors([v for _, v in given], dim, [name for name, _ in given])
    rows = iter(matrix.tolist())
    return [None if p.vector is None else next(rows) for p in points]


def rank_key(hit: Hit) -> tuple[float, str]:
    return (-hit.score, hit.id)


def best_hits(fetch: Callable[[int], list[Hit]], limit: int) -> list[Hit]:
    """The `limit` best hits, by score then id.

    An engine breaks score ties in its own order, so which of several equal-scored points makes
    the cut could depend on the backend: fetch past the cut until the score there drops.
    """
    if limit <= 0:
        return []
    want = limit + 1
    while True:
        hits = sorted(fetch(want), key=rank_key)
        if len(hits) < want or hits[-1].score < hits[limit - 1].score:
            return hits[:limit]
        want *= 2


def batches(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def index_meta(dim: int, embedder: str) -> dict[str, Any]:
    return {"dim": dim, "embedder": embedder, "layout": LAYOUT}


def describe_mismatch(where: str, found: dict[str, Any], wanted: dict[str, Any]) -> str:
    if "layout" not in found:
        return (
            f"{where} records no embedder (it was not built by semops): rebuild it or choose "
            "another"
        )
    if found["layout"] != wanted["layout"]:
        return (
            f"{where} was built with another index layout ({found['layout']!r}); this "
            "version writes another: rebuild it"
        )
    return (
        f"{where} was built for embedder {found.get('embedder')!r} with {found.get('dim')}-d "
        f"vectors, not {wanted['embedder']!r} with {wanted['dim']}-d: rebuild it (its vectors "
        "cannot be compared with this embedder's) or switch back to that embedder"
    )


@cache
def bm25_model() -> qdrant_edge.Bm25:
    from qdrant_edge import Bm25, Bm25Config, Language, SnowballLanguage, SnowballParams

    return Bm25(
        Bm25Config(
            k=BM25_K,
            b=BM25_B,
            avg_len=BM25_AVG_LEN,
            language="english",
            stopwords=Language.English,
            stemmer=SnowballParams(SnowballLanguage.English),
        )
    )


# ----------------------------------------------------------------------------- embedded engine


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


class EdgeStore:
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
        self._lock_fd = _lock_index(self.path)
        self._dirty = False
        self._closed = False
        try:
            self._shard = self._open_shard(recreate)
        except BaseException:
            _unlock(self._lock_fd)
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
                raise IndexMismatchError(
                    describe_mismatch(f"research index {self.path}", found, wanted)
                )
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

        vectors = dense_rows(points, self.dim)
        bm25 = bm25_model()
        for start in range(0, len(points), BATCH):
            rows = vectors[start : start + BATCH]
            batch = [
                EdgePoint(p.id, named_vectors(row, bm25.embed_document(p.text)), p.payload)
                for p, row in zip(points[start : start + BATCH], rows, strict=True)
            ]
            self._live.update(UpdateOperation.upsert_points(batch))
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
            _unlock(self._lock_fd)

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _lock_index(path: Path) -> int:
    """Hold an exclusive lock on `path/lock` (released by _unlock or when the process ends),
    with this process's id in it for the message a second opener gets."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SemopsError(f"research index {path}: cannot create it ({exc.strerror})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if holder == str(os.getpid()):
            raise IndexLockedError(
                f"research index {path} is already open in this process (pid {holder}); close "
                "the other store first"
            ) from None
        raise IndexLockedError(
            f"research index {path} is in use by another process (pid {holder}); close it and retry"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexMismatchError(f"{path}: unreadable ({exc}); rebuild the index") from exc
    if not isinstance(found, dict):
        raise IndexMismatchError(f"{path}: not an index record; rebuild the index")
    return found


# ----------------------------------------------------------------------------- Qdrant server


class ServerStore:
    """A collection on a Qdrant server (or cluster) at `url`, through qdrant-client; the API key,
    if the server wants one, comes from QDRANT_API_KEY only.

    The collection is created when missing, with the embedder, dimension and layout in its
    metadata; an existing one made for others is an IndexMismatchError unless `recreate`.
    Dense search uses the server's own index settings (HNSW by default).
    """

    def __init__(
        self,
        url: str,
        collection: str,
        dim: int,
        embedder: str,
        *,
        recreate: bool = False,
        timeout: int = 60,
    ):
        from qdrant_client import QdrantClient

        # No version check: it runs in a thread of its own and, on a server that cannot be
        # reached, warns later in the middle of other output; the first request says it clearly.
        client = QdrantClient(
            url=url,
            api_key=os.environ.get(API_KEY_ENV) or None,
            timeout=timeout,
            check_compatibility=False,
        )
        self._setup(client, url, collection, dim, embedder, recreate)

    @classmethod
    def with_client(
        cls,
        client: QdrantClient,
        collection: str,
        dim: int,
        embedder: str,
        *,
        recreate: bool = False,
        where: str = "qdrant-client",
    ) -> ServerStore:
        """The store on a client made elsewhere (e.g. qdrant-client's local mode); `where`
        names it in messages."""
        store = cls.__new__(cls)
        store._setup(client, where, collection, dim, embedder, recreate)
        return store

    def _setup(
        self,
        client: QdrantClient,
        where: str,
        collection: str,
        dim: int,
        embedder: str,
        recreate: bool,
    ) -> None:
        from qdrant_client.http import models

        self._client = client
        self.where = where
        self.collection = collection
        self.dim = dim
        self.embedder = embedder
        wanted = index_meta(dim, embedder)
        with self._errors():
            exists = client.collection_exists(collection)
            if exists and recreate:
                client.delete_collection(collection)
                exists = False
            if not exists:
                client.create_collection(
                    collection,
                    vectors_config={
                        DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={
                        BM25: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                    metadata=wanted,
                )
                return
            config = client.get_collection(collection).config
        found = dict(config.metadata or {})
        vectors = config.params.vectors
        dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
        if dense is not None:
            found["dim"] = dense.size  # the size the server holds, whatever the metadata says
        sparse = (config.params.sparse_vectors or {}).get(BM25)
        shaped = (
            dense is not None
            and dense.size == dim
            and dense.distance == models.Distance.COSINE
            and sparse is not None
            and sparse.modifier == models.Modifier.IDF
        )
        if not shaped or found != wanted:
            raise IndexMismatchError(
                describe_mismatch(f"Qdrant collection {collection!r} at {where}", found, wanted)
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            yield
        except UnexpectedResponse as exc:
            body = exc.content.decode(errors="replace")[:300]
            raise SemopsError(
                f"Qdrant server {self.where}, collection {self.collection!r}: HTTP "
                f"{exc.status_code} {exc.reason_phrase}: {body}"
            ) from exc
        except ResponseHandlingException as exc:
            raise SemopsError(
                f"Qdrant server {self.where}: no usable answer ({exc.source!r}); check "
                "research.store.url and that the server is up"
            ) from exc

    def upsert(self, points: Sequence[Point]) -> None:
        from qdrant_client.http import models

        vectors = dense_rows(points, self.dim)
        bm25 = bm25_model()
        for start in range(0, len(points), BATCH):
            rows = vectors[start : start + BATCH]
            batch = [
                models.PointStruct(
                    id=p.id,
                    vector=named_vectors(row, _client_sparse(bm25.embed_document(p.text))),
                    payload=p.payload,
                )
                for p, row in zip(points[start : start + BATCH], rows, strict=True)
            ]
            with self._errors():
                self._client.upsert(self.collection, points=batch, wait=True)

    def delete(self, point_ids: Sequence[str]) -> None:
        from qdrant_client.http import models

        for batch in batches(point_ids):
            with self._errors():
                self._client.delete(
                    self.collection, points_selector=models.PointIdsList(points=list(batch))
                )

    def ids(self) -> dict[str, str]:
        found: dict[str, str] = {}
        offset = None
        while True:
            with self._errors():
                records, offset = self._client.scroll(
                    self.collection,
                    limit=1000,
                    offset=offset,
                    with_payload=["text_sha256"],
                    with_vectors=False,
                )
            found.update((str(r.id), (r.payload or {}).get("text_sha256", "")) for r in records)
            if offset is None:
                return found

    def count(self) -> int:
        with self._errors():
            return self._client.count(self.collection, exact=True).count

    def search_dense(self, vector: np.ndarray, limit: int) -> list[Hit]:
        query = unit_vectors([vector], self.dim, ["query"])[0].tolist()
        return best_hits(lambda n: self._query(query, DENSE, n), limit)

    def search_bm25(self, text: str, limit: int) -> list[Hit]:
        terms = bm25_model().embed_query(text)
        if not terms.indices:
            return []
        query = _client_sparse(terms)
        return best_hits(lambda n: self._query(query, BM25, n), limit)

    def _query(
        self, query: list[float] | qmodels.SparseVector, using: str, limit: int
    ) -> list[Hit]:
        with self._errors():
            points = self._client.query_points(
                self.collection, query=query, using=using, limit=limit, with_payload=True
            ).points
        return [Hit(str(p.id), p.score, p.payload or {}) for p in points]

    def flush(self) -> None:
        """Writes wait for the server's acknowledgement: nothing is pending here."""

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _client_sparse(vector: qdrant_edge.SparseVector) -> qmodels.SparseVector:
    from qdrant_client.http import models

    return models.SparseVector(indices=vector.indices, values=vector.values)
