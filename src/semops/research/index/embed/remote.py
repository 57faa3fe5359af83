"""The embedders behind an HTTP API: nomic-embed-text (or any model) over Ollama, and OpenAI's
text-embedding-3-small (or an OpenAI-compatible server), with the tokenizers that count their
tokens offline. Keys come only from the environment and never appear in a message; the ollama and
openai packages are imported when first used."""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semops.config.research import OllamaEmbedderConfig, OpenAIEmbedderConfig
from semops.io import sha256_file
from semops.redaction import redact
from semops.research.index.embed.base import (
    EmbedderError,
    cache_key,
    check_vectors,
    l2_normalize,
    progress_bar,
)
from semops.research.index.embed.local import minilm_dir, minilm_tokenizer

if TYPE_CHECKING:
    import openai
    import tiktoken

KNOWN_DIMS = {
    "nomic-embed-text": 768,
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# nomic-embed-text was trained with task prefixes: documents and queries are embedded apart.
TASK_PREFIXES = {"nomic-embed-text": ("search_document: ", "search_query: ")}


def _base_model(name: str) -> str:
    """`nomic-embed-text:v1.5` -> `nomic-embed-text` (an Ollama tag names a version)."""
    return name.split(":", 1)[0]


def _batched(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def decode_embedding(value: str | Sequence[float]) -> np.ndarray:
    """One embedding of an OpenAI reply: base64 of little-endian float32, or a list of floats."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


class RemoteEmbedder:
    """What the HTTP providers share: batches of `batch_size`, each reply checked, the task
    prefixes of the model, and the dimension (known, or fixed by the first reply)."""

    def __init__(self, key: str, model: str, batch_size: int) -> None:
        self._key = key
        self._dim: int | None = KNOWN_DIMS.get(_base_model(model))
        self._prefixes = TASK_PREFIXES.get(_base_model(model), ("", ""))
        self._batch_size = batch_size

    @property
    def key(self) -> str:
        return self._key

    @property
    def dim(self) -> int:
        if self._dim is None:  # a model we know nothing of: its first reply tells
            self.embed_query("dimension probe")
        assert self._dim is not None
        return self._dim

    def embed_documents(self, texts: list[str], *, progress: bool = True) -> np.ndarray:
        return self._embed([self._prefixes[0] + text for text in texts], progress)

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self._prefixes[1] + text], False)[0]

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        parts = [np.zeros((0, self._dim or 0), dtype=np.float32)]
        for batch in progress_bar(_batched(texts, self._batch_size), progress):
            vectors = check_vectors(self.key, self._request(batch), len(batch), self._dim)
            self._dim = vectors.shape[1]
            parts.append(vectors)
        return l2_normalize(np.concatenate(parts)) if texts else parts[0]

    def _request(self, batch: list[str]) -> Any:
        """The provider's vectors for one batch, in order."""
        raise NotImplementedError


class OllamaEmbedder(RemoteEmbedder):
    """An embedding model served by Ollama (`POST {host}/api/embed`); host from
    research.ollama.host, or OLLAMA_HOST when set."""

    def __init__(self, cfg: OllamaEmbedderConfig) -> None:
        super().__init__(cache_key("ollama", cfg.model), cfg.model, cfg.batch_size)
        self.cfg = cfg
        self.host = os.environ.get("OLLAMA_HOST") or cfg.host
        self._client: Any = None
        # Ollama exposes no tokenizer. nomic-embed-text uses BERT's uncased WordPiece vocabulary,
        # the same family as MiniLM's: its counts bound chunks well (nomic reads up to 8192).
        self._counter = minilm_tokenizer(minilm_dir(), None)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._counter.encode_batch(texts)]

    def _request(self, batch: list[str]) -> Any:
        import httpx
        import ollama

        if self._client is None:
            self._client = ollama.Client(host=self.host, timeout=self.cfg.timeout)
        where = f"Ollama at {self.host} (research.ollama.host, or OLLAMA_HOST)"
        try:
            return self._client.embed(model=self.cfg.model, input=batch).embeddings
        except ConnectionError as exc:
            raise EmbedderError(
                f"cannot connect to {where}: start it (`ollama serve`) and "
                f"`ollama pull {self.cfg.model}`"
            ) from exc
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise EmbedderError(
                    f"{where} does not have model {self.cfg.model!r}: "
                    f"run `ollama pull {self.cfg.model}`"
                ) from exc
            raise EmbedderError(
                f"{where} failed with status {exc.status_code}: {exc.error}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise EmbedderError(
                f"{where} did not answer within {self.cfg.timeout} s (research.ollama.timeout)"
            ) from exc
        except httpx.HTTPError as exc:
            raise EmbedderError(f"request to {where} failed: {exc}") from exc


CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# tiktoken_ext.openai_public.cl100k_base's pattern and special tokens: building the encoding from
# them and a local ranks file keeps tiktoken from downloading anything.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def cl100k_candidates() -> list[Path]:
    """Where a copy of cl100k_base's ranks file may lie on this machine: tiktoken's own caches
    (named by the sha1 of the URL), then the copy that litellm (a crawl4ai dependency) ships."""
    name = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    folders = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("DATA_GYM_CACHE_DIR")]
    folders.append(os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            folders.append(os.path.join(location, "litellm_core_utils", "tokenizers"))
    return [Path(folder) / name for folder in folders if folder]


@functools.cache
def cl100k_encoding() -> tiktoken.Encoding:
    """cl100k_base (the tokenizer of OpenAI's embedding models), from a local file only."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    for path in cl100k_candidates():
        if path.is_file() and sha256_file(path) == CL100K_SHA256:
            return tiktoken.Encoding(
                name="cl100k_base",
                pat_str=CL100K_PATTERN,
                mergeable_ranks=load_tiktoken_bpe(str(path), expected_hash=CL100K_SHA256),
                special_tokens=CL100K_SPECIAL,
            )
    raise EmbedderError(
        "counting tokens for OpenAI needs tiktoken's cl100k_base file, found in none of "
        f"{', '.join(str(p.parent) for p in cl100k_candidates())}: set TIKTOKEN_CACHE_DIR to a "
        f"folder that holds it, named {cl100k_candidates()[0].name}"
    )


class OpenAIEmbedder(RemoteEmbedder):
    """OpenAI embeddings (or an OpenAI-compatible server at research.openai.base_url, else
    OPENAI_BASE_URL), the key from OPENAI_API_KEY. The SDK retries 408, 409, 429, 5xx and
    connection errors up to research.openai.max_retries times, waiting as long as the server's
    Retry-After says, else backing off exponentially with jitter."""

    def __init__(self, cfg: OpenAIEmbedderConfig) -> None:
        api_key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not api_key:
            raise EmbedderError(
                "set OPENAI_API_KEY to use research.embedder=openai (keys are read only from "
                "the environment)"
            )
        super().__init__(cache_key("openai", cfg.model), cfg.model, cfg.batch_size)
        self.cfg = cfg
        self._api_key = api_key
        self.base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.where = f"OpenAI embeddings ({cfg.model} at {self.base_url or 'api.openai.com'})"
        self._client: Any = None

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in cl100k_encoding().encode_ordinary_batch(texts)]

    def _request(self, batch: list[str]) -> list[np.ndarray]:
        import openai

        if self._client is None:
            self._client = openai.OpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=self.cfg.max_retries,
                timeout=self.cfg.timeout,
            )
        try:
            reply = self._client.embeddings.create(
                model=self.cfg.model, input=batch, encoding_format="base64"
            )
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APIConnectionError as exc:
            failure = redact(f"{type(exc).__name__}: {exc.message}", self._api_key)
            raise self._retries_spent("failed", failure) from None
        items = sorted(reply.data, key=lambda item: item.index)
        return [decode_embedding(item.embedding) for item in items]

    def _status_error(self, exc: openai.APIStatusError) -> EmbedderError:
        """The error for a status the server answered with, after the SDK's retries."""
        status = exc.status_code
        failure = f"status {status}: {redact(str(exc.message), self._api_key)}"
        if status == 401:
            return EmbedderError(f"{self.where}: OPENAI_API_KEY was refused ({failure})")
        if status == 429:
            return self._retries_spent("rate-limited", failure)
        if status in (408, 409) or status >= 500:
            return self._retries_spent("failed", failure)
        return EmbedderError(f"{self.where} failed with {failure}")

    def _retries_spent(self, what: str, failure: str) -> EmbedderError:
        return EmbedderError(
            f"{self.where} {what} after {self.cfg.max_retries + 1} attempts "
            f"(research.openai.max_retries={self.cfg.max_retries}); last: {failure}"
        )
