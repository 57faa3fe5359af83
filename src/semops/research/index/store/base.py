"""The research index in Qdrant, behind one interface (`Store`): Qdrant's own engine in-process
on disk (edge.EdgeStore, the default: no server to run) or a Qdrant server by URL
(server.ServerStore).

Every point carries a named dense vector ("dense", cosine) and a named sparse BM25 vector
("bm25", IDF applied by the engine). The BM25 term weights are computed here, on the client,
by qdrant_edge's Bm25 for both backends, so a query is tokenised as the documents were and the
two backends rank alike. Results are ordered by score, then point id, whatever the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self

import numpy as np

from semops.errors import SemopsError

if TYPE_CHECKING:
    import qdrant_edge
    from qdrant_client.http import models as qmodels

DENSE = "dense"
BM25 = "bm25"
# Points per engine call: big enough to amortise the call, small enough to bound a request.
BATCH = 256
# k and b: Qdrant's BM25 defaults. avg_len: the mean length in BM25 terms of the chunks of the
# bundled corpus at 256 model tokens (about 56; Qdrant's default 256 is whole documents'); it is
# a constant, not the indexed corpus's mean, so that adding a document changes no other point.
# On the evaluation set, BM25 on chunks scored nDCG@10 0.404 with 50, 0.395 with 75, 0.346
# with 256. All three shape the stored term weights, so they are part of the layout below.
BM25_K = 1.2
BM25_B = 0.75
BM25_AVG_LEN = 56.0
# What the stored vectors depend on besides the embedder: an index with another layout is never
# reused (the edge index is rebuilt; a server's collection is refused, see server.ServerStore).
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


class IndexMismatchError(SemopsError):
    """The index was built for another embedder, dimension or layout, or (a server's collection)
    not by semops at all."""


@dataclass(frozen=True)
class Point:
    """What the index holds for a chunk: `id` is a UUID string (from the chunk id), `vector` its
    embedding, `text` what BM25 indexes, `payload` what a hit returns (source, title_path, page,
    opens_section, text, text_sha256, n_tokens, chunk_id)."""

    id: str
    vector: np.ndarray
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


class ClosingContext:
    """`with store:` closes the store when the block ends, whatever happens in it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
    dense: list[float], sparse: qdrant_edge.SparseVector | qmodels.SparseVector
) -> dict[str, Any]:
    """A point's vectors by name. A text without a term (only stopwords, say) gets no BM25
    vector at all: stored empty, it would count in the engines' IDF statistics differently."""
    named: dict[str, Any] = {DENSE: dense}
    if sparse.indices:
        named[BM25] = sparse
    return named


def dense_rows(points: Sequence[Point], dim: int) -> list[list[float]]:
    """Each point's unit vector as a list, checked before any write."""
    return unit_vectors([p.vector for p in points], dim, [p.id for p in points]).tolist()


def point_batches(
    points: Sequence[Point], dim: int
) -> Iterator[list[tuple[Point, list[float], qdrant_edge.SparseVector]]]:
    """The points in batches of BATCH, each with its unit vector and its BM25 terms; every
    vector is checked before the first batch is handed out, so a bad one writes nothing."""
    vectors = dense_rows(points, dim)
    bm25 = bm25_model()
    for start in range(0, len(points), BATCH):
        yield [
            (p, row, bm25.embed_document(p.text))
            for p, row in zip(
                points[start : start + BATCH], vectors[start : start + BATCH], strict=True
            )
        ]


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


def setting_differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs between the settings an index records (`found`, from index_meta) and these
    (`wanted`), each as "<name> <found> vs <wanted>"; empty when they agree."""
    differences = []
    if found.get("embedder") != wanted["embedder"]:
        differences.append(f"embedder {found.get('embedder')!r} vs {wanted['embedder']!r}")
    if found.get("dim") != wanted["dim"]:
        differences.append(f"vector size {found.get('dim')} vs {wanted['dim']}")
    layout, ours = found.get("layout"), wanted["layout"]
    if layout != ours:
        if isinstance(layout, dict):
            keys = sorted(k for k in {*layout, *ours} if layout.get(k) != ours.get(k))
            differences.extend(
                f"index layout {k} {layout.get(k)!r} vs {ours.get(k)!r}" for k in keys
            )
        else:
            differences.append(f"index layout {layout!r} vs {ours!r}")
    return differences


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
