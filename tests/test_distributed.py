"""train on several processes: the train stage starting real torchrun (gloo, 2 CPU processes)
against one process at the same global batch, a rank's death ending the whole job, and the
train.distributed settings refused with their key named."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from projectkit import REPO, clean_env

from semops.config.schema import TrainConfig, parse_section
from semops.errors import ConfigError
from semops.tabular import models
from semops.tabular.models import Fitted, torchrun, training
from semops.tabular.models.base import TrainingData
from semops.tabular.models.distributed import Shard, ShardDropout
from semops.tracking.server import free_port

TRAIN = REPO / "stages" / "train.py"
# 595 training rows in global batches of 99: ranks of 50 and 49 rows, and a last batch of one
# row, which leaves rank 1 without any (it trains on a placeholder row with weight 0).
TRAIN_ROWS, VAL_ROWS, BATCH = 595, 200, 99


def synthetic_split(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    signal_ = x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.normal(size=rows)
    return {**{f"f{j}": x[:, j] for j in range(6)}, "label": (signal_ > 0).astype(np.int64)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with processed features (what featurize writes, as train reads it) and the
    default params with a small network: it early-stops after 15 epochs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("prepared")
    processed = folder / "data" / "processed"
    processed.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, rows in (("train", TRAIN_ROWS), ("val", VAL_ROWS)):
        pq.write_table(pa.table(synthetic_split(rng, rows)), processed / f"{split}.parquet")
    (processed / "featurizer.json").write_text(json.dumps({"target": {"classes": ["no", "yes"]}}))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(name="mlp", hidden=16, batch_size=BATCH, lr=0.01, device="cpu")
    params["train"].update(epochs=60, early_stopping={"patience": 5, "min_delta": 0.0})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def workdir_with(prepared: Path, dest: Path, **train: Any) -> Path:
    """A copy of `prepared` with train.<key> set for each keyword (dotted through __)."""
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    for key, value in train.items():
        *parents, last = key.split("__")
        node = params["train"]
        for parent in parents:
            node = node[parent]
        node[last] = value
    shutil.copytree(prepared / "data" / "processed", dest / "data" / "processed")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def processes_in(folder: Path) -> dict[int, str]:
    """The live processes whose working directory is in `folder`: pid -> command line."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().decode()
    return found


def end_all(stages: list[subprocess.Popen[bytes]], folder: Path) -> None:
    """Kill `stages` and whatever still runs in `folder` (torchrun, its ranks), and reap them."""
    for stage in stages:
        stage.kill()  # a no-op on one already reaped, whose pid may be another's by now
    for pid in processes_in(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for stage in stages:
        stage.wait()


def start_stage(workdir: Path) -> subprocess.Popen[bytes]:
    """The train stage in `workdir`, its output in stdout.txt and stderr.txt there."""
    with (workdir / "stdout.txt").open("wb") as out, (workdir / "stderr.txt").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, str(TRAIN)], cwd=workdir, env=clean_env(), stdout=out, stderr=err
        )


@pytest.fixture(scope="module")
def one_process(prepared: Path) -> tuple[TrainConfig, Fitted]:
    """What the train stage fits on one process with the prepared params."""
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    model_cfg, train_cfg = parse_section("model", params), parse_section("train", params)
    data = TrainingData(*load_split(prepared, "train"), *load_split(prepared, "val"), 2)
    return train_cfg, training.fit(model_cfg, train_cfg, data)


