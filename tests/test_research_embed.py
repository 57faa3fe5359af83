"""Embedders and the embedding cache: the local model really exported, quantized and run by
onnxruntime and compared with sentence-transformers; Ollama and OpenAI against a local HTTP
server speaking their wire formats (our client code unmodified); the cache on disk, including a
process killed mid-embedding."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import hashlib
import inspect
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semops.config.research import (
    LocalEmbedderConfig,
    OllamaEmbedderConfig,
    OpenAIEmbedderConfig,
)
from semops.errors import SemopsError
from semops.redaction import redact
from semops.research.documents import sha256_text
from semops.research.index.embed import export, make_embedder
from semops.research.index.embed.base import check_vectors, length_sorted_batches, mean_pool
from semops.research.index.embed.export import export_fingerprint, hide_broken_torchvision
from semops.research.index.embed.local import (
    LocalEmbedder,
    cuda_device_count,
    minilm_dir,
    resolve_device,
)
from semops.research.index.embed.remote import (
    OllamaEmbedder,
    OpenAIEmbedder,
    cl100k_candidates,
    cl100k_encoding,
)
from semops.research.index.embedcache import EmbeddingCache, embed_with_cache

SECRET = "sk-test-0123456789abcdefSECRET"


def _stdlib_docs() -> list[str]:
    """Real, varied English prose that no one here wrote: stdlib docstrings."""
    import argparse
    import collections
    import contextlib
    import csv
    import dataclasses
    import decimal
    import difflib
    import enum
    import fractions
    import functools
    import heapq
    import itertools
    import logging
    import pathlib
    import queue
    import random
    import re
    import sqlite3
    import statistics
    import string
    import tarfile
    import tempfile
    import unittest
    import urllib.parse
    import zipfile

    objects = [
        json, json.dumps, os.path.join, collections.OrderedDict, collections.Counter,
        itertools.groupby, itertools.product, functools.lru_cache, functools.partial, re.sub,
        re.compile, copy.deepcopy, copy, pathlib.Path, subprocess.run, subprocess.Popen,
        threading.Thread, threading.Lock, dt.datetime, dt.timedelta, random.shuffle,
        statistics.median, heapq, csv.DictReader, argparse.ArgumentParser, logging.Logger,
        zipfile.ZipFile, tarfile.open, hashlib, base64.b64encode, textwrap.dedent,
        shutil.copytree, tempfile.mkstemp, socket.socket, urllib.parse.urlparse,
        unittest.TestCase, contextlib.contextmanager, dataclasses.dataclass, enum.Enum,
        inspect.signature, sqlite3.connect, decimal.Decimal, fractions.Fraction, queue.Queue,
        difflib.SequenceMatcher, string.Template,
    ]  # fmt: skip
    return [inspect.getdoc(o) or "" for o in objects]


EDGE_CASES = [
    "",
    "copy",
    "Wie kopiere ich ein Objekt in Python? Mit copy.copy() oder copy.deepcopy().",
    "如何在 Python 中复制对象? 使用 copy 模块。",
    "def f(x):\n    return {k: v for k, v in x.items() if v is not None}  # 🐍 ✓",
    "word " * 600,  # far beyond the 256 tokens the model reads
]
PASSAGES = _stdlib_docs() + EDGE_CASES


# --------------------------------------------------------------------------- local model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def int8(model_dir: Path) -> LocalEmbedder:
    return LocalEmbedder(LocalEmbedderConfig(precision="int8", batch_size=32), model_dir)


@pytest.fixture(scope="session")
def fp32(model_dir: Path, int8: LocalEmbedder) -> LocalEmbedder:
    int8.session()  # exports fp32 on the way, so this one only loads it
    return LocalEmbedder(LocalEmbedderConfig(precision="fp32"), model_dir)


@pytest.fixture(scope="session")
def reference() -> np.ndarray:
    """sentence-transformers' vectors of PASSAGES (fp32, normalized as the model's config)."""
    hide_broken_torchvision()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    return np.asarray(model.encode(PASSAGES, batch_size=32), dtype=np.float32)


@pytest.fixture(scope="session")
def int8_vectors(int8: LocalEmbedder) -> np.ndarray:
    return int8.embed_documents(PASSAGES)


@pytest.fixture(scope="session")
def fp32_vectors(fp32: LocalEmbedder) -> np.ndarray:
    return fp32.embed_documents(PASSAGES)


# Short texts, for the tests that embed one at a time.
SHORT = sorted(PASSAGES, key=len)[:12]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_fp32_reproduces_sentence_transformers(
    fp32_vectors: np.ndarray, reference: np.ndarray
) -> None:
    assert fp32_vectors.dtype == np.float32 and fp32_vectors.shape == (len(PASSAGES), 384)
    assert cosines(fp32_vectors, reference).min() > 0.99999


def test_int8_stays_close_to_sentence_transformers(
    int8: LocalEmbedder, fp32: LocalEmbedder, int8_vectors: np.ndarray, reference: np.ndarray
) -> None:
    # 0.998 on the evaluation corpus's prose; docstrings with code and tables quantize worse.
    cos = cosines(int8_vectors, reference)
    assert cos.mean() >= 0.996, cos
    assert cos.min() >= 0.98, cos
    np.testing.assert_allclose(np.linalg.norm(int8_vectors, axis=1), 1.0, atol=1e-5)
    assert int8.onnx_path.stat().st_size < 0.85 * fp32.onnx_path.stat().st_size


def test_same_call_twice_gives_the_same_bytes(int8: LocalEmbedder, fp32: LocalEmbedder) -> None:
    for embedder in (int8, fp32):
        first = embedder.embed_documents(SHORT)
        assert first.tobytes() == embedder.embed_documents(SHORT).tobytes()


def test_fp32_vectors_do_not_depend_on_the_batch(fp32: LocalEmbedder) -> None:
    alone = np.stack([fp32.embed_query(p) for p in SHORT])
    together = fp32.embed_documents(SHORT[::-1])[::-1]
    assert alone.tobytes() == together.tobytes()


def test_int8_vectors_depend_on_the_batch(int8: LocalEmbedder) -> None:
    # Activations are quantized with one scale per batch, padding included: other neighbours,
    # other rounding. Short texts padded to long neighbours move most.
    alone = np.stack([int8.embed_query(p) for p in SHORT])
    together = int8.embed_documents(SHORT)
    cos = cosines(alone, together)
    assert 0.98 < cos.min() < 0.9999, cos


def test_one_text_at_a_time_makes_int8_independent_of_the_batch(model_dir: Path) -> None:
    single = LocalEmbedder(LocalEmbedderConfig(precision="int8", batch_size=1), model_dir)
    a = single.embed_documents(SHORT[:6])
    b = single.embed_documents(SHORT[5::-1])[::-1]
    assert a.tobytes() == b.tobytes()


def test_query_is_embedded_like_a_document_and_finds_its_answer(
    int8: LocalEmbedder, int8_vectors: np.ndarray
) -> None:
    query = "How do I make a deep copy of an object?"
    assert int8.embed_query(query).tobytes() == int8.embed_documents([query])[0].tobytes()
    scores = int8_vectors @ int8.embed_query(query)
    assert PASSAGES[int(np.argmax(scores))] == inspect.getdoc(copy.deepcopy)


def test_text_beyond_the_model_limit_is_truncated(fp32: LocalEmbedder) -> None:
    long = "word " * 600
    assert fp32.count_tokens([long]) == [602]  # counted whole: the chunker needs to know
    a, b = fp32.embed_documents([long, long + " different ending " * 50])
    assert a.tobytes() == b.tobytes()


def test_token_counts_include_the_special_tokens(int8: LocalEmbedder) -> None:
    assert int8.count_tokens(["", "hello world", "Hello, World!"]) == [2, 4, 6]


def test_exported_model_is_reused_by_a_new_process(int8: LocalEmbedder, model_dir: Path) -> None:
    int8.session()
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.glob("*.onnx")}
    script = (
        "import logging, sys; from pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from semops.config.research import LocalEmbedderConfig\n"
        "from semops.research.index.embed.local import LocalEmbedder\n"
        "config = LocalEmbedderConfig(precision='int8', batch_size=32)\n"
        "e = LocalEmbedder(config, Path(sys.argv[1]))\n"
        "v = e.embed_query('How do I copy an object in Python?')\n"
        "print(e.key, v.shape[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(model_dir)], capture_output=True, text=True, check=True
    )
    key, dim = done.stdout.split()
    assert (key, dim) == (int8.key, "384")
    assert "exporting" not in done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.glob("*.onnx")} == before


def test_damaged_model_file_is_exported_again(
    int8: LocalEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    int8.session()
    models = tmp_path / "models"
    shutil.copytree(int8.model_dir, models)
    damaged = models / int8.onnx_path.name
    damaged.write_bytes(damaged.read_bytes()[: 1 << 20])
    again = LocalEmbedder(LocalEmbedderConfig(precision="int8", batch_size=32), models)
    vector = again.embed_query("copy an object")
    err = caplog.text
    assert f"{damaged}: not a loadable ONNX model" in err and "exporting it again" in err
    assert vector.tobytes() == int8.embed_query("copy an object").tobytes()


def test_keys_name_provider_model_and_variant(int8: LocalEmbedder, fp32: LocalEmbedder) -> None:
    assert int8.key.startswith("local/all-MiniLM-L6-v2/int8-")
    assert fp32.key.startswith("local/all-MiniLM-L6-v2/fp32-")
    assert make_embedder(
        "local", LocalEmbedderConfig(), OllamaEmbedderConfig(), OpenAIEmbedderConfig(),
        fp32.model_dir,
    ).key == fp32.key  # the default: fp32  # fmt: skip


def test_unknown_local_model_names_the_key(model_dir: Path) -> None:
    with pytest.raises(SemopsError, match=r"research\.local\.model.*'bge-small'"):
        LocalEmbedder(LocalEmbedderConfig(model="bge-small"), model_dir)


def test_pooling_and_batching_helpers() -> None:
    hidden = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    np.testing.assert_array_equal(mean_pool(hidden, np.array([[1, 1, 0]])), [[2, 3, 4, 5]])
    batches = length_sorted_batches([5, 1, 5, 3, 1], 2)
    assert [b.tolist() for b in batches] == [[1, 4], [3, 0], [2]]
    # at most 9 tokens once padded: 1+1+3 fit (3x3), the 5s go one by one, 7 alone is over
    batches = length_sorted_batches([5, 1, 7, 3, 1, 5], 4, max_tokens=9)
    assert [b.tolist() for b in batches] == [[1, 4, 3], [0], [5], [2]]
    assert [b.tolist() for b in length_sorted_batches([1] * 5, 2, max_tokens=99)] == [
        [0, 1], [2, 3], [4]
    ]  # fmt: skip


# Real prose of the evaluation corpus: what the quality gate is about (docstrings with code and
# tables, PASSAGES, quantize worse).
CORPUS = Path(__file__).parents[1] / "samples" / "research" / "pyfaq" / "corpus.jsonl"
REAL = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines()[:40]]


def test_int8_stays_within_the_quality_gate_of_fp32(
    int8: LocalEmbedder, fp32: LocalEmbedder
) -> None:
    # The gate is the mean (0.998, README); the worst text here measured 0.997.
    cos = cosines(int8.embed_documents(REAL, progress=False), fp32.embed_documents(REAL))
    assert cos.mean() >= 0.998 and cos.min() >= 0.995, cos


def test_length_sorted_batches_give_the_vectors_of_one_text_at_a_time(
    model_dir: Path, int8: LocalEmbedder, fp32: LocalEmbedder
) -> None:
    texts = sorted(REAL, key=len)[:24]  # short ones, several to a batch
    assert len(length_sorted_batches(fp32.count_tokens(texts), 64, 512)) <= len(texts) / 3
    one = LocalEmbedderConfig(batch_size=1)
    reference = fp32.embed_documents(texts, progress=False)
    alone = LocalEmbedder(replace(one, precision="fp32"), model_dir).embed_documents(texts)
    # fp32: padding is masked; only the kernels' summation order may differ
    assert cosines(reference, alone).min() >= 0.99999
    # int8: each batch has its own activation scale, so batched and single vectors each err
    # from fp32 their own way (here by up to 0.003; both 0.998 on average, as the gate wants)
    batched = int8.embed_documents(texts, progress=False)
    alone = LocalEmbedder(one, model_dir).embed_documents(texts, progress=False)
    assert cosines(batched, alone).min() >= 0.995
    for vectors in (batched, alone):
        assert cosines(vectors, reference).min() >= 0.996


def test_device_selection() -> None:
    cpu_only = ["CPUExecutionProvider"]
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_device("auto", cpu_only, 0) == "cpu"
    assert resolve_device("auto", with_cuda, 0) == "cpu"  # onnxruntime-gpu on a machine without
    assert resolve_device("auto", with_cuda, 1) == "cuda"
    assert resolve_device("cpu", with_cuda, 1) == "cpu"
    with pytest.raises(SemopsError, match=r"research\.local\.device is cuda.*no CUDA execution"):
        resolve_device("cuda", cpu_only, 1)
    with pytest.raises(SemopsError, match=r"research\.local\.device is cuda.*no CUDA device"):
        resolve_device("cuda", with_cuda, 0)


def test_cpu_forced_runs_on_the_cpu_and_cuda_without_one_names_the_key(
    fp32: LocalEmbedder, model_dir: Path
) -> None:
    forced = LocalEmbedder(LocalEmbedderConfig(device="cpu"), model_dir)
    assert forced.session().get_providers() == ["CPUExecutionProvider"]
    assert forced.key == fp32.key  # the default precision
    if cuda_usable():
        return  # test_cuda_embeds_like_fp32 covers that side
    with pytest.raises(SemopsError, match=r"research\.local\.device is cuda"):
        LocalEmbedder(LocalEmbedderConfig(device="cuda"), model_dir)


def test_export_fingerprint_follows_the_export_settings(
    monkeypatch: pytest.MonkeyPatch, int8: LocalEmbedder, fp32: LocalEmbedder
) -> None:
    digest = "0" * 64
    base = {p: export_fingerprint(digest, p) for p in ("fp32", "int8", "fp16")}
    assert len(set(base.values())) == 3
    assert fp32.fingerprint != int8.fingerprint and fp32.key != int8.key
    for settings, key in ((export.EXPORT_SETTINGS, "optimizer"), (export.QUANTIZATION,
                          "projections"), (export.FP16, "keep_io_types")):  # fmt: skip
        monkeypatch.setitem(settings, key, "changed")
        changed = {p: export_fingerprint(digest, p) for p in base}
        assert changed != base
        monkeypatch.undo()
    assert export_fingerprint("1" * 64, "int8") != base["int8"]


def test_fp16_export_stays_close_to_fp32(fp32: LocalEmbedder, model_dir: Path) -> None:
    # Made for CUDA; onnxruntime's CPU provider runs it too, so its quality is checked here.
    fp16 = LocalEmbedder(LocalEmbedderConfig(precision="fp16", device="cpu"), model_dir)
    texts = REAL[:12]
    assert cosines(fp16.embed_documents(texts), fp32.embed_documents(texts)).min() >= 0.9999


def cuda_usable() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and (
        cuda_device_count() > 0
    )


@pytest.mark.skipif(not cuda_usable(), reason="no CUDA device (the CPU side is tested above)")
def test_cuda_embeds_like_fp32(fp32: LocalEmbedder, model_dir: Path) -> None:
    cuda = LocalEmbedder(LocalEmbedderConfig(device="auto"), model_dir)
    assert cuda.device == "cuda" and cuda.key.startswith("local/all-MiniLM-L6-v2/fp16-")
    assert cuda.session().get_providers()[0] == "CUDAExecutionProvider"
    cos = cosines(cuda.embed_documents(REAL), fp32.embed_documents(REAL))
    assert cos.min() >= 0.998, cos


# --------------------------------------------------------------------------- local HTTP server


@dataclass
class Sent:
    path: str
    headers: dict[str, str]
    body: Any


Reply = tuple[int, dict[str, str], Any]


@dataclass
class FakeAPI:
    """Answers each POST with `respond(body)`; remembers what was sent."""

    respond: Callable[[Any], Reply]
    sent: list[Sent] = field(default_factory=list)
    url: str = ""


@contextlib.contextmanager
def serve(respond: Callable[[Any], Reply]) -> Iterator[FakeAPI]:
    """A threaded HTTP server on a free port of 127.0.0.1."""
    api = FakeAPI(respond)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.loads(raw or b"null")
            headers = {k.lower(): v for k, v in self.headers.items()}
            api.sent.append(Sent(self.path, headers, body))
            status, reply_headers, reply = api.respond(body)
            data = json.dumps(reply).encode()  # NaN passes through as the bare token NaN
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def script(*replies: Reply | Callable[[Any], Reply]) -> Callable[[Any], Reply]:
    """Answer with each reply in turn, the last one for ever after."""
    queue = list(replies)

    def respond(body: Any) -> Reply:
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return reply(body) if callable(reply) else reply

    return respond


def fake_vector(text: str, dim: int) -> np.ndarray:
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- Ollama


def ollama_reply(dim: int = 768, count_delta: int = 0) -> Callable[[Any], Reply]:
    def reply(body: Any) -> Reply:
        texts = body["input"][: len(body["input"]) + count_delta] if count_delta else body["input"]
        vectors = [fake_vector(t, dim).tolist() for t in texts]
        return 200, {}, {"model": body["model"], "embeddings": vectors}

    return reply


@pytest.fixture
def ollama_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    with serve(ollama_reply()) as api:
        monkeypatch.setenv("OLLAMA_HOST", api.url)
        yield api


def test_ollama_sends_task_prefixes_in_batches(ollama_api: FakeAPI) -> None:
    embedder = OllamaEmbedder(OllamaEmbedderConfig(batch_size=2))
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    vectors = embedder.embed_documents(texts)
    query = embedder.embed_query("what is alpha?")
    assert [s.path for s in ollama_api.sent] == ["/api/embed"] * 4
    assert [s.body["model"] for s in ollama_api.sent] == ["nomic-embed-text"] * 4
    assert [s.body["input"] for s in ollama_api.sent] == [
        ["search_document: alpha", "search_document: beta"],
        ["search_document: gamma", "search_document: delta"],
        ["search_document: epsilon"],
        ["search_query: what is alpha?"],
    ]
    expected = np.stack([fake_vector("search_document: " + t, 768) for t in texts])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    np.testing.assert_allclose(query, fake_vector("search_query: what is alpha?", 768), atol=1e-6)
    assert (embedder.key, embedder.dim) == ("ollama/nomic-embed-text", 768)


def test_ollama_host_comes_from_config_unless_ollama_host_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serve(ollama_reply()) as api:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
        OllamaEmbedder(OllamaEmbedderConfig(host=api.url)).embed_query("x")
        monkeypatch.setenv("OLLAMA_HOST", api.url)
        OllamaEmbedder(OllamaEmbedderConfig(host="http://127.0.0.1:9")).embed_query("y")
        assert len(api.sent) == 2


def test_ollama_model_not_pulled_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    missing: Reply = (
        404,
        {},
        {"error": 'model "nomic-embed-text" not found, try pulling it first'},
    )
    with serve(script(missing)) as api:
        monkeypatch.setenv("OLLAMA_HOST", api.url)
        with pytest.raises(SemopsError, match="run `ollama pull nomic-embed-text`") as err:
            OllamaEmbedder(OllamaEmbedderConfig()).embed_query("x")
        assert api.url in str(err.value)


def test_ollama_connection_refused_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OLLAMA_HOST", host)
    with pytest.raises(SemopsError, match=f"cannot connect to Ollama at {host}"):
        OllamaEmbedder(OllamaEmbedderConfig()).embed_documents(["x"])


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (ollama_reply(count_delta=-1), "returned 2 vectors for 3 inputs"),
        (ollama_reply(dim=384), "returned dimension 384, expected 768"),
        (lambda body: (200, {}, {"embeddings": [[math.nan] * 768] * 3}), "returned non-finite"),
    ],
)
def test_bad_replies_fail_before_anything_is_cached(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    reply: Callable[[Any], Reply],
    message: str,
) -> None:
    with serve(script(reply)) as api:
        monkeypatch.setenv("OLLAMA_HOST", api.url)
        embedder = OllamaEmbedder(OllamaEmbedderConfig())
        cache = EmbeddingCache(tmp_path, embedder.key, embedder.dim)
        texts = ["a", "b", "c"]
        with pytest.raises(SemopsError, match=f"embedder ollama/nomic-embed-text {message}"):
            embed_with_cache(embedder, cache, texts, [sha256_text(t) for t in texts], 8)
    assert not list(tmp_path.rglob("*.npy"))


def test_ollama_counts_tokens_with_the_bert_vocabulary(ollama_api: FakeAPI) -> None:
    assert OllamaEmbedder(OllamaEmbedderConfig()).count_tokens(["hello world"]) == [4]
    assert not ollama_api.sent


# --------------------------------------------------------------------------- OpenAI


def openai_reply(
    encoding: str = "base64", dim: int = 1536, count_delta: int = 0, shuffle: bool = False
) -> Callable[[Any], Reply]:
    def reply(body: Any) -> Reply:
        texts = body["input"][: len(body["input"]) + count_delta]
        data = []
        for i, text in enumerate(texts):
            vector = fake_vector(text, dim)
            value = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode()
                if encoding == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        if shuffle:
            data.reverse()
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        return 200, {}, {"object": "list", "model": body["model"], "data": data, "usage": usage}

    return reply


def openai_error(status: int, message: str, **headers: str) -> Reply:
    error = {"message": message, "type": "error", "param": None, "code": None}
    return status, headers, {"error": error}


@pytest.fixture
def openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def openai_embedder(api: FakeAPI, **overrides: Any) -> OpenAIEmbedder:
    return OpenAIEmbedder(OpenAIEmbedderConfig(base_url=f"{api.url}/v1", **overrides))


@pytest.mark.usefixtures("openai_env")
@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_openai_request_and_reply(encoding: str) -> None:
    with serve(openai_reply(encoding, shuffle=True)) as api:
        embedder = openai_embedder(api, batch_size=3)
        texts = [f"text {i}" for i in range(5)]
        vectors = embedder.embed_documents(texts)
        query = embedder.embed_query("a question")
    assert [s.path for s in api.sent] == ["/v1/embeddings"] * 3
    assert {s.headers["authorization"] for s in api.sent} == {f"Bearer {SECRET}"}
    assert [s.body["input"] for s in api.sent] == [texts[:3], texts[3:], ["a question"]]
    assert {(s.body["model"], s.body["encoding_format"]) for s in api.sent} == {
        ("text-embedding-3-small", "base64")
    }
    np.testing.assert_allclose(vectors, np.stack([fake_vector(t, 1536) for t in texts]), atol=1e-6)
    np.testing.assert_allclose(query, fake_vector("a question", 1536), atol=1e-6)
    assert (embedder.key, embedder.dim) == ("openai/text-embedding-3-small", 1536)


@pytest.mark.usefixtures("openai_env")
def test_openai_honours_retry_after_on_429() -> None:
    limited = openai_error(429, "Rate limit reached", **{"retry-after-ms": "400"})
    with serve(script(limited, openai_reply())) as api:
        started = time.perf_counter()
        openai_embedder(api).embed_query("x")
        waited = time.perf_counter() - started
    assert len(api.sent) == 2
    assert waited >= 0.4


@pytest.mark.usefixtures("openai_env")
def test_openai_retries_server_errors() -> None:
    with serve(script(openai_error(500, "boom"), openai_error(503, "busy"), openai_reply())) as api:
        vector = openai_embedder(api).embed_query("x")
    assert len(api.sent) == 3
    np.testing.assert_allclose(vector, fake_vector("x", 1536), atol=1e-6)


@pytest.mark.usefixtures("openai_env")
def test_openai_persistent_rate_limit_is_a_clear_error() -> None:
    limited = openai_error(429, "Rate limit reached for requests", **{"retry-after": "0"})
    with serve(script(limited)) as api, pytest.raises(SemopsError) as err:
        openai_embedder(api, max_retries=2).embed_query("x")
    assert len(api.sent) == 3
    message = str(err.value)
    assert "rate-limited after 3 attempts" in message
    assert "status 429" in message and "Rate limit reached for requests" in message
    assert SECRET not in message


@pytest.mark.usefixtures("openai_env")
def test_openai_rejected_key_names_the_variable_and_hides_the_key() -> None:
    echoed = openai_error(401, f"Incorrect API key provided: {SECRET}. Also: sk-test-****CRET")
    with serve(script(echoed)) as api, pytest.raises(SemopsError) as err:
        openai_embedder(api).embed_query("x")
    assert len(api.sent) == 1  # not retried
    assert "OPENAI_API_KEY was refused" in str(err.value)
    assert SECRET not in str(err.value) and "sk-test-" not in str(err.value)


@pytest.mark.usefixtures("openai_env")
def test_openai_unreachable_is_retried_then_reported() -> None:
    cfg = OpenAIEmbedderConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    with pytest.raises(SemopsError, match=r"failed after 2 attempts.*APIConnectionError") as err:
        OpenAIEmbedder(cfg).embed_query("x")
    assert SECRET not in str(err.value)


@pytest.mark.usefixtures("openai_env")
@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (openai_reply(count_delta=-1), "returned 1 vectors for 2 inputs"),
        (openai_reply(dim=768), "returned dimension 768, expected 1536"),
        (openai_reply(encoding="float", dim=1536), None),
    ],
)
def test_openai_reply_is_checked(reply: Callable[[Any], Reply], message: str | None) -> None:
    with serve(script(reply)) as api:
        embedder = openai_embedder(api)
        if message is None:
            assert embedder.embed_documents(["a", "b"]).shape == (2, 1536)
            return
        with pytest.raises(SemopsError, match=message):
            embedder.embed_documents(["a", "b"])


@pytest.mark.usefixtures("openai_env")
def test_openai_nan_is_refused() -> None:
    nan = np.full(1536, np.nan, dtype="<f4")
    item = {
        "object": "embedding",
        "index": 0,
        "embedding": base64.b64encode(nan.tobytes()).decode(),
    }
    reply: Reply = (200, {}, {"object": "list", "model": "m", "data": [item], "usage": {}})
    with serve(script(reply)) as api, pytest.raises(SemopsError, match="non-finite"):
        openai_embedder(api).embed_query("x")


def test_missing_openai_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SemopsError, match="set OPENAI_API_KEY"):
        make_embedder(
            "openai", LocalEmbedderConfig(), OllamaEmbedderConfig(), OpenAIEmbedderConfig(),
            Path("unused"),
        )  # fmt: skip


@pytest.mark.usefixtures("openai_env")
def test_openai_counts_tokens_offline_like_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken

    texts = ["hello world", "How do I copy an object in Python?", "<|endoftext|> 💥 ünïcödé"]
    ours = OpenAIEmbedder(OpenAIEmbedderConfig()).count_tokens(texts)
    local_copy = next(p for p in cl100k_candidates() if p.is_file())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(local_copy.parent))
    theirs = tiktoken.get_encoding("cl100k_base")
    assert ours == [len(theirs.encode_ordinary(t)) for t in texts]
    assert ours[0] == 2
    assert cl100k_encoding() is cl100k_encoding()  # loaded once per process


# --------------------------------------------------------------------------- pure helpers


def test_redact_removes_the_key_and_key_shaped_strings() -> None:
    assert redact(f"bad key {SECRET}!", SECRET) == "bad key [redacted]!"
    assert redact("Incorrect API key provided: sk-proj-ab**********wxyz", None) == (
        "Incorrect API key provided: sk-[redacted]"
    )


def test_check_vectors_messages() -> None:
    ok = np.eye(3, dtype=np.float32)
    assert check_vectors("k", ok, 3, 3).dtype == np.float32
    with pytest.raises(SemopsError, match="embedder k returned 3 vectors for 4 inputs"):
        check_vectors("k", ok, 4, 3)
    with pytest.raises(SemopsError, match="dimension 3, expected 384"):
        check_vectors("k", ok, 3, 384)
    with pytest.raises(SemopsError, match="unequal length"):
        check_vectors("k", [[1.0, 0.0], [1.0]], 2, None)
    with pytest.raises(SemopsError, match="zero vector"):
        check_vectors("k", np.zeros((1, 3)), 1, 3)


# --------------------------------------------------------------------------- the cache

KEY = "test/model/v1"


def digests(texts: list[str]) -> list[str]:
    return [sha256_text(t) for t in texts]


def test_cache_add_lookup_and_reopen(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, KEY, 4)
    texts = ["a", "b", "c"]
    cache.add(digests(texts[:2]), np.eye(4, dtype=np.float32)[:2])
    cache.add(digests(texts[2:]), np.eye(4, dtype=np.float32)[2:3])
    reopened = EmbeddingCache(tmp_path, KEY, 4)
    vectors, found = reopened.lookup(digests(["c", "x", "a"]))
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(vectors, np.eye(4, dtype=np.float32)[[2, 3, 0]] * [[1], [0], [1]])
    assert len(list((tmp_path / "test" / "model" / "v1").glob("*.npy"))) == 2


def test_compact_is_byte_identical_for_the_same_content(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    texts = [f"t{i}" for i in range(10)]
    vectors = rng.standard_normal((10, 8)).astype(np.float32)
    one, two = EmbeddingCache(tmp_path / "1", KEY, 8), EmbeddingCache(tmp_path / "2", KEY, 8)
    one.add(digests(texts[:6]), vectors[:6])
    one.add(digests(texts[6:]), vectors[6:])
    two.add(digests(texts[::-1][:3]), vectors[::-1][:3])
    two.add(digests(texts[::-1][3:]), vectors[::-1][3:])
    one.compact()
    two.compact()
    files = [sorted(c.folder.glob("*.npy")) for c in (one, two)]
    assert [len(f) for f in files] == [1, 1]
    assert files[0][0].read_bytes() == files[1][0].read_bytes()
    one.compact(keep=set(digests(texts[:3])))
    reopened = EmbeddingCache(tmp_path / "1", KEY, 8)
    assert len(reopened) == 3
    _, found = reopened.lookup(digests(texts))
    assert found.tolist() == [True] * 3 + [False] * 7


def test_cache_of_5000_vectors_loads_in_milliseconds(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    vectors = rng.standard_normal((5000, 384)).astype(np.float32)
    cache = EmbeddingCache(tmp_path, KEY, 384)
    for start in range(0, 5000, 1000):
        cache.add(hashes[start : start + 1000], vectors[start : start + 1000])
    cache.compact()
    started = time.perf_counter()
    loaded, found = EmbeddingCache(tmp_path, KEY, 384).lookup(hashes)
    seconds = time.perf_counter() - started
    assert found.all() and loaded.tobytes() == vectors.tobytes()
    assert seconds < 0.5, seconds  # about 20 ms here when idle


def test_damaged_cache_file_is_reported_and_its_texts_embedded_again(
    ollama_api: FakeAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = OllamaEmbedder(OllamaEmbedderConfig())
    texts = [f"passage {i}" for i in range(6)]
    cache = EmbeddingCache(tmp_path, embedder.key, embedder.dim)
    _, embedded = embed_with_cache(embedder, cache, texts, digests(texts), 3)
    assert embedded == 6
    damaged = sorted(cache.folder.glob("*.npy"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-100])  # a disk that filled up mid-write
    reopened = EmbeddingCache(tmp_path, embedder.key, embedder.dim)
    assert f"ignoring {damaged}" in caplog.text
    assert len(reopened) == 3
    _, embedded = embed_with_cache(embedder, reopened, texts, digests(texts), 3)
    assert embedded == 3
    reopened.compact()
    assert not damaged.exists()
    assert len(list(cache.folder.glob("*.npy"))) == 1
    assert len(EmbeddingCache(tmp_path, embedder.key, embedder.dim)) == 6


def test_embed_with_cache_embeds_each_missing_text_once(
    ollama_api: FakeAPI, tmp_path: Path
) -> None:
    embedder = OllamaEmbedder(OllamaEmbedderConfig())
    cache = EmbeddingCache(tmp_path, embedder.key, embedder.dim)
    embed_with_cache(embedder, cache, ["b", "a"], digests(["b", "a"]), 10)
    texts = ["c", "a", "ccc", "c", "b", "dd"]
    before = len(ollama_api.sent)
    vectors, embedded = embed_with_cache(embedder, cache, texts, digests(texts), 2)
    sent = [t for s in ollama_api.sent[before:] for t in s.body["input"]]
    assert embedded == 3
    assert sent == ["search_document: c", "search_document: dd", "search_document: ccc"]
    expected = np.stack([fake_vector("search_document: " + t, 768) for t in texts])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    with pytest.raises(SemopsError, match="used with embedder"):
        embed_with_cache(embedder, EmbeddingCache(tmp_path, KEY, 768), ["a"], digests(["a"]), 1)


KILL_TEXTS = [f"passage number {i}" for i in range(40)]
KILL_CHILD = """
import json, sys
from pathlib import Path
from semops.config.research import OllamaEmbedderConfig
from semops.research.documents import sha256_text
from semops.research.index.embed.remote import OllamaEmbedder
from semops.research.index.embedcache import EmbeddingCache, embed_with_cache

