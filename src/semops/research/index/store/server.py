"""The research index as a collection on a Qdrant server (or cluster), through qdrant-client.

A server's collection may be shared with others: semops deletes or rewrites only a collection it
created (its metadata records the embedder, vector size, layout and research.store.cluster) with
this project's settings, and deletes one only when asked by name (`semops research rebuild
--force`)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from semops.config.research import ClusterConfig
from semops.errors import SemopsError
from semops.redaction import redact
from semops.research.index.store import base

if TYPE_CHECKING:
    import qdrant_edge
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qmodels

log = logging.getLogger(__name__)

API_KEY_ENV = "QDRANT_API_KEY"
# query: read only, the collection must exist with these settings; build: create it when
# missing, write into it when it is semops's with these settings; rebuild: delete it (whatever
# it holds) and create it afresh, for `semops research rebuild --force` only.
Mode = Literal["query", "build", "rebuild"]


class ServerStore(base.ClosingContext):
    """A collection on a Qdrant server (or cluster) at `url`, through qdrant-client; the API key,
    if the server wants one, comes from QDRANT_API_KEY only.

    `mode` (see Mode) says what opening may do; `cluster`, how a collection is created. A
    collection semops did not create, or built with another embedder, dimension, layout or
    cluster settings, is an IndexMismatchError in every mode but rebuild: it is never deleted
    nor written. Dense search uses the server's own index settings (HNSW by default).
    """

    def __init__(
        self,
        url: str,
        collection: str,
        dim: int,
        embedder: str,
        *,
        cluster: ClusterConfig,
        mode: Mode = "build",
        timeout: int = 60,
    ):
        self._setup(_client(url, timeout), redact(url), collection, dim, embedder, cluster, mode)

    @classmethod
    def with_client(
        cls,
        client: QdrantClient,
        collection: str,
        dim: int,
        embedder: str,
        *,
        cluster: ClusterConfig | None = None,
        mode: Mode = "build",
        where: str = "qdrant-client",
    ) -> ServerStore:
        """The store on a client made elsewhere (e.g. qdrant-client's local mode, which ignores
        the cluster settings but records them); `where` names it in messages."""
        store = cls.__new__(cls)
        store._setup(client, where, collection, dim, embedder, cluster or ClusterConfig(), mode)
        return store

    @staticmethod
    def describe(url: str, collection: str, dim: int, embedder: str, cluster: ClusterConfig) -> str:
        """What the collection at `url` is now, in words, without changing anything."""
        client = _client(url, 60)
        try:
            with _errors(redact(url), collection):
                state = _state(client, collection, _wanted(dim, embedder, cluster))
        finally:
            client.close()
        if state is None:
            return "it does not exist"
        points, mismatch = state
        return f"{points} points; it {mismatch or 'was built by semops with these settings'}"

    def _setup(
        self,
        client: QdrantClient,
        where: str,
        collection: str,
        dim: int,
        embedder: str,
        cluster: ClusterConfig,
        mode: Mode,
    ) -> None:
        self._client = client
        self.where = where
        self.collection = collection
        self.dim = dim
        self.embedder = embedder
        self.mode = mode
        wanted = _wanted(dim, embedder, cluster)
        with self._errors():
            if mode == "rebuild" and client.collection_exists(collection):
                log.warning("research: deleting Qdrant collection %r at %s", collection, where)
                client.delete_collection(collection)
            state = _state(client, collection, wanted)
            if state is None and mode == "query":
                raise SemopsError(
                    f"Qdrant collection {collection!r} at {where} does not exist (a query never "
                    "creates one): build it with `dvc repro research-embed` or `semops research "
                    f"rebuild --force --collection {collection}`, or set research.store.collection "
                    "to the collection research-embed built"
                )
            if state is None:
                self._create(wanted)
                return
        points, mismatch = state
        if mismatch:
            raise base.IndexMismatchError(
                f"Qdrant collection {collection!r} at {where} ({points} points) {mismatch}; "
                "semops leaves it as it is. Either set research.store.collection to another "
                "name (research-embed creates that collection), or delete this one and build the "
                f"index in it: `semops research rebuild --force --collection {collection}`"
            )

    def _create(self, wanted: dict[str, Any]) -> None:
        from qdrant_client.http import models

        self._client.create_collection(
            self.collection,
            vectors_config={
                base.DENSE: models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={
                base.BM25: models.SparseVectorParams(modifier=models.Modifier.IDF)
            },
            metadata=wanted,  # what marks the collection as semops's, and with which settings
            **wanted[CLUSTER],
        )

    def _writable(self) -> None:
        if self.mode == "query":
            raise SemopsError(
                f"Qdrant collection {self.collection!r} at {self.where} is open for queries, "
                "which never write"
            )

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return _errors(self.where, self.collection)

    def upsert(self, points: Sequence[base.Point]) -> None:
        from qdrant_client.http import models

        self._writable()
        for batch in base.point_batches(points, self.dim):
            structs = [
                models.PointStruct(
                    id=p.id,
                    vector=base.named_vectors(row, _client_sparse(terms)),
                    payload=p.payload,
                )
                for p, row, terms in batch
            ]
            with self._errors():
                self._client.upsert(self.collection, points=structs, wait=True)

    def delete(self, point_ids: Sequence[str]) -> None:
        from qdrant_client.http import models

        self._writable()
        for batch in base.batches(point_ids):
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

    def search_dense(self, vector: np.ndarray, limit: int) -> list[base.Hit]:
        query = base.unit_vectors([vector], self.dim, ["query"])[0].tolist()
        return base.best_hits(lambda n: self._query(query, base.DENSE, n), limit)

    def search_bm25(self, text: str, limit: int) -> list[base.Hit]:
        terms = base.bm25_model().embed_query(text)
        if not terms.indices:
            return []
        query = _client_sparse(terms)
        return base.best_hits(lambda n: self._query(query, base.BM25, n), limit)

    def _query(
        self, query: list[float] | qmodels.SparseVector, using: str, limit: int
    ) -> list[base.Hit]:
        with self._errors():
            points = self._client.query_points(
                self.collection, query=query, using=using, limit=limit, with_payload=True
            ).points
        return [base.Hit(str(p.id), p.score, p.payload or {}) for p in points]

    def flush(self) -> None:
        """Writes wait for the server's acknowledgement: nothing is pending here."""

    def close(self) -> None:
        self._client.close()


