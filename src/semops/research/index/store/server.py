"""The research index as a collection on a Qdrant server (or cluster), through qdrant-client."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from semops.errors import SemopsError
from semops.research.index.store import base

if TYPE_CHECKING:
    import qdrant_edge
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qmodels

API_KEY_ENV = "QDRANT_API_KEY"


class ServerStore(base.ClosingContext):
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
        wanted = base.index_meta(dim, embedder)
        with self._errors():
            exists = client.collection_exists(collection)
            if exists and recreate:
                client.delete_collection(collection)
                exists = False
            if not exists:
                client.create_collection(
                    collection,
                    vectors_config={
                        base.DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={
                        base.BM25: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                    metadata=wanted,
                )
                return
            config = client.get_collection(collection).config
        found = dict(config.metadata or {})
        vectors = config.params.vectors
        dense = vectors.get(base.DENSE) if isinstance(vectors, dict) else None
        if dense is not None:
            found["dim"] = dense.size  # the size the server holds, whatever the metadata says
        sparse = (config.params.sparse_vectors or {}).get(base.BM25)
        shaped = (
            dense is not None
            and dense.size == dim
            and dense.distance == models.Distance.COSINE
            and sparse is not None
            and sparse.modifier == models.Modifier.IDF
        )
        if not shaped or found != wanted:
            raise base.IndexMismatchError(
                base.describe_mismatch(
                    f"Qdrant collection {collection!r} at {where}", found, wanted
                )
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

    def upsert(self, points: Sequence[base.Point]) -> None:
        from qdrant_client.http import models

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


def _client_sparse(vector: qdrant_edge.SparseVector) -> qmodels.SparseVector:
    from qdrant_client.http import models

    return models.SparseVector(indices=vector.indices, values=vector.values)
