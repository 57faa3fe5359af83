"""Exact statistics of numeric columns read in pieces: medians by radix selection, means and
standard deviations from per-block partials merged in block order (Chan et al.).

Medians are exact: the same value `np.median` gives over the whole column (a zero median is
+0.0). A column's values map to 64-bit keys that sort as the values do; each pass over the
column counts, among the values whose key starts with the digits found so far, the next 16 bits
(a 65,536-bucket histogram), until the bucket holding the wanted rank has at most
`COLLECT_VALUES` values; one more pass collects those and sorts them. Memory: the histograms
and the collected values, whatever the column's length.

Means and standard deviations: each block's own two-pass mean and sum of squared deviations
(numpy's, as `np.mean` and `np.std` compute them over the block), merged in block order; one
block gives exactly numpy's figures over the whole column, several differ from them by a few
units in the last place (tests hold the relative difference under 1e-12). Blocks are fixed by the
data (the row groups of a Parquet file), not by the batch size, so the result is too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

DIGIT_BITS = 16
COLLECT_VALUES = 1 << 20
_SIGN = np.uint64(1 << 63)


def keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned keys of finite float64 values (-0.0 as 0.0)."""
    bits = (values + 0.0).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def from_key(key: int) -> float:
    bits = np.uint64(key)
    value = bits ^ _SIGN if bits & _SIGN else ~bits
    return float(np.array([value], dtype=np.uint64).view(np.float64)[0])


@dataclass(eq=False)
class _Rank:
    """Selecting the value of rank `rank` (from 0): the key digits found so far, and what the
    current pass gathers (a histogram of the next digit, or the bucket's keys themselves)."""

    rank: int
    prefix: int = 0
    known: int = 0  # bits of the key found
    bucket_size: int = -1  # values whose key starts with the prefix (-1: all of them)
    value: float | None = None
    histogram: np.ndarray | None = None
    found: list[np.ndarray] = field(default_factory=list)

    def matches(self, k: np.ndarray) -> np.ndarray:
        if not self.known:
            return np.ones(len(k), dtype=bool)
        return (k >> np.uint64(64 - self.known)) == np.uint64(self.prefix)

    def start_pass(self) -> None:
        collect = 0 <= self.bucket_size <= COLLECT_VALUES
        self.histogram = None if collect else np.zeros(1 << DIGIT_BITS, dtype=np.int64)
        self.found = []

    def see(self, k: np.ndarray) -> None:
        inside = k[self.matches(k)]
        if self.histogram is None:
            self.found.append(inside)
            return
        shift = np.uint64(64 - self.known - DIGIT_BITS)
        digits = ((inside >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        self.histogram += np.bincount(digits, minlength=1 << DIGIT_BITS)

    def end_pass(self) -> None:
        if self.histogram is None:
            self.value = from_key(int(np.sort(np.concatenate(self.found))[self.rank]))
            self.found = []
            return
        below = np.cumsum(self.histogram)
        digit = int(np.searchsorted(below, self.rank, side="right"))
        self.rank -= int(below[digit - 1]) if digit else 0
        self.prefix = (self.prefix << DIGIT_BITS) | digit
        self.known += DIGIT_BITS
        self.bucket_size = int(self.histogram[digit])
        if self.known == 64:  # every value in the bucket is this one
            self.value = from_key(self.prefix)


def exact_medians(
    counts: dict[str, int], read: Callable[[list[str]], Iterable[dict[str, np.ndarray]]]
) -> dict[str, float]:
    """The median of each column's present (non-NaN) values; `counts[name]` of them (> 0).
    `read(names)` reads the named columns again, in pieces of any size: {name: values}."""
    ranks = {name: [_Rank((n - 1) // 2), _Rank(n // 2)] for name, n in counts.items()}
    while True:
        pending = {n: [r for r in rs if r.value is None] for n, rs in ranks.items()}
        pending = {n: rs for n, rs in pending.items() if rs}
        if not pending:
            break
        for rank in (r for rs in pending.values() for r in rs):
            rank.start_pass()
        for piece in read(list(pending)):
            for name, rs in pending.items():
                k = keys(piece[name][~np.isnan(piece[name])])
                for rank in rs:
                    rank.see(k)
        for rank in (r for rs in pending.values() for r in rs):
            rank.end_pass()
    return {name: _middle(counts[name], rs[0].value, rs[1].value) for name, rs in ranks.items()}


def _middle(n: int, low: float | None, high: float | None) -> float:
    assert low is not None and high is not None
    if n % 2:
        return low
    with np.errstate(over="ignore"):  # as np.median: (a + b) / 2, overflowing to inf
        return float((np.float64(low) + np.float64(high)) / 2)


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of some values."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """numpy's two-pass figures: `mean` is `values.mean()`, `m2 / n` is `values.var()`."""
        if not len(values):
            return cls()
        mean = values.mean()
        deviations = values - mean
        return cls(len(values), float(mean), float(np.sum(deviations * deviations)))

    def merge(self, other: Moments) -> Moments:
        if not other.n:
            return self
        if not self.n:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(n, mean, m2)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0
