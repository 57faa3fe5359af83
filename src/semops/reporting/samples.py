"""Sample retrievals for the report: the passages the configured retrieval finds for the first
few queries of each evaluation set, cited as `semops research ask` cites them.

Not written answers: those need Claude, a paid remote API whose text differs from run to run,
while the report opens offline and the same inputs give the same page. The passages are what an
answer would be written from, and with no API key `semops research ask` shows them too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from semops.config.research import ResearchConfig
from semops.config.schema import load_section
from semops.errors import SemopsError
from semops.reporting.content import Sample, SamplePassage
from semops.research.index.store.base import Hit
from semops.research.ingest.corpus import passage_of_source, read_beir, read_document_set
from semops.research.query.answer import citation_label, cut_at_word

QUERIES_PER_SET = 2
PASSAGES_PER_QUERY = 3
PASSAGE_CHARS = 360
Unit = Callable[[str, tuple[str, ...], int | None], str | None]
# An evaluation set: its name, queries, judgements, and the unit a chunk is judged by.
EvaluationSet = tuple[str, dict[str, str], dict[str, dict[str, int]], Unit]


def evaluation_sets(cfg: ResearchConfig) -> list[EvaluationSet]:
    beir = read_beir(Path(cfg.corpus))
    documents = read_document_set(Path(cfg.documents))

    def passage(source: str, title_path: tuple[str, ...], page: int | None) -> str | None:
        return passage_of_source(beir.name, source)

    return [
        (beir.name, beir.queries, beir.qrels, passage),
        (documents.name, documents.queries, documents.qrels, documents.unit),
    ]


def _passage(hit: Hit, judged: dict[str, int], unit: Unit) -> SamplePassage:
    p = hit.payload
    title_path = tuple(p["title_path"])
    text = " ".join(str(p["text"]).split())
    return SamplePassage(
        citation=citation_label(p["source"], title_path, p["page"], p.get("opens_section", True)),
        text=text if len(text) <= PASSAGE_CHARS else cut_at_word(text, PASSAGE_CHARS) or "",
        score=float(hit.score),
        relevant=judged.get(unit(p["source"], title_path, p["page"]) or "", 0) > 0,
    )


def sample_retrievals(cfg: ResearchConfig) -> tuple[Sample, ...]:
    """The first QUERIES_PER_SET judged queries (by id) of each evaluation set, each with the
    PASSAGES_PER_QUERY best passages by the configured method, marked where judged relevant."""
    from semops.research.index.sync import open_index
    from semops.research.query import retrieval

    search = replace(cfg.retrieval, top_k=PASSAGES_PER_QUERY)
    samples = []
    with open_index(cfg) as (store, embedder, _):
        for name, queries, qrels, unit in evaluation_sets(cfg):
            for query_id in sorted(qrels)[:QUERIES_PER_SET]:
                text = queries[query_id]
                hits = retrieval.search(store, embedder.embed_query(text), text, search)
                passages = tuple(_passage(h, qrels[query_id], unit) for h in hits)
                samples.append(Sample(name, text, passages))
    return tuple(samples)


def for_report() -> tuple[tuple[Sample, ...], str]:
    """The samples of params.yaml's research index and what to say of them; none, and why,
    where the index cannot be queried here (not built, another embedder, a server away)."""
    cfg: ResearchConfig = load_section("research")
    try:
        samples = sample_retrievals(cfg)
    except (SemopsError, OSError, ImportError) as exc:  # an embedder that cannot load here
        return (), f"Sample retrievals are not available here: {exc}"
    return samples, (
        f"The {PASSAGES_PER_QUERY} best passages by the configured retrieval "
        f"({cfg.retrieval.method}) for the first {QUERIES_PER_SET} queries of each evaluation "
        "set, cited as `semops research ask` cites them; ✓ where the set's judgements count the "
        "passage relevant. Written answers are left out: they need Claude, a paid remote API "
        "whose text differs from run to run (`make ask Q=...` writes one)."
    )