@pytest.mark.parametrize("machines", [1, 2], ids=["1 machine x 2", "2 machines x 1"])
def test_two_processes_train_as_one_does(
    prepared: Path, tmp_path: Path, one_process: tuple[TrainConfig, Fitted], machines: int
) -> None:
    """2 gloo processes (the stage launching torchrun on 2 processes, or the stage on each of
    two "machines" meeting at a rendezvous on 127.0.0.1) against 1 process at the same global
    batch: the same epochs and decisions, the history within 1e-6 and the weights within 1e-5
    (measured: 5e-9 and 3e-7; not identical bits, as each rank's gradient is rounded before
    the two are summed); only rank 0 reports and writes."""
    if machines == 1:
        folders = [workdir_with(prepared, tmp_path / "two", distributed__nproc_per_node=2)]
    else:
        endpoint = f"127.0.0.1:{free_port()}"
        meet = {"distributed__nnodes": 2, "distributed__rdzv_endpoint": endpoint}
        folders = [workdir_with(prepared, tmp_path / f"node{i}", **meet) for i in range(2)]
    stages = [start_stage(folder) for folder in folders]
    try:
        for stage, folder in zip(stages, folders, strict=True):
            assert stage.wait(timeout=240) == 0, (folder / "stderr.txt").read_text()
        assert processes_in(tmp_path) == {}
    finally:
        end_all(stages, tmp_path)
    # Rank 0 alone writes and reports: one summary line, one progress line per 10 epochs.
    writers = [f for f in folders if (f / "reports").exists()]
    assert len(writers) == 1
    assert all(os.listdir(f / "data") == ["processed"] for f in folders if f not in writers)
    stdout = "".join((f / "stdout.txt").read_text() for f in folders)
    stderr = "".join((f / "stderr.txt").read_text() for f in folders)
    assert stdout.count("train: mlp, epochs run") == 1 and "(2 processes)" in stdout
    assert stderr.count("train: epoch 10/") == 1
    if machines == 1:
        assert "--nproc-per-node 2 --standalone" in stderr
    train_cfg, one = one_process
    report = json.loads((writers[0] / "reports" / "train.json").read_text())
    assert 5 < report["epochs_run"] == len(one.history) < train_cfg.epochs  # it stopped early
    assert report["best_epoch"] == one.best_epoch
    rows = (writers[0] / "reports" / "train_history.csv").read_text().splitlines()[1:]
    for line, mine in zip(rows, one.history, strict=True):
        epoch, train_loss, val_loss, _ = map(float, line.split(","))
        assert epoch == mine["epoch"]
        assert abs(train_loss - mine["train_loss"]) < 1e-6
        assert abs(val_loss - mine["val_loss"]) < 1e-6
    from safetensors.numpy import load_file

    weights = load_file(writers[0] / "data" / "models" / "model" / models.WEIGHTS)
    assert weights.keys() == one.tensors.keys()
    for name, values in weights.items():
        np.testing.assert_allclose(values, one.tensors[name], rtol=0, atol=1e-5)


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from semops.tabular.featureio import load_features

    x, y, _ = load_features(folder / "data" / "processed" / f"{split}.parquet")
    return x, y


