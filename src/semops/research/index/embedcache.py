"""On-disk cache of embeddings keyed by (embedder key, sha256 of the embedded text): our own,
because an edited passage must re-embed only its chunks (measured: 1 chunk, 7% of a full run).

Layout: `<root>/<embedder key>/<sha256 of the file, 16 hex>.npy`, each file one .npy array of a
structured dtype: `sha256` (64 ASCII hex digits) and `vector` (dim float32). Embedding appends
one file per finished batch (written to a temporary name, then renamed), so a process killed
mid-embedding keeps every finished batch; `compact` merges all files into one sorted by hash,
the same bytes for the same content. A file whose bytes do not match its name, that does not
parse, or that holds other dimensions is reported and ignored: its texts are embedded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import numpy as np

from semops.errors import SemopsError
from semops.io import write_bytes
from semops.research.index.embed.base import Embedder, check_vectors

log = logging.getLogger(__name__)

HEX_DIGITS = 64


def record_dtype(dim: int) -> np.dtype:
    return np.dtype([("sha256", f"S{HEX_DIGITS}"), ("vector", "<f4", (dim,))])


def encode_records(hashes: Sequence[str], vectors: np.ndarray) -> bytes:
    """The .npy bytes of these rows, in the order given."""
    records = np.empty(len(hashes), dtype=record_dtype(vectors.shape[1]))
    records["sha256"] = [h.encode("ascii") for h in hashes]
    records["vector"] = vectors
    buffer = io.BytesIO()
    np.save(buffer, records, allow_pickle=False)
    return buffer.getvalue()


def decode_records(data: bytes, dim: int) -> np.ndarray:
    """Rows of a cache file; ValueError when it is not one for vectors of `dim`."""
    records = np.load(io.BytesIO(data), allow_pickle=False)
    if records.dtype != record_dtype(dim) or records.ndim != 1:
        raise ValueError(f"holds {records.dtype} {records.shape}, expected vectors of {dim}")
    if not np.isfinite(records["vector"]).all():
        raise ValueError("holds non-finite values")
    return records


def file_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16] + ".npy"


class EmbeddingCache:
    """Vectors of one embedder (`key`, vectors of `dim`) under `root`."""

    def __init__(self, root: Path, key: str, dim: int) -> None:
        self.folder = Path(root).joinpath(*key.split("/"))
        self.key = key
        self.dim = dim
        self._rows: dict[str, np.ndarray] = {}
        self._files: list[Path] = []
        self._corrupt: list[Path] = []
        self._read_all()

    def _read_all(self, passes: int = 20) -> None:
        """Load every cache file. A file merged away by another process's `compact` meanwhile is
        missed: its rows are in the merged file, written before it was removed, so the folder is
        listed again until a pass misses none."""
        seen: set[Path] = set()
        for _ in range(passes):
            # Dot files are other writers' temporaries (io.atomic_path), not cache files yet.
            listed = sorted(self.folder.glob("[!.]*.npy")) if self.folder.is_dir() else []
            vanished = [path for path in listed if path not in seen and not self._load(path)]
            seen.update(listed)
            if not vanished:
                return
        log.warning("embed: %s kept changing while read; missing texts are embedded again", self)

    def __repr__(self) -> str:
        return f"embedding cache {self.folder}"

    def _load(self, path: Path) -> bool:
        """Read one file (False when it vanished before it could be read)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # merged away by another process's compact
            return False
        try:
            if file_name(data) != path.name:
                raise ValueError("its bytes do not match its name (truncated or altered)")
            records = decode_records(data, self.dim)
        except (ValueError, EOFError, OSError) as exc:
            log.warning("embed: ignoring %s (%s); its texts will be embedded again", path, exc)
            self._corrupt.append(path)
            return True
        self._files.append(path)
        for digest, vector in zip(records["sha256"].astype(str), records["vector"], strict=True):
            self._rows.setdefault(digest, vector)
        return True

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, found): a (len(hashes), dim) float32 matrix, zero rows where `found` is
        False."""
        vectors = np.zeros((len(hashes), self.dim), dtype=np.float32)
        found = np.zeros(len(hashes), dtype=bool)
        for i, digest in enumerate(hashes):
            row = self._rows.get(digest)
            if row is not None:
                vectors[i] = row
                found[i] = True
        return vectors, found

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store one batch as one new file (atomically)."""
        if len(set(hashes)) != len(hashes):
            raise SemopsError(f"embedding cache {self.folder}: a batch repeats a text hash")
        bad = [h for h in hashes if len(h) != HEX_DIGITS or h.strip("0123456789abcdef")]
        if bad:
            raise SemopsError(
                f"embedding cache {self.folder}: {bad[0]!r} is not a lowercase sha256 hex digest"
            )
        matrix = check_vectors(self.key, vectors, len(hashes), self.dim)
        if not hashes:
            return
        data = encode_records(hashes, matrix)
        path = self.folder / file_name(data)
        write_bytes(path, data)
        self._files.append(path)
        for digest, vector in zip(hashes, matrix, strict=True):
            self._rows.setdefault(digest, vector)

    def compact(self, keep: set[str] | None = None) -> None:
        """Rewrite the cache as one file sorted by hash (only the hashes in `keep`, when given),
        and remove the batch files and any corrupt ones."""
        digests = sorted(self._rows if keep is None else set(self._rows) & keep)
        old = set(self._files) | set(self._corrupt)
        self._rows = {d: self._rows[d] for d in digests}
        self._files, self._corrupt = [], []
        if digests:
            matrix = np.stack([self._rows[d] for d in digests]).astype(np.float32)
            data = encode_records(digests, matrix)
            path = self.folder / file_name(data)
            write_bytes(path, data)
            self._files.append(path)
            old.discard(path)
        for path in old:
            path.unlink(missing_ok=True)