# The metadata key of the cluster settings a collection was created with.
CLUSTER = "cluster"


def _wanted(dim: int, embedder: str, cluster: ClusterConfig) -> dict[str, Any]:
    """What a collection semops creates records in its metadata, and what it must match."""
    return {**base.index_meta(dim, embedder), CLUSTER: dataclasses.asdict(cluster)}


def _state(
    client: QdrantClient, collection: str, wanted: dict[str, Any]
) -> tuple[int, str | None] | None:
    """None if the collection does not exist, else its point count and what makes it not the
    index `wanted` describes (None if nothing)."""
    if not client.collection_exists(collection):
        return None
    info = client.get_collection(collection)
    return info.points_count or 0, _mismatch(info.config, wanted)


@contextlib.contextmanager
def _errors(where: str, collection: str) -> Iterator[None]:
    """Qdrant's errors as SemopsErrors that name the server and collection."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    try:
        yield
    except UnexpectedResponse as exc:
        body = exc.content.decode(errors="replace")[:300]
        raise SemopsError(
            f"Qdrant server {where}, collection {collection!r}: HTTP "
            f"{exc.status_code} {exc.reason_phrase}: {body}"
        ) from exc
    except ResponseHandlingException as exc:
        raise SemopsError(
            f"Qdrant server {where}: no usable answer ({exc.source!r}); check "
            "research.store.url and that the server is up"
        ) from exc


def _client_sparse(vector: qdrant_edge.SparseVector) -> qmodels.SparseVector:
    from qdrant_client.http import models

    return models.SparseVector(indices=vector.indices, values=vector.values)


def _client(url: str, timeout: int) -> QdrantClient:
    from qdrant_client import QdrantClient

    # No version check: it runs in a thread of its own and, on a server that cannot be reached,
    # warns later in the middle of other output; the first request says it clearly.
    return QdrantClient(
        url=url,
        api_key=os.environ.get(API_KEY_ENV) or None,
        timeout=timeout,
        check_compatibility=False,
    )


def _mismatch(config: qmodels.CollectionConfig, wanted: dict[str, Any]) -> str | None:
    """Why a collection with this config is not the index `wanted` describes, or None."""
    from qdrant_client.http import models

    found = dict(config.metadata or {})
    if "embedder" not in found or "layout" not in found:
        return "was not created by semops (its metadata records no semops index)"
    vectors = config.params.vectors
    dense = vectors.get(base.DENSE) if isinstance(vectors, dict) else None
    # The size the server holds, whatever the metadata says.
    found["dim"] = dense.size if dense is not None else None
    differences = base.setting_differences(found, wanted)
    if dense is not None and dense.distance != models.Distance.COSINE:
        differences.append(f"distance {dense.distance.value} vs Cosine")
    sparse = (config.params.sparse_vectors or {}).get(base.BM25)
    if sparse is None or sparse.modifier != models.Modifier.IDF:
        differences.append(f"no {base.BM25!r} sparse vectors with IDF")
    differences += _cluster_differences(config.params, found.get(CLUSTER), wanted[CLUSTER])
    if not differences:
        return None
    return "was built with other settings (the collection's vs this project's): " + "; ".join(
        differences
    )


def _cluster_differences(
    params: qmodels.CollectionParams, recorded: Any, wanted: dict[str, Any]
) -> list[str]:
    """The cluster settings of a collection that differ from `wanted`: those the server reports
    (an administrator may have changed one since), else those the metadata recorded (qdrant-
    client's local mode reports none). A setting wanted as null is the server's to choose."""
    recorded = recorded if isinstance(recorded, dict) else {}
    differences = []
    for key, value in wanted.items():
        held = getattr(params, key)
        held = recorded.get(key) if held is None else held
        if value is not None and held != value:
            differences.append(f"{key} {held!r} vs {value!r}")
    return differences