@pytest.mark.parametrize("killed", ["rank 1", "the stage"])
def test_a_killed_process_ends_the_whole_job(prepared: Path, tmp_path: Path, killed: str) -> None:
    """SIGKILL to rank 1: torchrun ends rank 0 and the stage fails, naming it. SIGKILL to the
    stage process itself: torchrun is told (PR_SET_PDEATHSIG) and ends its ranks."""
    workdir = workdir_with(
        prepared,
        tmp_path / "job",
        epochs=5000,
        early_stopping={"patience": 5000, "min_delta": 0.0},
        distributed__nproc_per_node=2,
    )
    stage = start_stage(workdir)
    try:
        # Rank 1 killed in training (rank 0 waiting on it in a collective); the stage as soon
        # as torchrun has started its ranks.
        rank1 = wait_for_rank(workdir, "1", trained=killed == "rank 1", timeout=120)
        os.kill(rank1 if killed == "rank 1" else stage.pid, signal.SIGKILL)
        stage.wait(timeout=120)
        deadline = time.monotonic() + 60
        while processes_in(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_in(tmp_path) == {}
    finally:
        end_all([stage], tmp_path)
    assert not (workdir / "reports" / "train.json").exists()
    if killed == "rank 1":
        stderr = (workdir / "stderr.txt").read_text()
        assert stage.returncode == 1
        assert re.search(r"rank +: 1 \(local_rank: 1\)\n *exitcode +: -9", stderr)
        assert f"Signal 9 (SIGKILL) received by PID {rank1}" in stderr
        assert "error: torchrun ended with exit code 1; each rank's error is above" in stderr
    else:
        assert stage.returncode == -signal.SIGKILL


def wait_for_rank(workdir: Path, rank: str, trained: bool, timeout: float) -> int:
    """The pid of the worker of `rank`, once it is started (`trained`: once rank 0 has logged
    its 10th epoch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not trained or "train: epoch 10/" in (workdir / "stderr.txt").read_text():
            for pid in processes_in(workdir):
                with contextlib.suppress(OSError):
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    if f"RANK={rank}".encode() in environ:
                        return pid
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} within {timeout} s: {processes_in(workdir)}")


def test_bad_distributed_values_are_refused_naming_the_key() -> None:
    base = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    cases = {
        "train.distributed.nproc_per_node must be > 0, got 0": {"nproc_per_node": 0},
        "train.distributed.nnodes must be an integer, got '2' (str)": {"nnodes": "2"},
        "train.distributed.rdzv_endpoint is required when train.distributed.nnodes is 2": {
            "nnodes": 2
        },
        "train.distributed.rdzv_endpoint must be host:port, got 'node0'": {
            "nnodes": 2,
            "rdzv_endpoint": "node0",
        },
        "train.distributed.rdzv_endpoint must be host:port, got 'node0:70000'": {
            "rdzv_endpoint": "node0:70000"
        },
        "train.distributed: unknown key 'nproc'": {"nproc": 2},
    }
    for message, values in cases.items():
        train = copy.deepcopy(base)
        train["distributed"].update(values)
        with pytest.raises(ConfigError) as raised:
            parse_section("train", {"train": train})
        assert message in str(raised.value)
    train = copy.deepcopy(base)
    train["distributed"].update(nnodes=2, rdzv_endpoint="10.0.0.1:29400")
    cfg = parse_section("train", {"train": train})
    assert torchrun.command(cfg, TRAIN)[3:] == [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "10.0.0.1:29400",
        str(TRAIN),
    ]
    with pytest.raises(ConfigError, match=r"only the mlp trains on several .*'gbdt'"):
        torchrun.launch("gbdt", cfg, TRAIN)
    # Under a torchrun started by hand the stage passes torchrun's world size.
    with pytest.raises(ConfigError, match=r"2 processes asked for .*'logreg'"):
        torchrun.require_mlp("logreg", 2)
    torchrun.require_mlp("logreg", 1)
    torchrun.require_mlp("mlp", 2)


def test_ranks_weighted_losses_and_dropout_add_up_to_the_global_batch() -> None:
    """Each rank's loss, with DDP's average over the ranks, has the gradient of the global
    batch's mean loss, and its dropout masks are its rows' of the mask one process draws; also
    with a rank left without rows (a last batch of one)."""
    from semops.tabular.models.exact import SerialDropout

    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)
    for rows in (7, 1):
        x, y = torch.randn(rows, 4), torch.randint(0, 3, (rows,))
        batch = torch.arange(rows)
        linear.zero_grad()
        torch.nn.functional.cross_entropy(linear(x), y).backward()
        assert linear.weight.grad is not None
        expected = linear.weight.grad.clone()
        torch.manual_seed(1)
        masked = SerialDropout(0.5)(x)
        averaged = torch.zeros_like(expected)
        for rank in range(2):
            shard = Shard(rank, 2, torch.device("cpu"))
            taken = shard.take(batch)
            linear.zero_grad()
            loss, summed = shard.loss(linear(x[taken]), y[taken])
            loss.backward()
            assert linear.weight.grad is not None
            averaged += linear.weight.grad / 2
            torch.manual_seed(1)
            if rows > rank:
                torch.testing.assert_close(
                    ShardDropout(0.5, shard)(x[taken]), masked[taken], rtol=0, atol=0
                )
            else:
                assert float(summed) == 0.0
        torch.testing.assert_close(averaged, expected, rtol=1e-6, atol=1e-7)
