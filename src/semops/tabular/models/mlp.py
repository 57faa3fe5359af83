"""A PyTorch multilayer perceptron: one training loop for CPU and GPU (bf16 autocast there), on one
process or several (DistributedDataParallel under torchrun: distributed.py), seeded and
deterministic, with early stopping on the validation loss."""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

from semops.config.schema import MlpConfig, TrainConfig
from semops.errors import SemopsError
from semops.tabular.models import distributed
from semops.tabular.models.base import (
    EarlyStopper,
    EpochReport,
    Trained,
    TrainingData,
    history_row,
    ignore_epoch,
)
from semops.tabular.models.distributed import Shard, ShardDropout
from semops.tabular.models.exact import ExactLinear, SerialDropout, ieee_sqrt


def build_network(
    n_features: int, n_classes: int, cfg: MlpConfig, shard: Shard | None = None
) -> nn.Sequential:
    """`shard`: this rank's, whose dropout masks are its rows' of the global batch's."""
    layers: list[nn.Module] = []
    width = n_features
    for _ in range(cfg.layers):
        dropout = SerialDropout(cfg.dropout) if shard is None else ShardDropout(cfg.dropout, shard)
        layers += [ExactLinear(width, cfg.hidden), nn.ReLU(), dropout]
        width = cfg.hidden
    layers.append(ExactLinear(width, n_classes))
    return nn.Sequential(*layers)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise SemopsError(
            "model.device is 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'"
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(train: TrainConfig, device: torch.device) -> None:
    torch.manual_seed(train.seed)
    torch.set_num_threads(train.threads)
    if device.type == "cuda":
        # The CPU kernels used here are deterministic at a fixed thread count; on a GPU, cuBLAS and
        # cuDNN must be told. (The switch imports torch's compiler, seconds that CPU runs skip.)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def fit(
    model_cfg: MlpConfig,
    train: TrainConfig,
    data: TrainingData,
    on_epoch: EpochReport = ignore_epoch,
) -> Trained:
    """One process, or (in torchrun's workers) DistributedDataParallel over all of them: then
    every rank returns the same result (distributed.py)."""
    device = resolve_device(model_cfg.device)
    shard = distributed.join(device)
    device = device if shard is None else shard.device
    return _fit(model_cfg, train, data, on_epoch, device, shard)


def _fit(
    model_cfg: MlpConfig,
    train: TrainConfig,
    data: TrainingData,
    on_epoch: EpochReport,
    device: torch.device,
    shard: Shard | None,
) -> Trained:
    seed_everything(train, device)
    network = build_network(data.x_train.shape[1], data.n_classes, model_cfg, shard)
    network.to(device)
    optimizer = AdamW(
        list(network.parameters()), lr=model_cfg.lr, weight_decay=model_cfg.weight_decay
    )
    autocast = torch.autocast(
        device_type=device.type,
        dtype=torch.bfloat16,
        enabled=model_cfg.amp and device.type == "cuda",
    )
    step = _Step(
        network if shard is None else distributed.wrap(network, shard),
        optimizer,
        autocast,
        torch.from_numpy(data.x_train).to(device),
        torch.from_numpy(data.y_train).to(device),
        shard,
    )
    x_val = torch.from_numpy(data.x_val).to(device)
    shuffle = torch.Generator().manual_seed(train.seed)
    n = len(data.x_train)
    stopper = EarlyStopper(train.early_stopping.patience, train.early_stopping.min_delta)
    best_state = _snapshot(network)
    history = []

    def score(epoch: int, train_loss: float) -> dict[str, float]:
        val_proba = _predict(network, x_val, autocast)
        return history_row(epoch, train_loss / n, val_proba, data.y_val)

    for epoch in range(1, train.epochs + 1):
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = step.epoch(order, model_cfg.batch_size)
        if shard is None:
            row = score(epoch, float(loss_sum.item()))
        else:
            row = shard.from_rank0(functools.partial(score, epoch, shard.total(loss_sum)))
        history.append(row)
        on_epoch(row)
        if stopper.improved(row["val_loss"], epoch):
            best_state = _snapshot(network)
        elif stopper.should_stop:
            break
    return Trained(best_state, history, stopper.best_epoch, device=device.type)


class _Step:
    """One epoch of optimizer steps over the training rows, in a given order: on one process
    the mean loss of each batch, on a rank of several its share of it (distributed.Shard)."""

    def __init__(
        self,
        network: nn.Module,
        optimizer: AdamW,
        autocast: torch.autocast,
        x: torch.Tensor,
        y: torch.Tensor,
        shard: Shard | None,
    ) -> None:
        self.network, self.optimizer, self.autocast = network, optimizer, autocast
        self.x, self.y, self.shard = x, y, shard

    def epoch(self, order: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The epoch's summed training loss (this rank's rows' only, on several)."""
        self.network.train()
        loss_sum = torch.zeros((), device=self.x.device)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            with self.autocast:
                if self.shard is None:
                    loss = nn.functional.cross_entropy(self.network(self.x[batch]), self.y[batch])
                    summed = loss.detach().float() * len(batch)
                else:
                    rows = self.shard.take(batch)
                    loss, summed = self.shard.loss(self.network(self.x[rows]), self.y[rows])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss_sum += summed
        return loss_sum


class AdamW:
    """torch.optim.AdamW's update, operation for operation (its single-tensor path, the one torch
    takes on CPU): torch's optimizers import torch._dynamo on their first step, seconds that every
    run of the train stage would pay for nothing. One difference: the square root is IEEE's,
    correctly rounded (`exact.ieee_sqrt`), where torch's CPU sqrt is MKL's vector math, whose last
    bit follows the CPU."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = params
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.steps = 0

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        step_size = self.lr / (1 - beta1**self.steps)
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        with torch.no_grad():
            for param, (mean, square) in zip(self.params, self.moments, strict=True):
                if param.grad is None:
                    continue
                grad = param.grad
                param.mul_(1 - self.lr * self.weight_decay)
                mean.lerp_(grad, 1 - beta1)
                square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (ieee_sqrt(square) / bias_correction2_sqrt).add_(self.eps)
                param.addcdiv_(mean, denom, value=-step_size)


def _snapshot(network: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().float().cpu().numpy().copy() for k, v in network.state_dict().items()}


def _predict(network: nn.Module, features: torch.Tensor, autocast: torch.autocast) -> np.ndarray:
    network.eval()
    with torch.no_grad(), autocast:
        proba = torch.softmax(network(features).float(), dim=1)
    return proba.cpu().numpy().astype(np.float64)
