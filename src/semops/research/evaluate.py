"""The research-eval stage's work: retrieval metrics of the built index on every evaluation set,
for every method, with TF-IDF as the reference. Apart from research-embed, so that changing
retrieval settings re-runs only this.

Each set is ranked over the whole index (the other sets' chunks are distractors, as a user's
other sources are), and a ranking is judged in the set's own units: a BEIR passage, or a page
(a section where the format has no pages) of a document set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from semops.config.research import ResearchConfig, RetrievalConfig
from semops.errors import ConfigError
from semops.research.documents import Chunk, embedding_input
from semops.research.index.embed import Embedder
from semops.research.index.store.base import Hit, Store
from semops.research.ingest.corpus import passage_of_source, read_beir, read_document_set
from semops.research.query import retrieval

METHODS = ("dense", "bm25", "hybrid")
CUTOFFS = (1, 5, 10)
Unit = Callable[[str, tuple[str, ...], int | None], str | None]


def evaluate_index(
    cfg: ResearchConfig, chunks: Sequence[Chunk], store: Store, embedder: Embedder
) -> dict[str, Any]:
    """Metrics per evaluation set (`research.corpus` and `research.documents`), per method."""
    beir = read_beir(Path(cfg.corpus))
    document_set = read_document_set(Path(cfg.documents))
    if beir.name == document_set.name:
        raise ConfigError(
            f"research.corpus and research.documents are both named {beir.name!r}: the "
            "evaluation sets are told apart by their folder names"
        )
    summary: dict[str, Any] = {
        "method": cfg.retrieval.method,
        "documents": len({c.source for c in chunks}),
        "chunks": len(chunks),
    }

    def passage(source: str, title_path: tuple[str, ...], page: int | None) -> str | None:
        return passage_of_source(beir.name, source)

    summary[beir.name] = {"passages": len(beir.passages)} | evaluate_set(
        cfg, store, embedder, beir.queries, beir.qrels, passage, {}
    )
    if beir.qrels:
        ranked = retrieval.tfidf_rank(
            [embedding_input(p.title_path, p.text) for p in beir.passages],
            [p.passage_id for p in beir.passages],
            {q: beir.queries[q] for q in sorted(beir.qrels)},
            max(CUTOFFS),
        )
        summary[beir.name]["tfidf"] = retrieval_metrics(ranked, beir.qrels)
    set_chunks = [c for c in chunks if document_set.unit(c.source, c.title_path, c.page)]
    summary[document_set.name] = {
        "files": len(document_set.files),
        "chunks": len(set_chunks),
    } | evaluate_set(
        cfg,
        store,
        embedder,
        document_set.queries,
        document_set.qrels,
        document_set.unit,
        document_set.kinds,
    )
    if document_set.qrels:
        summary[document_set.name]["tfidf"] = _tfidf_over_chunks(
            set_chunks, document_set.unit, document_set.queries, document_set.qrels
        )
    return summary


def evaluate_set(
    cfg: ResearchConfig,
    store: Store,
    embedder: Embedder,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    unit: Unit,
    kinds: dict[str, str],
) -> dict[str, Any]:
    """Every method's metrics on one set, and per kind of query where the set names kinds."""
    result: dict[str, Any] = {"queries": len(qrels)}
    if not qrels:
        return result
    query_ids = sorted(qrels)
    query_texts = [queries[q] for q in query_ids]
    query_vectors = embed_queries(embedder, query_texts)
    depth = max(CUTOFFS)
    for method in METHODS:
        search = _evaluation_retrieval(cfg.retrieval, method, depth)
        ranked = {
            qid: _units(retrieval.search(store, vector, text, search), unit)[:depth]
            for qid, text, vector in zip(query_ids, query_texts, query_vectors, strict=True)
        }
        result[method] = retrieval_metrics(ranked, qrels)
        for kind in sorted(set(kinds.values())):
            subset = {q: grades for q, grades in qrels.items() if kinds.get(q) == kind}
            result.setdefault(kind, {"queries": len(subset)})[method] = retrieval_metrics(
                ranked, subset
            )
    return result


def _units(hits: Sequence[Hit], unit: Unit) -> list[str]:
    return retrieval.aggregate_to_documents(
        hits,
        lambda hit: unit(
            hit.payload["source"], tuple(hit.payload["title_path"]), hit.payload["page"]
        ),
    )


def _tfidf_over_chunks(
    chunks: Sequence[Chunk], unit: Unit, queries: dict[str, str], qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    """The TF-IDF reference over a document set's own chunks, judged in its units."""
    units = [unit(c.source, c.title_path, c.page) or "" for c in chunks]
    ranked_chunks = retrieval.tfidf_rank(
        [embedding_input(c.title_path, c.text) for c in chunks],
        [str(i) for i in range(len(chunks))],
        {q: queries[q] for q in sorted(qrels)},
        5 * max(CUTOFFS),
    )
    ranked = {
        q: list(dict.fromkeys(units[int(i)] for i in hits))[: max(CUTOFFS)]
        for q, hits in ranked_chunks.items()
    }
    return retrieval_metrics(ranked, qrels)


def _evaluation_retrieval(cfg: RetrievalConfig, method: str, depth: int) -> RetrievalConfig:
    """The configured retrieval, with the method under test and enough chunks for `depth`
    distinct units."""
    return replace(cfg, method=method, top_k=max(cfg.candidates, 5 * depth))  # type: ignore[arg-type]


def embed_queries(embedder: Embedder, texts: list[str]) -> np.ndarray:
    return np.stack([embedder.embed_query(t) for t in texts])


def retrieval_metrics(
    ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    metrics = {f"recall_at_{k}": retrieval.recall_at_k(ranked, qrels, k) for k in CUTOFFS}
    metrics["success_at_1"] = retrieval.success_at_k(ranked, qrels, 1)
    metrics["success_at_10"] = retrieval.success_at_k(ranked, qrels, 10)
    metrics["mrr_at_10"] = retrieval.mrr_at_k(ranked, qrels, 10)
    metrics["ndcg_at_10"] = retrieval.ndcg_at_k(ranked, qrels, 10)
    return {k: round(v, 6) for k, v in metrics.items()}
