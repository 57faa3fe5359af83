"""text: bounded TF-IDF of free text equal to scikit-learn's, fitted on train, the same bits on
every run and machine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from projectkit import REPO

from semops.io import dump_json
from semops.tabular.text import feature_name, fit_text, terms, text_matrix

TRAIN = [
    "Great coffee, GREAT price!",
    "The coffee was stale and the price too high",
    None,
    "great  tea; would buy again",
    "Stale tea. Not great.",
    "",
    "price of the coffee went up",
]


def test_terms_are_scikit_learns_words_and_char_wb_trigrams() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(analyzer="word").build_analyzer()
    grams = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3)).build_analyzer()
    for text in [*(t for t in TRAIN if t), "a I x", "Ünïcode straße  ok", "tab\there"]:
        expected = [f"word:{w}" for w in words(text)] + [f"char:{g}" for g in grams(text)]
        assert terms(text) == expected, text


def test_vocabulary_is_the_most_frequent_terms_in_two_rows_or_more() -> None:
    spec = fit_text(TRAIN, max_terms=1000)
    counts = [spec["document_frequency"][spec["terms"].index(t)] for t in spec["terms"]]
    assert min(counts) >= 2
    assert spec["terms"] == sorted(spec["terms"])
    assert "word:coffee" in spec["terms"]  # in 3 rows
    assert "word:would" not in spec["terms"]  # in 1 row only
    assert spec["rows"] == len(TRAIN)  # missing and empty texts count as empty documents
    rows_with_coffee = 3
    index = spec["terms"].index("word:coffee")
    assert spec["document_frequency"][index] == rows_with_coffee
    assert spec["idf"][index] == pytest.approx(np.log((1 + 7) / (1 + rows_with_coffee)) + 1)


def test_width_is_bounded_and_ties_are_alphabetical() -> None:
    # Every word in exactly 2 rows: all tie, so the first in alphabetical order are kept.
    words = [f"w{i:03d}" for i in range(50)]
    train = [" ".join(words), " ".join(reversed(words)), "zz zz"]
    spec = fit_text(train, max_terms=10)
    assert len(spec["terms"]) == 10
    # Character n-grams tie with words (each in 2 rows): " w0" sorts before "w000" ... as terms.
    ranked = sorted(set(terms(train[0])))
    assert spec["terms"] == ranked[:10]
    # The order of the rows does not matter.
    assert fit_text(list(reversed(train)), max_terms=10) == spec


def test_more_frequent_terms_win_over_alphabetical_ones() -> None:
    train = ["zebra zebra", "zebra", "apple", "apple"] + ["zebra"] * 3
    zebra = ["char: ze", "char:bra", "char:ebr", "char:ra ", "char:zeb", "word:zebra"]
    assert fit_text(train, max_terms=6)["terms"] == zebra  # in 5 rows, apple's terms in 2
    # The 7th: the first in alphabetical order of apple's six terms.
    assert fit_text(train, max_terms=7)["terms"] == sorted([*zebra, "char: ap"])


def test_matrix_equals_scikit_learn_tfidf_over_the_same_vocabulary() -> None:
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    spec = fit_text(TRAIN, max_terms=40)
    words = [t.removeprefix("word:") for t in spec["terms"] if t.startswith("word:")]
    grams = [t.removeprefix("char:") for t in spec["terms"] if t.startswith("char:")]
    counters = [
        CountVectorizer(analyzer="char_wb", ngram_range=(3, 3), vocabulary=grams),
        CountVectorizer(analyzer="word", vocabulary=words),
    ]  # "char:" sorts before "word:": the same column order as spec["terms"]
    texts = [t or "" for t in TRAIN]
    counts = sp.hstack([c.transform(texts) for c in counters]).tocsr()
    tfidf = TfidfTransformer(sublinear_tf=True, smooth_idf=True).fit(counts)
    np.testing.assert_allclose(spec["idf"], tfidf.idf_, rtol=1e-12)
    other = ["GREAT coffee and tea", "unseen words only", None, "stale stale stale price"]
    for values in (TRAIN, other):
        expected = tfidf.transform(
            sp.hstack([c.transform([t or "" for t in values]) for c in counters])
        ).toarray()
        got = text_matrix(values, spec)
        assert got.dtype == np.float32
        assert got.shape == (len(spec["terms"]), len(values))
        np.testing.assert_allclose(got.T, expected, atol=1e-7)


def test_missing_and_unseen_texts_are_all_zeros() -> None:
    spec = fit_text(TRAIN, max_terms=40)
    matrix = text_matrix([None, float("nan"), "", "qqq zzz", "coffee"], spec)
    assert not matrix[:, :4].any()
    assert np.linalg.norm(matrix[:, 4]) == pytest.approx(1.0, abs=1e-6)


def test_a_spec_survives_json_and_feature_names_are_readable() -> None:
    spec = fit_text(TRAIN, max_terms=40)
    reloaded = json.loads(dump_json(spec))
    assert reloaded == spec
    values = ["great price", None, "stale tea"]
    assert text_matrix(values, reloaded).tobytes() == text_matrix(values, spec).tobytes()
    assert feature_name("review", "word:price") == "review~word:price"
    assert feature_name("review", "char: pr") == "review~char: pr"


# Computed once; a change means features (and so every model) differ between machines or versions.
PINNED = "814c81673d5e8e91f3e5c069fc7820d861323c113a713db4eb2ef768c8ac473d"

_FINGERPRINT = """
import hashlib, json, sys
from semops.io import dump_json
from semops.tabular.text import fit_text, text_matrix
train = json.loads(sys.argv[1])
spec = fit_text(train, max_terms=60)
print(hashlib.sha256(dump_json(spec).encode() + text_matrix(train, spec).tobytes()).hexdigest())
"""


def fingerprint(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", _FINGERPRINT, json.dumps(TRAIN)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return result.stdout.strip()


def test_output_is_byte_identical_across_processes_and_pinned() -> None:
    """Sets of terms iterate in an order that changes with Python's hash seed: none may leak."""
    prints = {fingerprint(seed) for seed in ("0", "1", "12345")}
    assert len(prints) == 1
    spec = fit_text(TRAIN, max_terms=60)
    here = hashlib.sha256(dump_json(spec).encode() + text_matrix(TRAIN, spec).tobytes())
    assert prints == {here.hexdigest()}
    assert here.hexdigest() == PINNED
