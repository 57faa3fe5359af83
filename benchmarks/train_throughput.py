"""MLP training throughput: semops.tabular.models.mlp.fit against a minimal plain PyTorch loop.

Run from a built project (it reads params.yaml and data/processed/); prints one JSON line.
Both loops train the same network (build_network) on the same tensors with the same seeds,
batch size, thread count and number of epochs; ours also evaluates the validation split and
snapshots the best weights each epoch, which is part of what is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch
from torch import nn

import semops.tabular.models.mlp as mlp
from semops import paths
from semops.config.schema import EarlyStopping, MlpConfig, TrainConfig, load_section
from semops.tabular import models
from semops.tabular.featureio import load_features


def plain_loop(
    model_cfg: MlpConfig, train: TrainConfig, x: np.ndarray, y: np.ndarray, n_classes: int
) -> list[float]:
    """The minimal loop: shuffle, forward, cross-entropy, backward, AdamW step. Returns the mean
    training loss per epoch (kept on the device until the end, as ours does)."""
    device = mlp.resolve_device(train.device)
    torch.manual_seed(train.seed)
    torch.set_num_threads(train.threads)
    network = build(model_cfg, x.shape[1], n_classes).to(device)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=train.lr, weight_decay=train.weight_decay
    )
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=train.amp and device.type == "cuda"
    )
    x_t = torch.from_numpy(x).to(device)
    y_t = torch.from_numpy(y).to(device)
    shuffle = torch.Generator().manual_seed(train.seed)
    n = len(x_t)
    losses = []
    network.train()
    for _ in range(train.epochs):
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n, train.batch_size):
            batch = order[start : start + train.batch_size]
            with autocast:
                loss = nn.functional.cross_entropy(network(x_t[batch]), y_t[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().float() * len(batch)
        losses.append(loss_sum)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return [float(v.item()) / n for v in losses]


def build(model_cfg: MlpConfig, n_features: int, n_classes: int) -> nn.Module:
    return mlp.build_network(n_features, n_classes, model_cfg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model_cfg = load_section("model")
    if not isinstance(model_cfg, MlpConfig):
        raise SystemExit(f"params.yaml model is {model_cfg.name!r}, not mlp")
    base: TrainConfig = load_section("train")
    # A fixed number of epochs: early stopping's patience equals the epoch count.
    train = dataclasses.replace(
        base,
        epochs=args.epochs,
        early_stopping=EarlyStopping(args.epochs, base.early_stopping.min_delta),
    )
    classes = json.loads(paths.FEATURIZER.read_text())["target"]["classes"]
    x_train, y_train, _ = load_features(paths.processed_split("train"))
    x_val, y_val, _ = load_features(paths.processed_split("val"))
    data = models.TrainingData(x_train, y_train, x_val, y_val, n_classes=len(classes))
    samples = len(x_train) * args.epochs

    # Warm-up (not counted): creating the first optimizer imports torch._dynamo (seconds).
    warm = dataclasses.replace(train, epochs=1, early_stopping=EarlyStopping(1, 0.0))
    t0 = time.perf_counter()
    mlp.fit(model_cfg, warm, data)
    first_ours = time.perf_counter() - t0
    dynamo_after_ours = "torch._dynamo" in sys.modules
    t0 = time.perf_counter()
    plain_loop(model_cfg, warm, x_train, y_train, len(classes))
    first_plain = time.perf_counter() - t0

    ours_s, plain_s = [], []
    ours_losses: list[float] = []
    plain_losses: list[float] = []
    # Interleaved, each going first in turn, so drift in machine load hits both alike.
    for repeat in range(args.repeats):
        for which in ("ours", "plain") if repeat % 2 == 0 else ("plain", "ours"):
            t0 = time.perf_counter()
            if which == "ours":
                trained = mlp.fit(model_cfg, train, data)
                ours_s.append(time.perf_counter() - t0)
                ours_losses = [row["train_loss"] for row in trained.history]
            else:
                plain_losses = plain_loop(model_cfg, train, x_train, y_train, len(classes))
                plain_s.append(time.perf_counter() - t0)

    best_ours, best_plain = min(ours_s), min(plain_s)
    print(
        json.dumps(
            {
                "device": str(mlp.resolve_device(train.device)),
                "threads": train.threads,
                "torch_threads": torch.get_num_threads(),
                "epochs": args.epochs,
                "epochs_run_ours": len(ours_losses),
                "batch_size": train.batch_size,
                "train_rows": len(x_train),
                "features": int(x_train.shape[1]),
                "val_rows": len(x_val),
                "steps_per_epoch": -(-len(x_train) // train.batch_size),
                "ours_seconds": ours_s,
                "plain_seconds": plain_s,
                "ours_samples_per_s": samples / best_ours,
                "plain_samples_per_s": samples / best_plain,
                "ratio": best_plain / best_ours,
                "first_epoch_seconds_ours": first_ours,
                "first_epoch_seconds_plain": first_plain,
                "ours_imports_torch_dynamo": dynamo_after_ours,
                "max_abs_train_loss_diff": max(
                    abs(a - b) for a, b in zip(ours_losses, plain_losses, strict=True)
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
