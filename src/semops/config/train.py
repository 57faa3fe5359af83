"""Typed, validated `train` section of params.yaml: what every model trains with, and
`train.distributed`, how many processes train the MLP, on how many machines, and where they meet
(torchrun's settings)."""

from __future__ import annotations

from dataclasses import field

from pydantic import StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from semops.config.validation import STRICT, NonNegativeFloat, PositiveInt
from semops.errors import ConfigError


@dataclass(frozen=True, config=STRICT)
class EarlyStopping:
    patience: PositiveInt = 15
    """Epochs (boosting rounds for gbdt) without a better validation loss."""
    min_delta: NonNegativeFloat = 0.0


@dataclass(frozen=True, config=STRICT)
class DistributedConfig:
    """1 process on 1 machine (the default) trains as ever: no torchrun, no process group. More,
    and the train stage launches torchrun with DistributedDataParallel (mlp only)."""

    nproc_per_node: PositiveInt = 1
    """Processes on each machine: one per GPU on a GPU machine (NCCL), else CPU processes (gloo)
    of train.threads threads each."""
    nnodes: PositiveInt = 1
    """Machines: above 1, start the train stage on each with the same params."""
    rdzv_endpoint: StrictStr | None = None
    """host:port where the machines meet (torchrun's c10d rendezvous, served by the machine
    that host names); required when nnodes > 1. null on one machine: a private local one."""

    def __post_init__(self) -> None:
        where = "train.distributed.rdzv_endpoint"
        if self.rdzv_endpoint is None:
            if self.nnodes > 1:
                raise ConfigError(
                    f"{where} is required when train.distributed.nnodes is {self.nnodes}: "
                    "host:port of one of the machines, where they meet"
                )
            return
        host, _, port = self.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where} must be host:port, got {self.rdzv_endpoint!r}")

    @property
    def processes(self) -> int:
        return self.nproc_per_node * self.nnodes


@dataclass(frozen=True, config=STRICT)
class TrainConfig:
    """Settings every model trains with; a model's own ones are in its `model` section."""

    seed: StrictInt
    epochs: PositiveInt
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    threads: PositiveInt = 1
    """CPU threads (torch, gbdt): a fixed count keeps float reductions, and so the model,
    identical across machines with different core counts."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