texts = json.loads(sys.argv[2])
embedder = OllamaEmbedder(OllamaEmbedderConfig(batch_size=4))
cache = EmbeddingCache(Path(sys.argv[1]), embedder.key, embedder.dim)
embed_with_cache(embedder, cache, texts, [sha256_text(t) for t in texts], 4)
"""


def test_killed_mid_embedding_loses_no_finished_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    calls = 0

    def respond(body: Any) -> Reply:
        nonlocal calls
        calls += 1
        if calls == 4:  # the fourth batch never gets its answer: the process is killed
            release.wait(60)
        return ollama_reply()(body)

    with serve(respond) as api:
        monkeypatch.setenv("OLLAMA_HOST", api.url)
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(tmp_path), json.dumps(KILL_TEXTS)],
            env={**os.environ, "OLLAMA_HOST": api.url},
        )
        try:
            deadline = time.monotonic() + 60
            while len(api.sent) < 4 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.05)
            assert len(api.sent) == 4, "the child never reached its fourth batch"
            child.send_signal(signal.SIGKILL)
            assert child.wait(30) == -signal.SIGKILL
        finally:
            release.set()
            if child.poll() is None:
                child.kill()
        embedder = OllamaEmbedder(OllamaEmbedderConfig(batch_size=4))
        cache = EmbeddingCache(tmp_path, embedder.key, embedder.dim)
        assert len(cache) == 12  # three finished batches of four
        before = len(api.sent)
        vectors, embedded = embed_with_cache(embedder, cache, KILL_TEXTS, digests(KILL_TEXTS), 4)
        rerun = [t for s in api.sent[before:] for t in s.body["input"]]
    assert embedded == len(rerun) == 28
    expected = np.stack([fake_vector("search_document: " + t, 768) for t in KILL_TEXTS])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
