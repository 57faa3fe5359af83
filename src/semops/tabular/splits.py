"""Each row's split (0 train, 1 val, 2 test) from the hash of its raw row or key, with every
class guaranteed a row in every split; decided over the rows in chunks, so the hashes and labels
of a table larger than memory are read from disk a chunk at a time.

A row's split is its hash's position in [0, 1) against the split fractions, except for the few
key groups moved to give a class a row in a split it lacked: those are `overrides` (hash ->
split), so that a row's split needs only its hash and them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from semops.config.schema import SplitConfig
from semops.errors import SemopsError

Chunk = tuple[np.ndarray, np.ndarray]
"""Row hashes (uint64) and class numbers (int) of consecutive rows."""


def initial_codes(hashes: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    position = hashes.astype(np.float64) / 2.0**64
    bounds = np.array([cfg.train, cfg.train + cfg.val])
    return np.searchsorted(bounds, position, side="right").astype(np.int8)


def split_codes(hashes: np.ndarray, cfg: SplitConfig, overrides: dict[int, int]) -> np.ndarray:
    """The split of each row, from its hash and the groups moved."""
    codes = initial_codes(hashes, cfg)
    if overrides:
        moved = np.fromiter(overrides, dtype=np.uint64, count=len(overrides))
        where = np.isin(hashes, moved)
        lookup = dict(overrides)
        codes[where] = [lookup[int(h)] for h in hashes[where]]
    return codes


@dataclass
class _Nearest:
    """The row closest to a split's centre so far: the first one seen among equals."""

    distance: float = np.inf
    hash: int = 0


def plan_overrides(
    chunks: Callable[[], Iterable[Chunk]], names: Sequence[str], target: str, cfg: SplitConfig
) -> dict[int, int]:
    """The key groups to move (hash -> split) so that every class has a row in train, val and
    test. `chunks` reads the rows again on each call; class number k is `names[k]`, numbered in
    order of first appearance. Fails, naming the class, when a class has fewer than 3 key groups
    (distinct hashes) or cannot be placed."""
    check_groups(chunks, names, target)
    centres = np.array([cfg.train / 2, cfg.train + cfg.val / 2, 1 - cfg.test / 2])
    overrides: dict[int, int] = {}
    # Moving a group can empty a split of another class: repeat until every class is placed.
    for _ in range(3 * len(names)):
        counts = np.zeros((len(names), 3), dtype=np.int64)
        for hashes, labels in chunks():
            codes = split_codes(hashes, cfg, overrides)
            counts += np.bincount(labels * 3 + codes, minlength=3 * len(names)).reshape(-1, 3)
        missing = [(label, code) for label in range(len(names)) for code in range(3)
                   if counts[label, code] == 0]  # fmt: skip
        if not missing:
            return overrides
        label, code = missing[0]
        donor = int(np.argmax(counts[label]))
        nearest = _Nearest()
        for hashes, labels in chunks():
            rows = labels == label
            rows[rows] = split_codes(hashes[rows], cfg, overrides) == donor
            if rows.any():
                distance = np.abs(hashes[rows].astype(np.float64) / 2.0**64 - centres[code])
                best = int(np.argmin(distance))
                if distance[best] < nearest.distance:
                    nearest = _Nearest(float(distance[best]), int(hashes[rows][best]))
        overrides[nearest.hash] = code
    raise SemopsError(
        f"cannot place every class of {target!r} in train, val and test with these key groups"
    )


def check_groups(chunks: Callable[[], Iterable[Chunk]], names: Sequence[str], target: str) -> None:
    """Every class needs 3 key groups, one for each split: at most 3 distinct hashes per class
    are kept while counting."""
    seen: list[set[int]] = [set() for _ in names]
    for hashes, labels in chunks():
        for label, groups in enumerate(seen):
            rows = hashes[labels == label]
            # The first rows nearly always hold 3 groups: only then is it worth sorting them all.
            for some in (rows[:64], rows):
                if len(groups) < 3:
                    groups.update(np.unique(some)[:3].tolist())
        if all(len(groups) >= 3 for groups in seen):
            return
    for label, groups in enumerate(seen):
        if len(groups) < 3:
            raise SemopsError(
                f"class {names[label]!r} of {target!r} has {len(groups)} row(s) (or key "
                "groups); each class needs at least 3 to appear in train, val and test"
            )


def assign_splits(
    hashes: np.ndarray, labels: np.ndarray, target: str, cfg: SplitConfig
) -> np.ndarray:
    """Split code per row (0 train, 1 val, 2 test) from its row hash, so a row's split depends
    only on its key and the seed; then every class is guaranteed a row in every split.

    Rows with equal hashes (a shared `data.key`) form a group and always move together."""
    import pandas as pd

    codes, uniques = pd.factorize(labels)  # numbered in order of first appearance
    names = [str(name) for name in uniques]
    overrides = plan_overrides(lambda: [(hashes, codes)], names, target, cfg)
    return split_codes(hashes, cfg, overrides)
