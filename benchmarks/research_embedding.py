"""Local embedder throughput and agreement: our onnxruntime all-MiniLM-L6-v2 (int8 and fp32)
beside sentence-transformers' `encode`, on the same passages and the same number of threads;
and, where onnxruntime has CUDA and a device, the embedder on the GPU (fp16) in chunks/s.

  python -m benchmarks.research_embedding               the first 500 passages of the corpus
  python -m benchmarks.research_embedding --n 2000      more of them

Passages come from samples/research/pyfaq/corpus.jsonl (`text`), or are synthetic where it is
absent. The ONNX export happens before anything is timed (a one-off, cached); both sides are
warmed up on a few passages first. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.common import REPO, Context, machine_info
from benchmarks.report import Result, Target

TITLE = "7. Local embedder vs sentence-transformers"

CORPUS = REPO / "samples" / "research" / "pyfaq" / "corpus.jsonl"
ST_BATCH_SIZES = (32,)
TARGET_SPEEDUP = 3.0
TARGET_COSINE = 0.998
TARGET_GPU_CHUNKS_PER_S = 5000
GPU_PASSAGES = 20000  # the corpus's passages repeated: enough for a GPU to reach its pace


def corpus_passages(n: int) -> list[str]:
    """The first n passages of the evaluation corpus, or seeded synthetic ones of similar length
    (about 200 words) where it is absent."""
    if CORPUS.exists():
        with CORPUS.open() as fh:
            return [json.loads(line)["text"] for line, _ in zip(fh, range(n), strict=False)]
    rng = random.Random(0)
    words = re.findall(r"[a-z]+", (json.__doc__ or "").lower())
    return [" ".join(rng.choice(words) for _ in range(200)) for _ in range(n)]


def _timed(embed: Any, passages: list[str]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    vectors = np.asarray(embed(passages), dtype=np.float32)
    return vectors, time.perf_counter() - started


def measure(
    passages: list[str],
    threads: int = 2,
    model_dir: Path | None = None,
    precisions: tuple[Literal["int8", "fp32"], ...] = ("int8", "fp32"),
    batch_tokens: int | None = None,
) -> dict[str, Any]:
    """passages/s of our local embedder (each precision) and of sentence-transformers, and the
    cosine between their vectors of each passage."""
    from semops.config.research import LocalEmbedderConfig
    from semops.research.index.embed.export import hide_broken_torchvision
    from semops.research.index.embed.local import LocalEmbedder, minilm_dir

    hide_broken_torchvision()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    warm = passages[:8]
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_dir or Path(tmp)
        ours: dict[Literal["int8", "fp32"], LocalEmbedder] = {}
        for precision in precisions:
            cfg = LocalEmbedderConfig(precision=precision, threads=threads, device="cpu")
            if batch_tokens is not None:
                cfg = replace(cfg, batch_tokens=batch_tokens)
            ours[precision] = LocalEmbedder(cfg, folder)
            ours[precision].embed_documents(warm, progress=False)  # exports once, then warms
        model = SentenceTransformer(str(minilm_dir()), device="cpu")
        model.encode(warm)
        tokens = ours[precisions[0]].count_tokens(passages)
        reference: dict[int, tuple[np.ndarray, float]] = {}
        for size in ST_BATCH_SIZES:
            reference[size] = _timed(lambda p, s=size: model.encode(p, batch_size=s), passages)
        best = min(reference, key=lambda s: reference[s][1])
        ref_vectors, ref_seconds = reference[best]
        result: dict[str, Any] = {
            "passages": len(passages),
            "threads": threads,
            "batch_tokens": ours[precisions[0]].batch_tokens,
            "tokens_mean": float(np.mean(tokens)),
            "truncated_share": float(np.mean(np.asarray(tokens) > 256)),
            "sentence_transformers": {
                str(size): {"seconds": secs, "passages_per_s": len(passages) / secs}
                for size, (_, secs) in reference.items()
            },
            "sentence_transformers_best_batch_size": best,
        }
        for precision, embedder in ours.items():
            vectors, seconds = _timed(
                lambda p, e=embedder: e.embed_documents(p, progress=False), passages
            )
            cos = np.einsum("ij,ij->i", vectors, ref_vectors) / np.linalg.norm(ref_vectors, axis=1)
            result[precision] = {
                "key": embedder.key,
                "seconds": seconds,
                "passages_per_s": len(passages) / seconds,
                "speedup_vs_sentence_transformers": ref_seconds / seconds,
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
            }
        result["gpu"] = measure_gpu(passages, folder)
    return result


def measure_gpu(passages: list[str], model_dir: Path) -> dict[str, Any]:
    """chunks/s of the embedder on CUDA (research.local.device cuda, cuda_precision fp16) over
    the passages repeated to GPU_PASSAGES, and its cosine to the fp32 CPU vectors; {"gpu": None}
    and why where there is no CUDA here."""
    from semops.config.research import LocalEmbedderConfig
    from semops.research.index.embed.base import EmbedderError
    from semops.research.index.embed.local import LocalEmbedder

    try:
        gpu = LocalEmbedder(LocalEmbedderConfig(device="cuda"), model_dir)
    except EmbedderError as exc:
        return {"device": None, "why": str(exc)}
    texts = (passages * (GPU_PASSAGES // len(passages) + 1))[:GPU_PASSAGES]
    gpu.embed_documents(passages[:256], progress=False)  # loads, warms cuDNN's choices
    vectors, seconds = _timed(lambda p: gpu.embed_documents(p, progress=False), texts)
    cpu = LocalEmbedder(LocalEmbedderConfig(precision="fp32", device="cpu"), model_dir)
    sample = passages[:200]
    cos = np.einsum("ij,ij->i", vectors[: len(sample)], cpu.embed_documents(sample))
    return {
        "device": "cuda",
        "key": gpu.key,
        "passages": len(texts),
        "seconds": seconds,
        "chunks_per_s": len(texts) / seconds,
        "cosine_to_cpu_fp32_min": float(cos.min()),
    }


def run(ctx: Context, result: Result) -> None:
    """`make bench`: the first 500 passages of the evaluation corpus, 2 threads."""
    out = measure(corpus_passages(500), 2, REPO / "data" / ".cache" / "research" / "models")
    st = out["sentence_transformers"][str(out["sentence_transformers_best_batch_size"])]
    from semops.config.research import LocalEmbedderConfig

    int8 = out["int8"]
    for precision in ("fp32", "int8"):
        default = ", the default" if precision == LocalEmbedderConfig().precision else ""
        speedup = out[precision]["speedup_vs_sentence_transformers"]
        result.targets.append(
            Target(
                f"local embedder ({precision}{default}) vs sentence-transformers `encode`, "
                "passages/s",
                f"{speedup:.2f}x",
                f">= {TARGET_SPEEDUP:g}x",
                speedup >= TARGET_SPEEDUP,
            )
        )
    result.targets += [
        Target(
            "int8: cosine to sentence-transformers' fp32 vectors (mean; the gate)",
            f"{int8['cosine_mean']:.4f} (min {int8['cosine_min']:.4f})",
            f">= {TARGET_COSINE}",
            int8["cosine_mean"] >= TARGET_COSINE,
        ),
        _gpu_target(out["gpu"]),
    ]
    rows = [
        ["sentence-transformers encode (torch, fp32)", f"{st['passages_per_s']:.1f}", "1.00x", "-"]
    ]
    for p in ("int8", "fp32"):
        rows.append(
            [f"ours, onnxruntime {p}", f"{out[p]['passages_per_s']:.1f}",
             f"{out[p]['speedup_vs_sentence_transformers']:.2f}x",
             f"{out[p]['cosine_mean']:.4f} / {out[p]['cosine_min']:.4f}"]
        )  # fmt: skip
    result.table(
        ["embedder", "passages/s", "vs sentence-transformers", "cosine mean / min"],
        rows,
        title=f"{out['passages']} passages of the evaluation corpus (mean "
        f"{out['tokens_mean']:.0f} tokens, {out['truncated_share']:.0%} over the 256-token "
        f"window), 2 threads, ours in length-sorted batches of at most {out['batch_tokens']} "
        "padded tokens",
    )
    result.raw = out


def _gpu_target(gpu: dict[str, Any]) -> Target:
    metric = "GPU (onnxruntime CUDA, fp16): chunks/s on one GPU"
    target = f">= {TARGET_GPU_CHUNKS_PER_S:,}/s"
    if gpu["device"] is None:
        return Target(metric, f"no GPU here ({gpu['why']})", target, None)
    return Target(
        metric,
        f"{gpu['chunks_per_s']:,.0f}/s (cosine to CPU fp32: min "
        f"{gpu['cosine_to_cpu_fp32_min']:.4f})",
        target,
        gpu["chunks_per_s"] >= TARGET_GPU_CHUNKS_PER_S,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="passages")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batch-tokens", type=int, default=None, help="padded tokens per call (default: conf's)"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=REPO / "data" / ".cache" / "research" / "models",
        help="where the exported ONNX models are cached (the research-embed stage's folder)",
    )
    args = parser.parse_args()
    result = measure(
        corpus_passages(args.n), args.threads, args.model_dir, batch_tokens=args.batch_tokens
    )
    result["targets"] = {
        "speedup": TARGET_SPEEDUP,
        "cosine_mean": TARGET_COSINE,
        "gpu_chunks_per_s": TARGET_GPU_CHUNKS_PER_S,
    }
    result["machine"] = machine_info()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
