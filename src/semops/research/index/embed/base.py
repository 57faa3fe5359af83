"""What every embedder shares: the interface, its error, and the pure helpers that pool, batch
and check vectors.

Every provider returns float32 rows of unit length and checks each reply (count, dimension,
finite values) before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from semops.errors import SemopsError

# Fewer batches than this embed without a progress bar (a query, a small incremental run).
PROGRESS_MIN_BATCHES = 4


class EmbedderError(SemopsError):
    """A provider that cannot be reached, refuses, or answers something unusable."""


class Embedder(Protocol):
    @property
    def key(self) -> str:
        """Names the vectors: provider, model and variant (the embedding cache's folder)."""
        ...

    @property
    def dim(self) -> int: ...

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text in the provider's own tokenizer."""
        ...

    def embed_documents(self, texts: list[str], *, progress: bool = True) -> np.ndarray:
        """(len(texts), dim) float32, unit rows, in input order."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, unit length."""
        ...


def cache_key(*parts: str) -> str:
    """`provider/model/variant`, each part reduced to characters every filesystem accepts."""
    return "/".join(re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip(".") or "_" for part in parts)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors over the attention mask: (batch, seq, dim) -> (batch, dim)."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    # sentence-transformers clamps the token count at 1e-9 (an empty mask gives a zero vector)
    return summed / np.maximum(weights.sum(axis=1), 1e-9)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (torch.nn.functional.normalize's eps, as the model's config)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> list[np.ndarray]:
    """Indices grouped into batches of similar lengths (least padding), shortest first, of at
    most `batch_size` texts and, where `max_tokens` is given, at most that many tokens once
    padded to the batch's longest text (a longer text alone); ties keep input order, so the
    same texts always form the same batches."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        # sorted: the batch's longest text is its last
        full = end - start == batch_size or (
            end < len(order) and (end + 1 - start) * lengths[order[end]] > max_tokens
        )
        if full or end == len(order):
            batches.append(order[start:end])
            start = end
    return batches


def check_vectors(key: str, vectors: Any, n_inputs: int, dim: int | None) -> np.ndarray:
    """The reply as a float32 (n_inputs, dim) matrix, or an error saying what is wrong with it.
    `dim` None: any dimension, the same for every row."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbedderError(
            f"embedder {key} returned vectors of unequal length or non-numbers ({exc})"
        ) from exc
    n = matrix.shape[0] if matrix.ndim >= 1 else 0
    if n != n_inputs:
        raise EmbedderError(f"embedder {key} returned {n} vectors for {n_inputs} inputs")
    if n and matrix.ndim != 2:
        raise EmbedderError(f"embedder {key} returned an array of shape {matrix.shape}")
    if not n:
        return np.zeros((0, dim or 0), dtype=np.float32)
    if dim is not None and matrix.shape[1] != dim:
        raise EmbedderError(f"embedder {key} returned dimension {matrix.shape[1]}, expected {dim}")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise EmbedderError(
            f"embedder {key} returned non-finite values (NaN or infinity) in vector "
            f"{int(np.argmin(finite))}"
        )
    if not np.linalg.norm(matrix, axis=1).all():
        raise EmbedderError(f"embedder {key} returned a zero vector")
    return matrix


def progress_bar(batches: Sequence[Any], enabled: bool) -> Iterator[Any]:
    """The batches, with a progress bar when `enabled` and there are enough of them."""
    from tqdm import tqdm

    show = enabled and len(batches) >= PROGRESS_MIN_BATCHES
    yield from tqdm(batches, desc="embed", unit="batch", disable=not show)
