"""The Qdrant index kept in line with the chunks and the embedding store: which chunks carry
dense vectors, embedding only what the store lacks, syncing points by id and text hash, and
opening the index for queries and the evaluation (after a `dvc checkout`, an `exp apply` or on a
fresh machine the engine's files may hold another state, or none)."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from semops import paths
from semops.config.research import ResearchConfig
from semops.errors import SemopsError
from semops.io import read_json, write_json
from semops.research.documents import Chunk, embedding_input
from semops.research.index.chunking import read_chunks
from semops.research.index.embed import Embedder, make_embedder
from semops.research.index.embedcache import EmbeddingCache, embed_with_cache
from semops.research.index.store.base import IndexMismatchError, Point, Store
from semops.research.index.store.edge import EdgeStore
from semops.research.index.store.server import ServerStore

log = logging.getLogger(__name__)


def embedder_for(cfg: ResearchConfig) -> Embedder:
    return make_embedder(
        cfg.embedder, cfg.local, cfg.ollama, cfg.openai, paths.research_cache_dir() / "models"
    )


@contextmanager
def open_store(cfg: ResearchConfig, embedder: Embedder) -> Iterator[Store]:
    store = _store(cfg, embedder, recreate=False)
    try:
        yield store
    finally:
        store.close()


def _store(cfg: ResearchConfig, embedder: Embedder, recreate: bool) -> Store:
    """The configured store; one built for another embedder or dimension is recreated (the
    chunks and the embedding cache rebuild it)."""
    # What a point's payload holds is part of what the index holds: another layout rebuilds it.
    key = f"{embedder.key}+{POINT_LAYOUT}"
    try:
        if cfg.store.kind == "server":
            assert cfg.store.url is not None  # checked by StoreConfig
            return ServerStore(
                cfg.store.url, cfg.store.collection, embedder.dim, key, recreate=recreate
            )
        return EdgeStore(paths.RESEARCH_INDEX, embedder.dim, key, recreate=recreate)
    except IndexMismatchError as exc:
        if recreate:
            raise
        log.warning("research: %s; rebuilding the index", exc)
        return _store(cfg, embedder, recreate=True)


# The payload's fields (see _point); changing them rebuilds existing indexes.
POINT_LAYOUT = "v2-opens-section"


def point_id(chunk: Chunk) -> str:
    return str(uuid.UUID(hex=chunk.chunk_id))


def embed_chunks(
    cfg: ResearchConfig, embedder: Embedder, chunks: Sequence[Chunk], compact: bool
) -> tuple[list[np.ndarray], int]:
    """Dense vectors of every chunk, from the embedding cache or, for those it lacks, the
    embedder; returns them and how many were embedded now."""
    cache = EmbeddingCache(paths.research_embeddings_dir(), embedder.key, embedder.dim)
    vectors, embedded = embed_with_cache(
        embedder,
        cache,
        [embedding_input(chunk.title_path, chunk.text) for chunk in chunks],
        [chunk.text_sha256 for chunk in chunks],
        _batch_size(cfg),
    )
    if compact:
        cache.compact()
    return list(vectors), embedded


# Texts per embedding-cache file: what a killed run can lose at most. Each embedder batches its
# own calls (research.<embedder>.batch_size) within this.
CACHE_BATCH = 16


def _batch_size(cfg: ResearchConfig) -> int:
    sizes = {
        "local": cfg.local.batch_size,
        "ollama": cfg.ollama.batch_size,
        "openai": cfg.openai.batch_size,
    }
    return max(sizes[cfg.embedder], CACHE_BATCH)


def sync_index(
    store: Store, chunks: Sequence[Chunk], vectors: Sequence[np.ndarray]
) -> tuple[int, int]:
    """Make the index hold exactly these chunks: returns (points upserted, points deleted)."""
    present = store.ids()
    wanted = {point_id(c): i for i, c in enumerate(chunks)}
    stale = sorted(set(present) - set(wanted))
    missing = [i for pid, i in wanted.items() if present.get(pid) != chunks[i].text_sha256]
    if stale:
        store.delete(stale)
    store.upsert([_point(chunks[i], vectors[i]) for i in missing])
    store.flush()
    return len(missing), len(stale)


def _point(chunk: Chunk, vector: np.ndarray) -> Point:
    return Point(
        id=point_id(chunk),
        vector=vector,
        text=chunk.text,
        payload={
            "chunk_id": chunk.chunk_id,
            "source": chunk.source,
            "title_path": list(chunk.title_path),
            "page": chunk.page,
            "opens_section": chunk.opens_section,
            "text": chunk.text,
            "text_sha256": chunk.text_sha256,
            "n_tokens": chunk.n_tokens,
        },
    )


def write_index_manifest(cfg: ResearchConfig, embedder: Embedder, chunks: list[Chunk]) -> None:
    lines = sorted(f"{point_id(c)} {c.text_sha256}" for c in chunks)
    write_json(
        paths.RESEARCH_INDEX_MANIFEST,
        {
            "store": cfg.store.kind,
            "collection": cfg.store.collection,
            "embedder": embedder.key,
            "layout": POINT_LAYOUT,
            "dim": embedder.dim,
            "points": len(chunks),
            "content_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
        },
    )


@contextmanager
def open_index(cfg: ResearchConfig) -> Iterator[tuple[Store, Embedder, list[Chunk]]]:
    """The index for queries, brought in line with the stage's outputs first: after a `dvc
    checkout`, an `exp apply` or on a fresh machine the engine's files may hold another state
    (or none); the chunks DVC restored and the embedding store rebuild it, embedding what the
    store lacks (all of it on a machine that neither built nor pulled the store). Yields the
    store, the embedder and the chunks it holds."""
    if not paths.RESEARCH_CHUNKS.exists():
        raise SemopsError(
            f"{paths.RESEARCH_CHUNKS}: not found; build the research index first (`make run` "
            "or `dvc repro research-embed`)"
        )
    manifest = read_json(paths.RESEARCH_INDEX_MANIFEST)
    embedder = embedder_for(cfg)
    if manifest["embedder"] != embedder.key:
        raise SemopsError(
            f"the research index was built with embedder {manifest['embedder']}, params.yaml "
            f"says {embedder.key}: run `dvc repro research-embed`"
        )
    with open_store(cfg, embedder) as store:
        present = store.ids()
        chunks = read_chunks(paths.RESEARCH_CHUNKS)
        if {point_id(c): c.text_sha256 for c in chunks} != present:
            vectors, _ = embed_chunks(cfg, embedder, chunks, compact=False)
            sync_index(store, chunks, vectors)
        yield store, embedder, chunks
