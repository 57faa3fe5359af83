"""research.engine: ray on a real Ray cluster (a head and a worker node started by `ray start` on
this machine, tests/raykit.py): the research-embed stage embeds through an actor pool and gives
the vectors and outputs of local mode, survives a lost worker node, and fails clearly, never
hanging, where the cluster is missing or stalls."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from projectkit import REPO
from raykit import RayCluster
from stagekit import DEFAULT_PARAMS, run_stage

from semops.config.research import LocalEmbedderConfig, ResearchConfig
from semops.errors import SemopsError
from semops.io import wait_until
from semops.research.documents import Chunk, sha256_text
from semops.research.index import rayembed
from semops.research.index.embed.local import LocalEmbedder
from semops.research.index.embedcache import EmbeddingCache
from semops.research.index.sync import embed_chunks, embedder_for
from semops.tracking.processes import session_members
from semops.tracking.server import free_port

PYFAQ = REPO / "samples/research/pyfaq"
# 114 chunks, in cache batches of 16 (BATCH_SIZE, sync.CACHE_BATCH's least): 8 batches, several
# on each node's actor (Ray Data hands an actor 2 at a time), so that the worker node can be lost
# while some are stored and it holds others.
PASSAGES = 40
BATCH_SIZE = 16


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-models")


def project(root: Path, model_cache: Path, **research: Any) -> Path:
    """A scratch project whose corpus is the first PASSAGES passages of the evaluation set (no
    documents: no Docling), embedding with one thread, as each 1-CPU node's actor does, in cache
    batches of BATCH_SIZE."""
    corpus = root / "corpus"
    (corpus / "qrels").mkdir(parents=True)
    lines = (PYFAQ / "corpus.jsonl").read_text().splitlines()[:PASSAGES]
    (corpus / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (corpus / "queries.jsonl").write_text("")
    (corpus / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    (root / "docs/documents").mkdir(parents=True)
    (root / "data/raw/research").mkdir(parents=True)
    (root / "data/.cache/research").mkdir(parents=True)
    (root / "data/.cache/research/models").symlink_to(model_cache)
    params = json.loads(json.dumps(DEFAULT_PARAMS))
    params["research"].update(corpus=str(corpus), documents=str(root / "docs"), **research)
    params["research"]["local"].update(threads=1, batch_size=BATCH_SIZE)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def embed(workdir: Path, **env: str) -> str:
    result = run_stage(workdir, "research_embed", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def vectors(workdir: Path) -> np.ndarray:
    """The embedding store's vectors of the stage's chunks, in chunk order."""
    hashes = pq.read_table(workdir / "data/research/chunks.parquet")["text_sha256"].to_pylist()
    index = json.loads((workdir / "data/research/index.json").read_text())
    cache = EmbeddingCache(workdir / "data/research/embeddings", index["embedder"], index["dim"])
    found_vectors, found = cache.lookup(hashes)
    assert found.all()
    return found_vectors


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """The stage in local mode: the reference (it also exports the ONNX model the actors load)."""
    workdir = project(tmp_path_factory.mktemp("local"), model_cache)
    embed(workdir)
    return workdir


def same_outputs(ray_dir: Path, local_dir: Path) -> None:
    for name in ("chunks.parquet", "index.json"):
        ours = (ray_dir / "data/research" / name).read_bytes()
        assert ours == (local_dir / "data/research" / name).read_bytes(), name
    np.testing.assert_allclose(vectors(ray_dir), vectors(local_dir), rtol=0, atol=1e-6)


def map_workers(sid: int) -> dict[int, bytes]:
    """The pool's actor processes among a node's, and their titles: Ray names such a process
    ray::MapWorker(...), with the method it runs appended (.submit: embedding a batch)."""
    titles = {}
    for pid in session_members(sid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
        except OSError:
            continue
        if b"MapWorker" in title:
            titles[pid] = title
    return titles


def test_the_ray_engine_matches_local_mode_and_survives_a_lost_worker_node(
    ray_cluster: RayCluster, local_run: Path, model_cache: Path, tmp_path: Path
) -> None:
    """One run does both (each run on the cluster costs tens of seconds): the worker node is
    SIGKILLed while its actor embeds a batch, once an earlier batch is stored and before the
    last is. The batch it was embedding (and any other Ray Data had handed it) goes with it:
    every vector arriving means it was run again, on the head's actor; and the outputs are local
    mode's."""
    workdir = project(tmp_path, model_cache, engine="ray")
    store = workdir / "data/research/embeddings"
    index = json.loads((local_run / "data/research/index.json").read_text())
    chunks = index["points"]
    lost: list[int] = []  # texts stored when the node was lost
    ended = threading.Event()

    def stored() -> int:
        return len(EmbeddingCache(store, index["embedder"], index["dim"]))

    def lose_the_worker_node() -> None:
        def ready() -> bool:
            titles = map_workers(ray_cluster.worker_sid).values()
            busy = any(title.endswith(b".submit") for title in titles)
            return ended.is_set() or (busy and stored() > 0)

        wait_until(ready, 300, 0.01)
        if not ended.is_set():
            ray_cluster.kill_worker_node()
            lost.append(stored())  # at least what was stored at the kill

    watcher = threading.Thread(target=lose_the_worker_node)
    watcher.start()
    try:
        out = embed(workdir, RAY_ADDRESS=ray_cluster.address)
    finally:
        ended.set()
        watcher.join()
    assert lost and 0 < lost[0] < chunks, (lost, chunks)  # lost mid-run
    assert f"{chunks} chunks, {chunks} embedded now" in out
    same_outputs(workdir, local_run)
    # Nothing left to embed: the cluster is not even contacted.
    assert ", 0 embedded now" in embed(workdir, RAY_ADDRESS=f"127.0.0.1:{free_port()}")


