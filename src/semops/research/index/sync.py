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
from semops.redaction import redact
from semops.research.documents import Chunk, embedding_input
from semops.research.index.chunking import read_chunks
from semops.research.index.embed import Embedder, make_embedder
from semops.research.index.embed.local import LocalEmbedder
from semops.research.index.embedcache import EmbeddingCache, embed_with_cache
from semops.research.index.store.base import IndexMismatchError, Point, Store
from semops.research.index.store.edge import EdgeStore
from semops.research.index.store.server import Mode, ServerStore

log = logging.getLogger(__name__)


def embedder_for(cfg: ResearchConfig) -> Embedder:
    model_dir = paths.research_cache_dir() / "models"
    if cfg.engine == "ray" and cfg.embedder == "local":
        from semops.research.index import rayembed

        # The cluster's actors embed: the model variant follows their device, not this machine's.
        return LocalEmbedder(cfg.local, model_dir, device=rayembed.cluster_device(cfg.local))
    return make_embedder(cfg.embedder, cfg.local, cfg.ollama, cfg.openai, model_dir)


@contextmanager
def open_store(cfg: ResearchConfig, embedder: Embedder, mode: Mode) -> Iterator[Store]:
    """The configured store, opened for `mode` (query: never written; build: research-embed;
    rebuild: `semops research rebuild --force` only)."""
    store = _store(cfg, embedder, mode)
    try:
        yield store
    finally:
        store.close()


def store_key(embedder: Embedder) -> str:
    # What a point's payload holds is part of what the index holds: another layout is another index.
    return f"{embedder.key}+{POINT_LAYOUT}"


def _store(cfg: ResearchConfig, embedder: Embedder, mode: Mode) -> Store:
    """A server's collection may be shared: one built by others or with other settings is
    refused, never recreated (ServerStore). The edge index is this checkout's own folder, rebuilt
    from the chunks and the embedding store: one built for another embedder, dimension or layout
    is recreated, in any mode."""
    key = store_key(embedder)
    if cfg.store.kind == "server":
        assert cfg.store.url is not None  # checked by StoreConfig
        return ServerStore(
            cfg.store.url,
            cfg.store.collection,
            embedder.dim,
            key,
            cluster=cfg.store.cluster,
            mode=mode,
        )
    try:
        return EdgeStore(paths.RESEARCH_INDEX, embedder.dim, key, recreate=mode == "rebuild")
    except IndexMismatchError as exc:
        log.warning("research: %s; rebuilding the index", exc)
        return EdgeStore(paths.RESEARCH_INDEX, embedder.dim, key, recreate=True)


# The payload's fields (see _point); changing them rebuilds existing indexes.
POINT_LAYOUT = "v2-opens-section"


def point_id(chunk: Chunk) -> str:
    return str(uuid.UUID(hex=chunk.chunk_id))


def embed_chunks(
    cfg: ResearchConfig, embedder: Embedder, chunks: Sequence[Chunk], compact: bool
) -> tuple[list[np.ndarray], int]:
    """Dense vectors of every chunk, from the embedding cache or, for those it lacks, the
    embedder (in this process, or on a Ray cluster: research.engine); returns them and how many
    were embedded now."""
    runner = None
    if cfg.engine == "ray":
        from semops.research.index import rayembed  # imports Ray (seconds): only when asked

        runner = rayembed.ray_runner(cfg, embedder)
    cache = EmbeddingCache(paths.research_embeddings_dir(), embedder.key, embedder.dim)
    vectors, embedded = embed_with_cache(
        embedder,
        cache,
        [embedding_input(chunk.title_path, chunk.text) for chunk in chunks],
        [chunk.text_sha256 for chunk in chunks],
        _batch_size(cfg),
        runner,
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
    """The index for queries, checked against the stage's outputs first: after a `dvc checkout`,
    an `exp apply` or on a fresh machine it may hold another state (or none). The edge index,
    this checkout's own, is brought in line from the chunks DVC restored and the embedding store,
    embedding what the store lacks (all of it on a machine that neither built nor pulled the
    store); a server's collection is never written by a query: one out of line is an error.
    Yields the store, the embedder and the chunks it holds."""
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
    chunks = read_chunks(paths.RESEARCH_CHUNKS)
    with open_store(cfg, embedder, "query") as store:
        present = store.ids()
        wanted = {point_id(c): c.text_sha256 for c in chunks}
        if wanted != present and cfg.store.kind == "server":
            stale = len(present.keys() - wanted.keys())
            missing = sum(present.get(pid) != sha for pid, sha in wanted.items())
            raise SemopsError(
                f"Qdrant collection {cfg.store.collection!r} at {redact(cfg.store.url or '')} "
                f"does not hold the chunks of {paths.RESEARCH_CHUNKS} ({missing} missing or "
                f"changed, {stale} not among them; a query never writes to it): sync it with "
                "`dvc repro --force research-embed`"
            )
        if wanted != present:
            vectors, _ = embed_chunks(cfg, embedder, chunks, compact=False)
            sync_index(store, chunks, vectors)
        yield store, embedder, chunks


def rebuild_collection(cfg: ResearchConfig, collection: str, *, force: bool) -> str:
    """`semops research rebuild`: the one way a server's collection is deleted. `collection`
    must name the configured one; it is recreated for this project's settings and filled with
    the chunks research-embed wrote (if any). Without `force`, only says what it would do."""
    if cfg.store.kind != "server":
        raise SemopsError(
            "research.store.kind is 'edge': its index (data/research/index) is this checkout's "
            "own and is rebuilt by itself when the embedder or layout changes; rebuild is for a "
            "Qdrant server's collection"
        )
    if collection != cfg.store.collection:
        raise SemopsError(
            f"--collection {collection!r} is not the configured collection "
            f"{cfg.store.collection!r} (research.store.collection); nothing was deleted"
        )
    assert cfg.store.url is not None  # checked by StoreConfig
    embedder = embedder_for(cfg)
    chunks = None  # those of another embedder are left for research-embed to make again
    built = paths.RESEARCH_CHUNKS.exists() and paths.RESEARCH_INDEX_MANIFEST.exists()
    if built and read_json(paths.RESEARCH_INDEX_MANIFEST)["embedder"] == embedder.key:
        chunks = read_chunks(paths.RESEARCH_CHUNKS)
    now = ServerStore.describe(
        cfg.store.url, collection, embedder.dim, store_key(embedder), cfg.store.cluster
    )
    plan = (
        f"delete Qdrant collection {collection!r} at {redact(cfg.store.url)} ({now}), create it "
        f"for embedder {store_key(embedder)!r} with {embedder.dim}-d vectors, and "
        + (
            f"fill it with the {len(chunks)} chunks of {paths.RESEARCH_CHUNKS}"
            if chunks is not None
            else "leave it for `dvc repro research-embed` to fill"
        )
    )
    if not force:
        return f"research rebuild would {plan}; nothing done (add --force to do it)"
    # Embedded before the collection is deleted: it stays empty only while the points are sent.
    vectors = embed_chunks(cfg, embedder, chunks, compact=False)[0] if chunks else []
    with open_store(cfg, embedder, "rebuild") as store:
        if chunks:
            sync_index(store, chunks, vectors)
    return f"research rebuild: done: {plan}"
