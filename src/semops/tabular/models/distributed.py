"""The MLP on several processes (DistributedDataParallel, in the workers torchrun starts): the
process group, each rank's rows of the global batch, its dropout masks, and what every rank must
see alike.

Every rank draws the same global permutation and splits each global batch of model.batch_size
rows: rank r takes rows r, r + world, ... (what a DistributedSampler over that permutation gives).
Each rank's loss is weighted so that DDP's average of the ranks' gradients is the gradient of the
global batch's mean loss, even when the last batch does not divide evenly, and its dropout masks
are its rows' of the global batch's mask, drawn alike on every rank from the same seeded
generator. On the CPU that is the mask one process draws: N processes then compute what one does,
up to the order of float additions in the gradient sums. On GPUs it is drawn with the CUDA
generator, not as nn.Dropout draws it on one process: N processes train as one does in
distribution (independent masks over the global batch), not number for number. Rank 0 scores the
validation split and sends that epoch's history row to every rank, and each rank takes the same
early-stopping decision from the same numbers."""

from __future__ import annotations

import atexit
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from semops.errors import SemopsError
from semops.tabular.models import torchrun
from semops.tabular.models.exact import SerialDropout


class Shard:
    """This rank's part of the job, and of the global batch being trained on."""

    def __init__(self, rank: int, world: int, device: torch.device) -> None:
        self.rank, self.world, self.device = rank, world, device
        self.batch_rows = 0
        self.positions = torch.zeros(0, dtype=torch.long)
        self.weight = 1.0

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of the global `batch`. A rank left without any (a last batch smaller
        than the world) trains on the batch's first row with weight 0: DDP needs every rank's
        backward pass to average the gradients."""
        self.batch_rows = len(batch)
        positions = torch.arange(self.rank, len(batch), self.world)
        self.weight = 1.0 if len(positions) else 0.0
        self.positions = positions if len(positions) else torch.zeros(1, dtype=torch.long)
        return batch[self.positions.to(batch.device)]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss to back-propagate, and this rank's summed loss (for the epoch's train loss):
        DDP divides the sum of the ranks' gradients by the world, so each rank's summed loss is
        scaled by world / global rows."""
        summed = nn.functional.cross_entropy(logits, labels, reduction="sum") * self.weight
        return summed * (self.world / self.batch_rows), summed.detach().float()

    def total(self, value: torch.Tensor) -> float:
        """`value` summed over the ranks."""
        dist.all_reduce(value)
        return float(value.item())

    def from_rank0(self, make: Callable[[], dict[str, float]]) -> dict[str, float]:
        """What `make` returns on rank 0 (the only rank that calls it), on every rank."""
        sent: list[Any] = [make() if self.rank == 0 else None]
        dist.broadcast_object_list(sent, src=0, device=self.device)
        received: dict[str, float] = sent[0]
        return received


class ShardDropout(SerialDropout):
    """SerialDropout on a rank's rows: it draws the mask of the whole global batch and keeps its
    rows' (every rank draws as much, so the generators stay in step). On the CPU that mask is the
    one SerialDropout draws on one process; on a GPU it comes from the device's generator, which
    torch.manual_seed seeds alike on every rank, so the ranks' rows still get independent masks
    (a plain nn.Dropout would give every rank the same ones)."""

    def __init__(self, p: float, shard: Shard) -> None:
        super().__init__(p)
        self.shard = shard

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        mask = torch.rand((self.shard.batch_rows, *x.shape[1:]), device=x.device)
        mask = mask[self.shard.positions.to(x.device)]
        keep = (mask >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


def join(device: torch.device) -> Shard | None:
    """In a torchrun worker of a world above one: this rank in the job's process group (gloo on
    the CPU; NCCL on the GPU of its local rank), joined on the first call and left when the
    process exits (a group destroyed and joined again through torchrun's store never meets).
    Otherwise None: one process."""
    world = torchrun.world_size()
    if world == 1:
        return None
    if device.type == "cuda":
        local = torchrun.local_rank()
        if local >= torch.cuda.device_count():
            raise SemopsError(
                f"train.distributed.nproc_per_node asks for GPU {local}, but this machine has "
                f"{torch.cuda.device_count()}; use at most one process per GPU"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(dist.destroy_process_group)
    return Shard(torchrun.rank(), world, device)


def wrap(network: nn.Module, shard: Shard) -> nn.Module:
    """`network` in DistributedDataParallel: its gradients averaged over the ranks."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [shard.device.index] if shard.device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)