# Embeds batches of texts somewhere (research.engine): yields (batch index, its vectors) as each
# batch is done, in any order.
Results = Generator[tuple[int, np.ndarray], None, None]
BatchRunner = Callable[[list[list[str]]], Results]


def run_here(embedder: Embedder) -> BatchRunner:
    """The batches embedded in this process, one after another (research.engine: local)."""

    def run(batches: list[list[str]]) -> Results:
        for index, texts in enumerate(batches):
            yield index, embedder.embed_documents(texts, progress=False)

    return run


def embed_with_cache(
    embedder: Embedder,
    cache: EmbeddingCache,
    texts: Sequence[str],
    hashes: Sequence[str],
    batch_size: int,
    runner: BatchRunner | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors of `texts` (input order), embedding only those whose hash the cache lacks, each
    distinct hash once, in batches of `batch_size` (by `runner`: in this process when None),
    each batch stored as soon as it is done. Returns (vectors, number of texts embedded)."""
    from tqdm import tqdm

    if len(texts) != len(hashes):
        raise SemopsError(f"embed_with_cache: {len(texts)} texts but {len(hashes)} hashes")
    if cache.key != embedder.key:
        raise SemopsError(f"embedding cache for {cache.key} used with embedder {embedder.key}")
    vectors, found = cache.lookup(hashes)
    first = {h: i for i, h in reversed(list(enumerate(hashes))) if not found[i]}
    # Similar lengths together, shortest first: less padding in each batch (characters stand in
    # for tokens, which only the embedder can count).
    missing = sorted(first.values(), key=lambda i: (len(texts[i]), i))
    batches = [missing[start : start + batch_size] for start in range(0, len(missing), batch_size)]
    run = runner or run_here(embedder)
    with (
        tqdm(total=len(missing), desc="embed", unit="text", disable=not missing) as bar,
        contextlib.closing(run([[texts[i] for i in batch] for batch in batches])) as done,
    ):
        for index, batch_vectors in done:
            cache.add([hashes[i] for i in batches[index]], batch_vectors)
            bar.update(len(batches[index]))
    if missing:
        vectors, found = cache.lookup(hashes)
    assert found.all()
    return vectors, len(missing)
