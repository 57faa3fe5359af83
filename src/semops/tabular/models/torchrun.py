"""torchrun from the train stage's side: whether this process is one of its workers (which rank,
of how many), and starting it when train.distributed asks for more than one process. No torch
here: a stage process that only launches torchrun does not pay for importing it."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from semops.config.schema import TrainConfig
from semops.errors import ConfigError

log = logging.getLogger(__name__)

# What torchrun sets in each worker's environment (MASTER_ADDR and MASTER_PORT too).
WORKER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
# Signals that end a run: passed on to torchrun, which ends its workers before it exits.
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def is_worker() -> bool:
    return all(name in os.environ for name in WORKER_VARIABLES)


def rank() -> int:
    """This process's rank among all of the job's processes: 0 outside torchrun."""
    return int(os.environ["RANK"]) if is_worker() else 0


def world_size() -> int:
    return int(os.environ["WORLD_SIZE"]) if is_worker() else 1


def local_rank() -> int:
    return int(os.environ["LOCAL_RANK"]) if is_worker() else 0


def should_launch(train: TrainConfig) -> bool:
    """More than one process asked for, and this is not yet one of torchrun's workers (under
    torchrun, its command line's settings are the job's)."""
    return train.distributed.processes > 1 and not is_worker()


def require_mlp(model_name: str, processes: int) -> None:
    """Refuse `processes` above one for any model but the mlp, the only one that splits its
    batches over the ranks: any other would train whole on every rank."""
    if processes > 1 and model_name != "mlp":
        raise ConfigError(
            f"{processes} processes asked for (train.distributed, or torchrun's command line), "
            f"but only the mlp trains on several (model.name is {model_name!r}); run it on one: "
            "train.distributed.nproc_per_node and nnodes 1, and not under torchrun"
        )


def command(train: TrainConfig, script: Path) -> list[str]:
    """torchrun (this interpreter's) running `script` on train.distributed's processes."""
    cfg = train.distributed
    if cfg.rdzv_endpoint is None:
        meet = ["--standalone"]
    else:
        meet = ["--rdzv-backend", "c10d", "--rdzv-endpoint", cfg.rdzv_endpoint]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(cfg.nnodes),
        "--nproc-per-node",
        str(cfg.nproc_per_node),
        *meet,
        str(script),
    ]


def launch(model_name: str, train: TrainConfig, script: Path) -> int:
    """Run `script` under torchrun and return its exit code (0: every rank succeeded). A signal
    that would end this process is passed on to torchrun, and torchrun ends if this process
    dies however it dies, so that no worker outlives the stage."""
    require_mlp(model_name, train.distributed.processes)
    cmd = command(train, script)
    # torchrun would otherwise set 1 (and warn); each rank runs train.threads threads.
    env = {**os.environ, "OMP_NUM_THREADS": str(train.threads)}
    log.info("train: %s", " ".join(cmd[1:]))
    parent = os.getpid()
    # A session of its own: a terminal's Ctrl-C reaches torchrun once, through this process.
    with subprocess.Popen(
        cmd, env=env, start_new_session=True, preexec_fn=lambda: _end_with(parent)
    ) as process:

        def pass_on(signum: int, frame: FrameType | None) -> None:
            process.send_signal(signum)

        previous = {sig: signal.signal(sig, pass_on) for sig in ENDING_SIGNALS}
        try:
            code = process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if code != 0:
        what = f"signal {-code}" if code < 0 else f"exit code {code}"
        log.error("error: torchrun ended with %s; each rank's error is above", what)
    return code if code >= 0 else 128 - code


def _end_with(parent: int) -> None:
    """In torchrun's process before it starts: SIGTERM when `parent` dies (Linux)."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above: nobody will send it
        os._exit(1)
