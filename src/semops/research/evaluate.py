"""The research-eval stage's work: retrieval metrics of the built index on the evaluation set,
for every method, with TF-IDF as the reference. Apart from research-embed, so that changing
retrieval settings re-runs only this."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from semops.config.research import ResearchConfig, RetrievalConfig
from semops.research.documents import Chunk, embedding_input
from semops.research.index.embed import Embedder
from semops.research.index.store.base import Store
from semops.research.ingest.corpus import passage_of_source, read_beir
from semops.research.query import retrieval

METHODS = ("dense", "bm25", "hybrid")
CUTOFFS = (1, 5, 10)


def evaluate_index(
    cfg: ResearchConfig, chunks: Sequence[Chunk], store: Store, embedder: Embedder
) -> dict[str, Any]:
    """Retrieval metrics on the evaluation set (`research.corpus`) for every method and the
    TF-IDF reference, ranked at the passage level (a passage ranks at its best chunk)."""
    beir = read_beir(Path(cfg.corpus))
    summary: dict[str, Any] = {
        "corpus": beir.name,
        "passages": len(beir.passages),
        "documents": len({c.source for c in chunks}),
        "chunks": len(chunks),
        "queries": len(beir.qrels),
        "method": cfg.retrieval.method,
    }
    if not beir.qrels:
        return summary
    query_ids = sorted(beir.qrels)
    query_texts = [beir.queries[q] for q in query_ids]
    query_vectors = embed_queries(embedder, query_texts)
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