def test_a_stalled_cluster_fails_the_stage_within_the_timeout(
    ray_cluster: RayCluster, model_cache: Path, tmp_path: Path
) -> None:
    # No batch can finish within 0.5 s: the actors are still starting.
    workdir = project(tmp_path, model_cache, engine="ray", ray={"timeout": 0.5})
    started = time.monotonic()
    result = run_stage(workdir, "research_embed", RAY_ADDRESS=ray_cluster.address)
    assert result.returncode != 0
    assert "no batch finished on the Ray cluster" in result.stderr, result.stderr[-3000:]
    assert "research.ray.timeout" in result.stderr
    assert time.monotonic() - started < 120
    # The job's actors end with it.
    assert wait_until(
        lambda: not (map_workers(ray_cluster.head_sid) or map_workers(ray_cluster.worker_sid)),
        60,
        0.5,
    )


def chunk(text: str) -> Chunk:
    return Chunk("0" * 32, "s", (), None, True, text, 3, sha256_text(text))


def test_missing_or_wrong_settings_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = ResearchConfig(engine="ray")
    embedder = embedder_for(cfg)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SemopsError, match=r"research.engine is ray but RAY_ADDRESS is not set"):
        embed_chunks(cfg, embedder, [chunk("a text")], compact=False)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(SemopsError, match=r"RAY_ADDRESS='127.0.0.1:\d+': no Ray cluster answers"):
        embed_chunks(cfg, embedder, [chunk("a text")], compact=False)
    assert time.monotonic() - started < 30
    ollama = ResearchConfig(engine="ray", embedder="ollama")
    with pytest.raises(SemopsError, match=r"runs the local embedder only.*'ollama'"):
        embed_chunks(ollama, embedder_for(ollama), [chunk("a text")], compact=False)
    assert not list(tmp_path.rglob("*.npy"))


def test_the_actors_device_is_the_clusters_not_this_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cluster: the pool and the store's model variant follow research.local.device alone."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}]
    assert rayembed._pool(nodes, 2, "cpu", "a:1") == (6, 2.0, 0.0)  # GPUs or not
    assert rayembed._pool(nodes, 2, "cuda", "a:1") == (2, 1.0, 1.0)  # one actor per GPU
    with pytest.raises(SemopsError, match=r"device is cuda, but the Ray cluster at a:1 has no GPU"):
        rayembed._pool(nodes[1:], 2, "cuda", "a:1")
    with pytest.raises(SemopsError, match=r"threads is 16.*at most 8"):
        rayembed._pool(nodes, 16, "cpu", "a:1")

    def ray_embedder(device: str) -> LocalEmbedder:
        cfg = ResearchConfig(engine="ray", local=LocalEmbedderConfig(device=device))  # type: ignore[arg-type]
        embedder = embedder_for(cfg)
        assert isinstance(embedder, LocalEmbedder)
        return embedder

    cpu = LocalEmbedder(LocalEmbedderConfig(device="cpu"), tmp_path / "models")
    for device in ("auto", "cpu"):  # auto: whatever this machine has
        assert (ray_embedder(device).device, ray_embedder(device).key) == ("cpu", cpu.key)
    # The CUDA variant, named on this machine without a CUDA device.
    cuda = ray_embedder("cuda")
    fp16 = LocalEmbedder(LocalEmbedderConfig(precision="fp16", device="cpu"), tmp_path / "models")
    assert (cuda.device, cuda.precision, cuda.key) == ("cuda", "fp16", fp16.key)
    # An actor pinned to the stage's device whose weights give another key says so.
    other = cpu.key.rsplit("-", 1)[0] + "-00000000"
    with pytest.raises(SemopsError, match=r"same device \(cpu\) and precision.*weights differ"):
        rayembed.EmbedBatches(cpu.cfg, str(tmp_path / "models"), other, "cpu")
