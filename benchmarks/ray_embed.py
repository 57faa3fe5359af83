"""research.engine: ray vs local: embedding throughput (chunks/s) of the same chunks in the stage's
process and on a real 2-node Ray cluster on this machine (tests/raykit.py: a head and a worker
node, 1 CPU each, one actor of 1 thread on each).

`run` drives it from benchmarks/run.py: a fresh project, a cluster, then one helper process per
engine, `python -m benchmarks.ray_embed --passages N --engine local|ray`, which chunks the first N
passages of the evaluation corpus and embeds them as research-embed does (embed_with_cache, the
store's batches, written as they arrive), into an empty embedding store of its own. It prints one
JSON line: seconds in all, and when each batch arrived.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, REPO, Context, helper_env, timed
from benchmarks.report import Result, fmt_s

TITLE = "7c. Embedding on a Ray cluster (research.engine: ray) vs local"
CORPUS = REPO / "samples" / "research" / "pyfaq" / "corpus.jsonl"


def measure(passages: int, engine: str, threads: int) -> dict[str, Any]:
    """Chunk and embed the first `passages` passages with `engine` into a new embedding store;
    the ONNX model is exported (or loaded) and warmed up before the clock starts."""
    import tempfile

    from semops.config.research import LocalEmbedderConfig, ResearchConfig
    from semops.research.documents import embedding_input
    from semops.research.index.chunking import chunk_documents
    from semops.research.index.embedcache import EmbeddingCache, embed_with_cache, run_here
    from semops.research.index.sync import _batch_size, embedder_for
    from semops.research.ingest.corpus import beir_documents, read_beir

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        (corpus / "qrels").mkdir(parents=True)
        lines = CORPUS.read_text().splitlines()[:passages]
        (corpus / "corpus.jsonl").write_text("\n".join(lines) + "\n")
        (corpus / "queries.jsonl").write_text("")
        (corpus / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n")
        cfg = ResearchConfig(engine=engine, local=LocalEmbedderConfig(threads=threads))  # type: ignore[arg-type]
        embedder = embedder_for(cfg)
        embedder.embed_documents(["warm up"], progress=False)
        chunks = chunk_documents(beir_documents(read_beir(corpus)), embedder.count_tokens, 256, 16)
        runner = run_here(embedder)
        if engine == "ray":
            from semops.research.index import rayembed

            runner = rayembed.ray_runner(cfg, embedder)
        arrivals: list[tuple[float, int]] = []  # (when, texts) of each batch

        def clocked(batches: list[list[str]]) -> Any:
            for item in runner(batches):
                arrivals.append((time.perf_counter(), len(item[1])))
                yield item

        cache = EmbeddingCache(Path(tmp) / "store", embedder.key, embedder.dim)
        started = time.perf_counter()
        embed_with_cache(
            embedder,
            cache,
            [embedding_input(c.title_path, c.text) for c in chunks],
            [c.text_sha256 for c in chunks],
            _batch_size(cfg),
            clocked,
        )
        seconds = time.perf_counter() - started
    return {
        "engine": engine,
        "threads": threads,
        "chunks": len(chunks),
        "seconds": seconds,
        "arrivals": [(t - started, n) for t, n in arrivals],
    }


def _job(project: Path, passages: int, engine: str, threads: int, **env: str) -> dict[str, Any]:
    args = ["--passages", str(passages), "--engine", engine, "--threads", str(threads)]
    cmd = [PYTHON, "-m", __name__, *args]
    data: dict[str, Any] = timed(cmd, project, env={**helper_env(project), **env}).last_json()
    return data


def _row(label: str, data: dict[str, Any]) -> list[str]:
    first = data["arrivals"][0][0]
    rest = data["chunks"] - data["arrivals"][0][1]
    steady = rest / (data["seconds"] - first) if data["seconds"] > first else float("nan")
    return [
        label,
        f"{data['chunks'] / data['seconds']:.1f}",
        fmt_s(data["seconds"]),
        fmt_s(first),
        f"{steady:.1f}",
    ]


def run(ctx: Context, result: Result) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from raykit import running_cluster

    project = ctx.fresh_project("ray")
    passages = ctx.args.ray_passages
    local = _job(project, passages, "local", 2)
    local_one = _job(project, passages, "local", 1)
    with running_cluster() as cluster:
        ray = _job(project, passages, "ray", 1, RAY_ADDRESS=cluster.address)
    result.table(
        ["engine", "chunks/s", "wall", "first batch after", "chunks/s after the first batch"],
        [
            _row("local, 1 process, 2 threads (default)", local),
            _row("local, 1 process, 1 thread", local_one),
            _row("ray, 2 nodes x 1 CPU, 1 actor of 1 thread each", ray),
        ],
    )
    result.notes += [
        f"The first {passages} passages of samples/research/pyfaq chunked as research-embed "
        f"does: {local['chunks']} chunks, embedded into an empty store by embed_with_cache in "
        "the store's batches (what research-embed runs for the chunks the store lacks). "
        "chunks/s = chunks / wall; wall starts after the model is loaded and warmed in the "
        "driver, so for ray it includes connecting, shipping the semops package and starting "
        "the actors (each loads the model): 'first batch after'.",
        "The cluster is two `ray start` nodes on this same 2-core machine (1 CPU each): the "
        "same cores as local mode, so this measures Ray's overhead, not a scale-out; on N "
        "machines the steady rate multiplies by the actors they hold.",
    ]
    result.raw = {"local": local, "local_1_thread": local_one, "ray": ray}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, required=True)
    parser.add_argument("--engine", choices=["local", "ray"], required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.passages, args.engine, args.threads)))


if __name__ == "__main__":
    main()
