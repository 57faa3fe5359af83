"""The research-embed stage's work, and opening the index for queries.

Documents (the BEIR corpus and the added sources) -> chunks -> embeddings, computing only those
not in the embedding cache -> the Qdrant index, synced by point id (stale points deleted,
missing ones upserted) -> retrieval metrics on the evaluation set.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from semops import paths
from semops.config.research import ResearchConfig, RetrievalConfig
from semops.errors import SemopsError
from semops.io import dump_json, read_json, sha256_file, write_json
from semops.research import documents as documents_module
from semops.research.documents import Chunk, Document, Section, embedding_input
from semops.research.index import chunking
from semops.research.index.chunking import chunk_documents, read_chunks, write_chunks
from semops.research.index.embed import Embedder, make_embedder
from semops.research.index.embedcache import EmbeddingCache, embed_with_cache
from semops.research.index.store import EdgeStore, IndexMismatchError, Point, ServerStore, Store
from semops.research.ingest.corpus import BeirSet, beir_documents, passage_of_source, read_beir
from semops.research.ingest.files import IngestFailure, convert_files
from semops.research.ingest.sources import snapshot_files
from semops.research.query import retrieval

METHODS = ("dense", "bm25", "hybrid")
CUTOFFS = (1, 5, 10)


@dataclass
class BuiltIndex:
    beir: BeirSet
    chunks: list[Chunk]
    embedder: Embedder
    embedded: int
    failures: list[IngestFailure]
    document_count: int

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)


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
    # Which chunks carry vectors is part of what the index holds: another choice rebuilds it.
    key = f"{embedder.key}+{cfg.chunk.embed}"
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
        print(f"research: {exc}; rebuilding the index")
        return _store(cfg, embedder, recreate=True)


def point_id(chunk: Chunk) -> str:
    return str(uuid.UUID(hex=chunk.chunk_id))


def load_documents(cfg: ResearchConfig) -> tuple[BeirSet, list[Document], list[IngestFailure]]:
    beir = read_beir(Path(cfg.corpus))
    added, failures = convert_cached(snapshot_files(paths.RESEARCH_SOURCES), cfg)
    return beir, beir_documents(beir) + added, failures


def convert_cached(
    items: Sequence[tuple[Path, str]], cfg: ResearchConfig
) -> tuple[list[Document], list[IngestFailure]]:
    """Convert files through Docling, reusing earlier conversions of the same bytes (a machine-
    local cache: converting a PDF costs far more than reading its result back)."""
    settings = hashlib.sha256(dump_json(cfg.pdf.__dict__).encode()).hexdigest()[:12]
    cache_dir = paths.research_cache_dir() / "converted"
    documents: list[Document | None] = []
    todo: list[tuple[int, Path, str]] = []
    for path, source in items:
        cached = cache_dir / f"{sha256_file(path)}-{settings}.json"
        if cached.exists():
            documents.append(_document_from_json(read_json(cached), source))
        else:
            documents.append(None)
            todo.append((len(documents) - 1, path, source))
    converted, failures = convert_files([(p, s) for _, p, s in todo], cfg.pdf)
    by_source = {d.source: d for d in converted}
    for position, _, source in todo:
        if source in by_source:
            document = by_source[source]
            documents[position] = document
            write_json(cache_dir / f"{document.sha256}-{settings}.json", _document_json(document))
    return [d for d in documents if d is not None], failures


def _document_json(document: Document) -> dict[str, Any]:
    return {
        "title": document.title,
        "sha256": document.sha256,
        "sections": [[list(s.title_path), s.text, s.page] for s in document.sections],
    }


def _document_from_json(raw: dict[str, Any], source: str) -> Document:
    sections = tuple(Section(tuple(path), text, page) for path, text, page in raw["sections"])
    return Document(source, raw["title"], raw["sha256"], sections)


def chunk_cached(
    documents: Sequence[Document], embedder: Embedder, cfg: ResearchConfig
) -> list[Chunk]:
    """Chunk the documents, reusing the chunks of documents unchanged since the last run (a
    machine-local cache keyed by the chunk settings, the tokenizer and the chunker's code):
    counting the tokens of the whole corpus again would cost seconds on every run."""
    key = dump_json([cfg.chunk.max_tokens, cfg.chunk.min_tokens, embedder.key])
    key += sha256_file(chunking.__file__) + sha256_file(documents_module.__file__)
    path = (
        paths.research_cache_dir()
        / "chunks"
        / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    )
    previous = read_json(path) if path.exists() else {}
    fresh = [d for d in documents if previous.get(d.source, {}).get("sha256") != d.sha256]
    chunked = chunk_documents(
        fresh, embedder.count_tokens, cfg.chunk.max_tokens, cfg.chunk.min_tokens
    )
    by_source: dict[str, list[Chunk]] = {}
    for chunk in chunked:
        by_source.setdefault(chunk.source, []).append(chunk)
    fresh_sources = {d.source for d in fresh}
    for document in documents:
        if document.source not in fresh_sources:
            by_source[document.source] = [
                Chunk(**{**row, "title_path": tuple(row["title_path"])})
                for row in previous[document.source]["chunks"]
            ]
    if fresh or set(previous) != {d.source for d in documents}:
        write_json(
            path,
            {
                d.source: {
                    "sha256": d.sha256,
                    "chunks": [c.__dict__ for c in by_source.get(d.source, [])],
                }
                for d in documents
            },
        )
    return [c for d in documents for c in by_source.get(d.source, [])]


def build_index(cfg: ResearchConfig, store: Store, embedder: Embedder) -> BuiltIndex:
    beir, documents, failures = load_documents(cfg)
    for failure in failures:
        print(f"research-embed: skipped {failure.source}: {failure.reason}")
    chunks = chunk_cached(documents, embedder, cfg)
    if not chunks:
        raise SemopsError(f"{cfg.corpus}: the research corpus and sources hold no text")
    write_chunks(paths.RESEARCH_CHUNKS, chunks)
    vectors, embedded = embed_chunks(cfg, embedder, chunks, compact=True)
    sync_index(store, chunks, vectors)
    write_index_manifest(cfg, embedder, chunks)
    return BuiltIndex(beir, chunks, embedder, embedded, failures, len(documents))


def leading_chunks(chunks: Sequence[Chunk]) -> list[bool]:
    """Whether each chunk opens its section: the first of its document under its heading path."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    leading = []
    for chunk in chunks:
        key = (chunk.source, chunk.title_path)
        leading.append(key not in seen)
        seen.add(key)
    return leading


def embed_chunks(
    cfg: ResearchConfig, embedder: Embedder, chunks: Sequence[Chunk], compact: bool
) -> tuple[list[np.ndarray | None], int]:
    """Dense vectors of the chunks `research.chunk.embed` selects (None for the others), from the
    embedding cache or, for those it lacks, the embedder; returns them and how many were
    embedded now."""
    chosen = [
        i for i, lead in enumerate(leading_chunks(chunks)) if lead or cfg.chunk.embed == "all"
    ]
    cache = EmbeddingCache(paths.research_embeddings_dir(), embedder.key, embedder.dim)
    vectors, embedded = embed_with_cache(
        embedder,
        cache,
        [embedding_input(chunks[i].title_path, chunks[i].text) for i in chosen],
        [chunks[i].text_sha256 for i in chosen],
        _batch_size(cfg),
    )
    if compact:
        cache.compact()
    dense: list[np.ndarray | None] = [None] * len(chunks)
    for row, i in enumerate(chosen):
        dense[i] = vectors[row]
    return dense, embedded


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
    store: Store, chunks: Sequence[Chunk], vectors: Sequence[np.ndarray | None]
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


def _point(chunk: Chunk, vector: np.ndarray | None) -> Point:
    return Point(
        id=point_id(chunk),
        vector=vector,
        text=chunk.text,
        payload={
            "chunk_id": chunk.chunk_id,
            "source": chunk.source,
            "title_path": list(chunk.title_path),
            "page": chunk.page,
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
            "dense_vectors": cfg.chunk.embed,
            "dim": embedder.dim,
            "points": len(chunks),
            "content_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
        },
    )


@contextmanager
def open_index(cfg: ResearchConfig) -> Iterator[tuple[Store, Embedder]]:
    """The index for queries, brought in line with the stage's outputs first: after a `dvc
    checkout`, an `exp apply` or on a fresh machine the engine's files may hold another state
    (or none); the chunks and embeddings DVC restored rebuild it."""
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
        yield store, embedder


# ----------------------------------------------------------------------------- evaluation


def evaluate_index(cfg: ResearchConfig, built: BuiltIndex, store: Store) -> dict[str, Any]:
    """Retrieval metrics on the evaluation set for every method and the TF-IDF reference, ranked
    at the passage level (a passage ranks at its best chunk)."""
    beir = built.beir
    summary: dict[str, Any] = {
        "corpus": beir.name,
        "passages": len(beir.passages),
        "documents": built.document_count,
        "chunks": built.chunk_count,
        "queries": len(beir.qrels),
        "method": cfg.retrieval.method,
    }
    if not beir.qrels:
        return summary
    query_ids = sorted(beir.qrels)
    query_texts = [beir.queries[q] for q in query_ids]
    query_vectors = embed_queries(built.embedder, query_texts)
    depth = max(CUTOFFS)
    for method in METHODS:
        ranked = {}
        for qid, text, vector in zip(query_ids, query_texts, query_vectors, strict=True):
            hits = retrieval.search(
                store, vector, text, _evaluation_retrieval(cfg.retrieval, method, depth)
            )
            passages = retrieval.aggregate_to_documents(
                hits, lambda hit: passage_of_source(beir.name, hit.payload["source"])
            )
            ranked[qid] = passages[:depth]
        summary[method] = retrieval_metrics(ranked, beir.qrels)
    ranked_tfidf = retrieval.tfidf_rank(
        [embedding_input(p.title_path, p.text) for p in beir.passages],
        [p.passage_id for p in beir.passages],
        dict(zip(query_ids, query_texts, strict=True)),
        depth,
    )
    summary["tfidf"] = retrieval_metrics(ranked_tfidf, beir.qrels)
    return summary


def _evaluation_retrieval(cfg: RetrievalConfig, method: str, depth: int) -> RetrievalConfig:
    """The configured retrieval, with the method under test and enough chunks for `depth`
    distinct passages."""
    return replace(cfg, method=method, top_k=max(cfg.candidates, 5 * depth))  # type: ignore[arg-type]


def embed_queries(embedder: Embedder, texts: list[str]) -> np.ndarray:
    return np.stack([embedder.embed_query(t) for t in texts])


def retrieval_metrics(
    ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    metrics = {f"recall_at_{k}": retrieval.recall_at_k(ranked, qrels, k) for k in CUTOFFS}
    metrics["mrr_at_10"] = retrieval.mrr_at_k(ranked, qrels, 10)
    metrics["ndcg_at_10"] = retrieval.ndcg_at_k(ranked, qrels, 10)
    return {k: round(v, 6) for k, v in metrics.items()}


def run_research_embed(cfg: ResearchConfig) -> tuple[BuiltIndex, dict[str, Any]]:
    embedder = embedder_for(cfg)
    with open_store(cfg, embedder) as store:
        built = build_index(cfg, store, embedder)
        return built, evaluate_index(cfg, built, store)
