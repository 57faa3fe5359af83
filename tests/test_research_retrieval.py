"""Retrieval: reciprocal rank fusion and the metrics on hand-computed cases (and nDCG against
scikit-learn's independent implementation), dense / BM25 / hybrid search over a real EdgeStore
with known answers, and the TF-IDF reference ranker against a TF-IDF computed here by hand."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semops.config.research import RetrievalConfig
from semops.errors import SemopsError
from semops.research.index.store.base import Hit, Point
from semops.research.index.store.edge import EdgeStore
from semops.research.query.retrieval import (
    aggregate_to_documents,
    dbsf,
    keep_confident_firsts,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    rrf,
    search,
    tfidf_rank,
)

# ----------------------------------------------------------------------------- rrf


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a", "d"]], [1.0, 1.0], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert dict(fused) == pytest.approx(
        {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 63}
    )


def test_rrf_weights_change_the_order() -> None:
    rankings = [["a", "b"], ["b", "a"]]
    assert [i for i, _ in rrf(rankings, [0.7, 0.3], k=1)] == ["a", "b"]
    assert [i for i, _ in rrf(rankings, [0.3, 0.7], k=1)] == ["b", "a"]
    # 0.7/1+1 + 0.3/2+1 = 0.45 for a; 0.7/3 + 0.3/2 = 0.3833 for b
    assert dict(rrf(rankings, [0.7, 0.3], k=1)) == pytest.approx({"a": 0.45, "b": 0.7 / 3 + 0.15})


def test_rrf_breaks_ties_by_id_and_counts_a_repeat_once() -> None:
    assert rrf([["y"], ["x"]], [1.0, 1.0], k=60) == [("x", 1 / 61), ("y", 1 / 61)]
    assert rrf([["a", "a", "b"]], [1.0], k=0) == [("a", 1.0), ("b", 1 / 3)]
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        rrf([["a"], ["b"]], [1.0], k=60)


# ----------------------------------------------------------------------------- dbsf


def test_dbsf_standardises_each_list_and_sums_the_weighted_scores() -> None:
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]  # mean 0.5, sd 0.3266
    lexical = [("c", 12.0), ("d", 2.0)]  # mean 7, sd 5
    sd = float(np.std([0.9, 0.5, 0.1]))
    low = 0.5 - 3 * sd
    expected = {
        "a": 0.7 * (0.9 - low) / (6 * sd),
        "b": 0.7 * (0.5 - low) / (6 * sd),
        "c": 0.7 * (0.1 - low) / (6 * sd) + 0.3 * (12 - (7 - 15)) / 30,
        "d": 0.3 * (2 - (7 - 15)) / 30,
    }
    fused = dbsf([dense, lexical], [0.7, 0.3])
    assert [item for item, _ in fused] == sorted(expected, key=lambda k: -expected[k])
    assert dict(fused) == pytest.approx(expected)


def test_dbsf_tells_a_standout_lead_from_a_narrow_one_where_rank_fusion_cannot() -> None:
    # Dense puts "y" first by a hair; BM25 puts "x" first far above the rest; neither has the
    # other's first. Rank fusion with equal weights cannot tell them apart; dbsf can.
    dense = [("y", 0.62), *((f"d{i}", 0.61 - i / 1000) for i in range(20))]
    lexical = [("x", 30.0), *((f"l{i}", 3.0 - i / 100) for i in range(20))]
    assert dbsf([dense, lexical], [0.5, 0.5])[0][0] == "x"
    fused = rrf([[i for i, _ in dense], [i for i, _ in lexical]], [0.5, 0.5], 60)
    assert fused[0][1] == fused[1][1]


def test_dbsf_gives_a_list_of_equal_scores_one_and_counts_an_id_once() -> None:
    assert dbsf([[("a", 2.0), ("b", 2.0), ("a", 1.0)]], [0.5]) == [("a", 0.5), ("b", 0.5)]
    with pytest.raises(ValueError, match="2 lists but 1 weights"):
        dbsf([[], []], [1.0])


def hits(*scored: tuple[str, float]) -> list[Hit]:
    return [Hit(item, score, {}) for item, score in scored]


def test_a_confident_first_hit_the_other_ranker_missed_is_kept_in_the_top_k() -> None:
    lexical = hits(("x", 50.0), *((f"l{i}", 1.0) for i in range(30)))
    dense = hits(*((f"d{i}", 0.9 - i / 100) for i in range(30)))
    fused = [(f"d{i}", 1.0 - i / 100) for i in range(5)] + [("x", 0.1)]
    kept = keep_confident_firsts(fused, [dense, lexical], top_k=3)
    assert [item for item, _ in kept] == ["d0", "d1", "x", "d2", "d3", "d4"]
    assert [score for _, score in kept] == sorted((score for _, score in kept), reverse=True)


def test_a_first_hit_that_is_not_confident_or_that_both_rankers_saw_stays_where_it_fell() -> None:
    fused = [(f"d{i}", 1.0 - i / 100) for i in range(5)] + [("x", 0.1)]
    dense = hits(*((f"d{i}", 0.9 - i / 100) for i in range(30)))
    unsure = hits(("x", 1.25), *((f"l{i}", 1.2 - i / 20) for i in range(30)))
    assert keep_confident_firsts(fused, [dense, unsure], top_k=3) == fused
    seen = hits(("x", 50.0), *((f"l{i}", 1.0) for i in range(30)))
    dense_too = [*dense, Hit("x", 0.1, {})]
    assert keep_confident_firsts(fused, [dense_too, seen], top_k=3) == fused


# ----------------------------------------------------------------------------- metrics

QRELS = {
    "q1": {"d1": 1, "d2": 1, "d8": 0},
    "q2": {"d3": 2},  # a grade above 1 counts as relevant, no more
    "q3": {"d9": 0},  # no relevant document: not averaged
}
RANKED = {
    "q1": ["d5", "d1", "d6", "d2"],
    "q2": ["d4", "d5", "d3"],
    "q3": ["d9"],
}


def test_recall_at_k_by_hand() -> None:
    assert recall_at_k(RANKED, QRELS, 1) == 0.0
    assert recall_at_k(RANKED, QRELS, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(RANKED, QRELS, 3) == pytest.approx((1 / 2 + 1) / 2)
    assert recall_at_k(RANKED, QRELS, 10) == pytest.approx(1.0)


def test_mrr_at_k_by_hand() -> None:
    assert mrr_at_k(RANKED, QRELS, 1) == 0.0
    assert mrr_at_k(RANKED, QRELS, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert mrr_at_k(RANKED, QRELS, 10) == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_ndcg_at_k_by_hand() -> None:
    # q1: hits at ranks 2 and 4 of two relevant; q2: its one relevant at rank 3.
    q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    q2 = (1 / math.log2(4)) / 1
    assert ndcg_at_k(RANKED, QRELS, 10) == pytest.approx((q1 + q2) / 2)
    assert q1 == pytest.approx(0.650921, abs=1e-6)
    # At k=2 q1 has one hit at rank 2, ideal two hits; q2 none.
    assert ndcg_at_k(RANKED, QRELS, 2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3)) / 2
    )


def test_a_query_without_a_ranking_scores_zero_and_a_repeat_counts_once() -> None:
    assert recall_at_k({"q1": ["d1", "d2"]}, QRELS, 10) == pytest.approx((1 + 0) / 2)
    assert recall_at_k({"q1": ["d1", "d1", "d2"], "q2": []}, QRELS, 2) == pytest.approx(0.5)
    assert ndcg_at_k({"q1": ["d1", "d1", "d2"]}, QRELS, 2) == pytest.approx(0.5)
    with pytest.raises(SemopsError, match="cutoff must be >= 1, got 0"):
        recall_at_k(RANKED, QRELS, 0)


def test_ndcg_agrees_with_scikit_learn() -> None:
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(30)]
    for _ in range(20):
        relevant = set(rng.choice(docs, size=int(rng.integers(1, 5)), replace=False).tolist())
        order = rng.permutation(len(docs))
        ranking = [docs[i] for i in order]
        y_true = np.array([[1.0 if d in relevant else 0.0 for d in ranking]])
        y_score = np.array([np.arange(len(ranking), 0, -1, dtype=float)])  # ranking order
        for k in (1, 5, 10):
            expected = ndcg_score(y_true, y_score, k=k)
            got = ndcg_at_k({"q": ranking}, {"q": dict.fromkeys(relevant, 1)}, k)
            assert got == pytest.approx(expected, abs=1e-12)


def test_aggregate_to_documents_ranks_a_document_at_its_best_chunk() -> None:
    hits = [Hit(f"c{i}", 1.0 - i / 10, {"doc": doc}) for i, doc in enumerate("ABACBD")]
    assert aggregate_to_documents(hits, lambda hit: hit.payload["doc"]) == ["A", "B", "C", "D"]
    assert aggregate_to_documents([], lambda hit: "never called") == []
    outside = [Hit("x", 0.9, {"doc": None}), *hits]
    assert aggregate_to_documents(outside, lambda hit: hit.payload["doc"]) == ["A", "B", "C", "D"]


# ----------------------------------------------------------------------------- search

DIM = 4
# Dense query "cats" (the third axis): p3, then p2, p1, p4 by their small third components.
# BM25 query "deepcopy object": p1 (both terms), then p4 ("objects").
CORPUS = [
    ("How do I copy an object? Use copy.deepcopy() for nested lists.", [1.0, 0.1, 0.02, 0.0]),
    ("Dogs bark at night; the dog barks loudly.", [0.0, 1.0, 0.2, 0.0]),
    ("Cats sleep all day and a cat purrs.", [0.05, 0.0, 1.0, 0.1]),
    ("Garbage collection frees objects nothing refers to.", [0.7, 0.0, 0.01, 0.7]),
]
CATS = np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32)


def point_id(n: int) -> str:
    return str(uuid.UUID(int=n))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore(tmp_path / "index", DIM, "test") as edge:
        edge.upsert(
            [
                Point(point_id(n), np.array(vector, dtype=np.float32), text, {"doc": f"p{n}"})
                for n, (text, vector) in enumerate(CORPUS, start=1)
            ]
        )
        yield edge


def docs(hits: list[Hit]) -> list[str]:
    return [hit.payload["doc"] for hit in hits]


def test_dense_and_bm25_search_return_their_own_rankings(store: EdgeStore) -> None:
    dense = search(store, CATS, "deepcopy object", RetrievalConfig(method="dense", top_k=3))
    assert docs(dense) == ["p3", "p2", "p1"]
    bm25 = search(store, CATS, "deepcopy object", RetrievalConfig(method="bm25", top_k=3))
    assert docs(bm25) == ["p1", "p4"]


def test_hybrid_fuses_both_rankings(store: EdgeStore) -> None:
    cfg = RetrievalConfig(
        method="hybrid", top_k=3, candidates=10, fusion="rrf", rrf_k=60, dense_weight=0.5
    )
    hits = search(store, CATS, "deepcopy object", cfg)
    # dense ranks p3 p2 p1 p4, BM25 ranks p1 p4: p1 = .5/63 + .5/61, p4 = .5/64 + .5/62, ...
    assert docs(hits) == ["p1", "p4", "p3"]
    assert [h.score for h in hits] == pytest.approx(
        [0.5 / 63 + 0.5 / 61, 0.5 / 64 + 0.5 / 62, 0.5 / 61]
    )
    assert hits[0].payload == {"doc": "p1"}


def test_hybrid_weight_one_or_zero_is_one_ranker_alone(store: EdgeStore) -> None:
    only_dense = RetrievalConfig(method="hybrid", top_k=4, dense_weight=1.0)
    assert docs(search(store, CATS, "deepcopy object", only_dense)) == ["p3", "p2", "p1", "p4"]
    only_bm25 = RetrievalConfig(method="hybrid", top_k=4, dense_weight=0.0)
    assert docs(search(store, CATS, "deepcopy object", only_bm25)) == ["p1", "p4"]


def test_hybrid_candidates_bound_what_each_ranker_contributes(store: EdgeStore) -> None:
    cfg = RetrievalConfig(method="hybrid", top_k=10, candidates=1, dense_weight=0.5)
    # p3 first of dense, p1 first of BM25: equal scores, so in point id order.
    assert docs(search(store, CATS, "deepcopy object", cfg)) == ["p1", "p3"]


def test_a_chunk_that_continues_a_section_yields_to_one_that_opens_a_section(
    tmp_path: Path,
) -> None:
    opening = np.array([1.0, 0.3, 0.0, 0.0], dtype=np.float32)
    continuing = np.array([1.0, 0.2, 0.0, 0.0], dtype=np.float32)  # nearer to the query
    with EdgeStore(tmp_path / "index", DIM, "test") as edge:
        edge.upsert(
            [
                Point(point_id(1), opening, "opens", {"doc": "open", "opens_section": True}),
                Point(point_id(2), continuing, "goes on", {"doc": "cont", "opens_section": False}),
            ]
        )
        query = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
        plain = RetrievalConfig(method="dense", continuation_penalty=0.0)
        assert docs(search(edge, query, "x", plain)) == ["cont", "open"]
        preferred = search(edge, query, "x", RetrievalConfig(method="dense"))
        assert docs(preferred) == ["open", "cont"]
        cosine = float(continuing @ query / np.linalg.norm(continuing))
        assert preferred[1].score == pytest.approx(cosine - 0.1, abs=1e-5)


# ----------------------------------------------------------------------------- TF-IDF


def by_hand_tfidf(doc_texts: list[str], query: str) -> list[float]:
    """TF-IDF as scikit-learn documents it: lowercase words of 2+ characters, tf = 1 + ln(count)
    (sublinear), idf = ln((1 + n) / (1 + df)) + 1, rows scaled to length 1; cosine."""
    import re

    def tokens(text: str) -> list[str]:
        return re.findall(r"(?u)\b\w\w+\b", text.lower())

    vocab = sorted({t for text in doc_texts for t in tokens(text)})
    n = len(doc_texts)
    idf = {t: math.log((1 + n) / (1 + sum(t in tokens(d) for d in doc_texts))) + 1 for t in vocab}

    def vector(text: str) -> np.ndarray:
        words = tokens(text)
        counts = {t: words.count(t) for t in vocab}
        row = np.array([(1 + math.log(c)) * idf[t] if c else 0.0 for t, c in counts.items()])
        norm = np.linalg.norm(row)
        return row / norm if norm else row

    q = vector(query)
    return [float(vector(d) @ q) for d in doc_texts]


def test_tfidf_rank_matches_a_tfidf_computed_by_hand() -> None:
    texts = [text for text, _ in CORPUS] + ["Copy the list: a copy of a copy is a new object."]
    ids = ["p1", "p2", "p3", "p4", "p5"]
    queries = {"copy": "how to copy an object", "cats": "cats", "none": "zebra"}
    ranked = tfidf_rank(texts, ids, queries, k=3)
    for qid, query in queries.items():
        scores = by_hand_tfidf(texts, query)
        expected = [ids[i] for i in sorted(range(5), key=lambda i: (-scores[i], ids[i]))]
        assert ranked[qid] == [d for d in expected if scores[ids.index(d)] > 0][:3]
    assert ranked["copy"][:2] == ["p1", "p5"]  # p1 shares "how", "an" and "copy" twice
    assert ranked["cats"] == ["p3"]
    assert ranked["none"] == []


def test_tfidf_rank_breaks_ties_by_id() -> None:
    ranked = tfidf_rank(
        ["same words", "other text", "same words"], ["z", "a", "m"], {"q": "same"}, 5
    )
    assert ranked == {"q": ["m", "z"]}


def test_tfidf_rank_damps_repeated_terms() -> None:
    # Raw counts put "b" first (0.816 against 0.789): eight "copy" pull "a" off the query's
    # direction. With 1 + ln(tf), "a" leads (0.891 against 0.816).
    texts = ["copy " * 8 + "lists", "copy lists tuples", "dogs bark", "tuples graphs"]
    assert tfidf_rank(texts, ["a", "b", "c", "d"], {"q": "copy lists"}, 2) == {"q": ["a", "b"]}
