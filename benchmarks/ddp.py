"""DDP training throughput: the MLP's samples/s on 1 and 2 CPU processes (torchrun, gloo) and the
scaling efficiency, samples/s(2) / (2 x samples/s(1)); on a machine with CUDA GPUs, also on 1
and all GPUs (NCCL).

`run` drives it from benchmarks/run.py: a fresh project runs download, clean and featurize
(the credit data), then each configuration is one torchrun job of `python -m benchmarks.ddp`,
the train stage's fit (semops.tabular.models.training.fit: DistributedDataParallel where the
world is above one, the single-process loop at one) on the training features replicated to
--rows rows. Rank 0 prints one JSON line. torch is imported in the job only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, Context, helper_env, timed
from benchmarks.report import Result, fmt_rate, fmt_s

TITLE = "3b. DDP training: samples/s on 1 and 2 processes (torchrun)"
# Besides model.batch_size: a global batch whose arithmetic outweighs its all-reduce.
LARGE_BATCH = 4096


def measure(rows: int, epochs: int, batch_size: int, device: str) -> dict[str, Any]:
    """Seconds of `epochs` epochs of training.fit on the training split replicated to `rows`
    rows, after an untimed 1-epoch fit (the process group's start, and DistributedDataParallel's
    import of torch._dynamo, about 2 s, on first use)."""
    import numpy as np

    from semops import paths
    from semops.config.schema import EarlyStopping, load_section
    from semops.tabular.featureio import load_features
    from semops.tabular.models import torchrun, training
    from semops.tabular.models.base import TrainingData

    model_cfg = dataclasses.replace(load_section("model"), batch_size=batch_size, device=device)
    train = load_section("train")
    x, y, _ = load_features(paths.processed_split("train"))
    x_val, y_val, _ = load_features(paths.processed_split("val"))
    index = np.arange(rows) % len(x)
    data = TrainingData(x[index], y[index], x_val, y_val, n_classes=int(y.max()) + 1)

    def fit(n: int) -> float:
        fixed = dataclasses.replace(train, epochs=n, early_stopping=EarlyStopping(n))
        start = time.perf_counter()
        fitted = training.fit(model_cfg, fixed, data)
        assert len(fitted.history) == n
        return time.perf_counter() - start

    warm_up = fit(1)
    seconds = fit(epochs)
    return {
        "world": torchrun.world_size(),
        "device": device,
        "rows": rows,
        "epochs": epochs,
        "batch_size": batch_size,
        "threads": train.threads,
        "warm_up_seconds": warm_up,
        "seconds": seconds,
        "samples_per_s": rows * epochs / seconds,
    }


def _job(project: Path, processes: int, args: list[str], gpu: bool) -> dict[str, Any]:
    env = helper_env(project)
    env["OMP_NUM_THREADS"] = "1"
    if gpu:
        del env["CUDA_VISIBLE_DEVICES"]  # helper_env hides GPUs (dvc.lock is the CPU result)
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(processes), "-m", __name__, *args]  # fmt: skip
    data: dict[str, Any] = timed(cmd, project, env=env, timeout=1800).last_json()
    return data


def _gpus(project: Path) -> int:
    env = helper_env(project)
    del env["CUDA_VISIBLE_DEVICES"]
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    return int(timed([PYTHON, "-c", probe], project, env=env).stdout.strip() or 0)


def _row(label: str, one: dict[str, Any], many: dict[str, Any]) -> list[str]:
    efficiency = many["samples_per_s"] / (many["world"] * one["samples_per_s"])
    return [
        label,
        str(one["batch_size"]),
        f"{fmt_rate(one['samples_per_s'])} ({fmt_s(one['seconds'])})",
        f"{many['world']}: {fmt_rate(many['samples_per_s'])} ({fmt_s(many['seconds'])})",
        f"{efficiency:.2f}",
    ]


def run(ctx: Context, result: Result) -> None:
    project = ctx.fresh_project("ddp")
    timed(["dvc", "repro", "featurize"], project)
    rows, epochs = ctx.args.ddp_rows, ctx.args.ddp_epochs
    raw: dict[str, Any] = {}
    table = []
    for batch in (None, LARGE_BATCH):
        args = ["--rows", str(rows), "--epochs", str(epochs), "--device", "cpu"]
        args += ["--batch-size", str(batch)] if batch else []
        one, two = _job(project, 1, args, gpu=False), _job(project, 2, args, gpu=False)
        raw[f"cpu_batch_{one['batch_size']}"] = {"1": one, "2": two}
        table.append(_row("CPU, gloo", one, two))
    gpus = _gpus(project)
    if gpus:
        args = ["--rows", str(rows), "--epochs", str(epochs), "--device", "cuda"]
        one, every = _job(project, 1, args, gpu=True), _job(project, gpus, args, gpu=True)
        raw["cuda"] = {"1": one, str(gpus): every}
        table.append(_row("CUDA GPUs, NCCL", one, every))
    else:
        table.append(["CUDA GPUs, NCCL", "-", "no GPU", "no GPU", "-"])
    result.table(
        ["processes", "global batch", "1 process", "N processes", "scaling efficiency"], table
    )
    first = raw[next(iter(raw))]["1"]
    result.notes += [
        f"The credit training features replicated to {rows:,} rows, {epochs} epoch(s), "
        f"{first['threads']} thread(s) per process; samples/s = rows x epochs / seconds of "
        "training.fit (each epoch also scores the validation split on rank 0), after an "
        "untimed 1-epoch fit. Scaling efficiency = samples/s(N) / (N x samples/s(1)).",
        "1 process is the default path (no process group); N processes split each global "
        "batch of the same size (the same rows per step, the same updates up to rounding), "
        "gradients averaged by DistributedDataParallel's all-reduce once per step.",
    ]
    result.raw = {"gpus": gpus, **raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, help="default: params.yaml's model.batch_size")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    batch = args.batch_size
    if batch is None:
        from semops.config.schema import load_section

        batch = load_section("model").batch_size
    from semops.tabular.models import torchrun

    data = measure(args.rows, args.epochs, batch, args.device)
    if torchrun.rank() == 0:
        print(json.dumps(data))


if __name__ == "__main__":
    main()
