"""Free text as a bounded number of TF-IDF features, fitted on the training split only.

A text's terms are its words (lowercased runs of 2+ word characters, scikit-learn's default
token pattern) and the character 3-grams of each whitespace-separated word padded with one space
either side (scikit-learn's `char_wb` analyzer). The vocabulary is the `max_terms` terms found in
the most training rows, among those in at least 2 (ties alphabetical); idf is scikit-learn's
smooth idf, ln((1 + n) / (1 + df)) + 1 over the n training rows (a missing text counts as an
empty one); term frequencies are sublinear (1 + ln tf); each row is L2-normalised. A missing text,
or one without a vocabulary term, encodes as all zeros.

Pure Python and numpy: no scikit-learn, and no numpy reduction or transcendental, whose results
may differ in the last bits between CPUs (numpy's SIMD loops); sums are `math.fsum` (exact), so
features are byte-identical on every machine.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

WORD = re.compile(r"\b\w\w+\b")
CHAR_NGRAM = 3
MIN_ROWS = 2
"""A term in fewer training rows than this is never in the vocabulary (one row: noise, ids)."""
WORD_PREFIX, CHAR_PREFIX = "word:", "char:"
SEPARATOR = "~"
"""Between the column and the term in a feature's name: `review~word:great`, `review~char: gr`
(a categorical feature is `column=category`, so the two cannot be confused)."""


def terms(text: str) -> list[str]:
    """A text's terms, repeated as often as they occur: `word:<word>` then `char:<3-gram>`."""
    lowered = text.lower()
    found = [WORD_PREFIX + word for word in WORD.findall(lowered)]
    for word in lowered.split():
        padded = f" {word} "  # at least 3 characters: one n-gram or more
        found.extend(
            CHAR_PREFIX + padded[i : i + CHAR_NGRAM] for i in range(len(padded) - CHAR_NGRAM + 1)
        )
    return found


def feature_name(column: str, term: str) -> str:
    return f"{column}{SEPARATOR}{term}"


def _texts(values: Iterable[Any]) -> list[str]:
    """Each value as text; a missing one (None, NaN, pandas' NA) as the empty text."""
    return [value if isinstance(value, str) else "" for value in values]


def fit_text(values: Iterable[Any], max_terms: int) -> dict[str, Any]:
    """The vocabulary and idf of one text column from its training values, as JSON-able data."""
    return fit_vocabulary(*term_rows(values), max_terms)


def term_rows(values: Iterable[Any]) -> tuple[int, Counter[str]]:
    """How many values there are, and in how many of them each term occurs: counts that add up
    over batches of a column. Exact, so memory grows with the distinct terms of the column
    (about 100 bytes each: character 3-grams are bounded by the alphabet, words are not)."""
    texts = _texts(values)
    rows_with: Counter[str] = Counter()
    for text in texts:
        rows_with.update(set(terms(text)))
    return len(texts), rows_with


def fit_vocabulary(rows: int, rows_with: Counter[str], max_terms: int) -> dict[str, Any]:
    """The vocabulary and idf from the term counts of a column's `rows` training values."""
    candidates = [term for term, count in rows_with.items() if count >= MIN_ROWS]
    # Python's sort with an explicit total key: the same order on every machine.
    chosen = sorted(candidates, key=lambda term: (-rows_with[term], term))[:max_terms]
    kept = sorted(chosen)
    return {
        "rows": rows,
        "sublinear_tf": True,
        "terms": kept,
        "document_frequency": [rows_with[term] for term in kept],
        "idf": [math.log((1 + rows) / (1 + rows_with[term])) + 1 for term in kept],
    }


def text_matrix(values: Iterable[Any], spec: dict[str, Any]) -> np.ndarray:
    """TF-IDF of each value over a fitted vocabulary: float32, one row per term (so each
    feature column is contiguous), one column per value."""
    texts = _texts(values)
    position = {term: j for j, term in enumerate(spec["terms"])}
    idf: list[float] = spec["idf"]
    matrix = np.zeros((len(position), len(texts)), dtype=np.float32)
    for i, text in enumerate(texts):
        counts = Counter(term for term in terms(text) if term in position)
        weights = {
            position[term]: _tf(count, spec["sublinear_tf"]) * idf[position[term]]
            for term, count in counts.items()
        }
        norm = math.sqrt(math.fsum(w * w for w in weights.values()))
        for j, weight in weights.items():
            matrix[j, i] = weight / norm
    return matrix


def _tf(count: int, sublinear: bool) -> float:
    return 1.0 + math.log(count) if sublinear else float(count)
