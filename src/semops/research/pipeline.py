"""The research-embed stage's work: documents (the BEIR corpus and the added sources) ->
chunks -> embeddings, computing only those not in the embedding store -> the Qdrant index, synced
by point id (stale points deleted, missing ones upserted). Two machine-local caches spare the
costly steps for unchanged documents: Docling's conversions and the chunker's token counts."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semops import paths
from semops.config.research import ResearchConfig
from semops.errors import SemopsError
from semops.io import dump_json, read_json, sha256_file, write_json
from semops.research import documents as documents_module
from semops.research.documents import Chunk, Document, Section
from semops.research.index import chunking
from semops.research.index.chunking import chunk_documents, write_chunks
from semops.research.index.embed import Embedder
from semops.research.index.store.base import Store
from semops.research.index.sync import (
    embed_chunks,
    embedder_for,
    open_store,
    sync_index,
    write_index_manifest,
)
from semops.research.ingest import charset, files, limits, pdf_structure, sections
from semops.research.ingest.corpus import beir_documents, read_beir, read_document_set
from semops.research.ingest.files import IngestFailure, convert_files
from semops.research.ingest.sources import held_unchanged, snapshot_files

log = logging.getLogger(__name__)

CONVERTER_MODULES = (files, sections, pdf_structure, charset, limits)


@dataclass
class BuiltIndex:
    chunks: list[Chunk]
    embedded: int
    failures: list[IngestFailure]

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)


def load_documents(cfg: ResearchConfig) -> tuple[list[Document], list[IngestFailure]]:
    """The BEIR corpus's passages, the document set's files and the added sources."""
    items = read_document_set(Path(cfg.documents)).files + snapshot_files(paths.RESEARCH_SOURCES)
    converted, failures = convert_cached(items, cfg)
    return beir_documents(read_beir(Path(cfg.corpus))) + converted, failures


def convert_cached(
    items: Sequence[tuple[Path, str]], cfg: ResearchConfig
) -> tuple[list[Document], list[IngestFailure]]:
    """Convert files through Docling, reusing earlier conversions of the same bytes (a machine-
    local cache: converting a PDF costs far more than reading its result back)."""
    # The converter's code is part of the key: a conversion made by older code is not reused.
    code = "".join(sha256_file(module.__file__) for module in CONVERTER_MODULES)  # type: ignore[arg-type]
    # The limits too: a conversion made under larger ones is not reused for a file now past them.
    setting = dump_json([cfg.pdf.__dict__, cfg.ingest.__dict__]) + code
    settings = hashlib.sha256(setting.encode()).hexdigest()[:12]
    cache_dir = paths.research_cache_dir() / "converted"
    documents: list[Document | None] = []
    todo: list[tuple[int, Path, str]] = []
    for path, source in items:
        try:  # a file past the size limit is not hashed: convert_files reports it, unread
            limits.check_size(path, cfg.ingest)
            cached: Path | None = cache_dir / f"{sha256_file(path)}-{settings}.json"
        except limits.OverLimit:
            cached = None
        if cached is not None and cached.exists():
            documents.append(_document_from_json(read_json(cached), source))
        else:
            documents.append(None)
            todo.append((len(documents) - 1, path, source))
    converted, failures = convert_files([(p, s) for _, p, s in todo], cfg.pdf, cfg.ingest)
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
    documents, failures = load_documents(cfg)
    for failure in failures:
        log.warning("research-embed: skipped %s: %s", failure.source, failure.reason)
    chunks = chunk_cached(documents, embedder, cfg)
    if not chunks:
        raise SemopsError(f"{cfg.corpus}: the research corpus and sources hold no text")
    write_chunks(paths.RESEARCH_CHUNKS, chunks)
    vectors, embedded = embed_chunks(cfg, embedder, chunks, compact=True)
    sync_index(store, chunks, vectors)
    write_index_manifest(cfg, embedder, chunks)
    return BuiltIndex(chunks, embedded, failures)


def run_research_embed(cfg: ResearchConfig) -> BuiltIndex:
    embedder = embedder_for(cfg)
    # `research add` waits while the stage reads the sources; a change to any input folder made
    # all the same fails the stage, so DVC never records inputs it did not index.
    inputs = [paths.RESEARCH_SOURCES, Path(cfg.documents), Path(cfg.corpus)]
    with (
        held_unchanged(paths.RESEARCH_SOURCES, "research-embed", inputs),
        open_store(cfg, embedder, "build") as store,
    ):
        return build_index(cfg, store, embedder)
