"""A real Ray cluster for tests: a head node and one worker node, each a `ray start` of its own on
this machine (1 CPU each, a small object store), stopped at the end with nothing left running.

    @pytest.fixture(scope="module")          # one cluster per test module: it takes seconds
    def cluster() -> Iterator[RayCluster]:
        with running_cluster() as cluster:
            yield cluster

    monkeypatch.setenv("RAY_ADDRESS", cluster.address)   # "127.0.0.1:<port>", the head's GCS
    cluster.kill_worker_node()     # SIGKILL the worker node: its raylet and every worker on it
    cluster.restart_worker_node()  # a fresh worker node joins (blocks until it is up)
    cluster.pids()                 # the running processes of the cluster (test: none after it)

Each node runs in a session of its own (`ray start` in a new session; the raylet's workers stay in
it, in process groups of their own), so the kit ends exactly its own processes by session id.
`ray stop` is never used: it ends every Ray process on the machine, other tests' clusters too.
Ray resolves --node-ip-address=127.0.0.1 to the machine's routable address for the nodes (both
still on this machine); the head is reached at 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from semops.io import wait_until
from semops.tracking.processes import session_members
from semops.tracking.server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
# Ray's minimum is 75 MB; the tests move kilobytes.
OBJECT_STORE_BYTES = 100 * 1024 * 1024
STARTUP_TIMEOUT_S = 120.0


def _node_args(temp_dir: Path) -> list[str]:
    # Every port a node would take at a fixed default gets a free one: two nodes here, and other
    # tests' clusters, would collide on them. No autoscaler monitor and no log monitor: a fixed
    # cluster needs neither, and each is a Python process less to start.
    return [
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--temp-dir={temp_dir}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--include-log-monitor=false",
        "--disable-usage-stats",
    ]


@dataclass
class RayCluster:
    address: str
    folder: Path  # node temp dirs (sockets, logs) and the `ray start` outputs
    head_sid: int = 0
    worker_sid: int = 0
    _starts: int = field(default=0, repr=False)

    def _start(self, args: list[str], name: str) -> int:
        self._starts += 1
        log = self.folder / f"{name}-{self._starts}.log"
        with log.open("w") as out:
            # `ray start` returns once the node is up; its processes stay, in its session.
            proc = subprocess.Popen(
                [RAY, "start", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
            )
        try:
            rc = proc.wait(STARTUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        if rc != 0:
            _end_session(proc.pid)
            raise RuntimeError(f"ray start {name} failed ({rc}): {log.read_text()[-3000:]}")
        return proc.pid

    def start_head(self, port: int) -> None:
        self.head_sid = self._start(
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
                "--no-monitor",
                *_node_args(self.folder / "head"),
            ],
            "head",
        )

    def restart_worker_node(self) -> None:
        """Start a worker node (ending the running one first, if any); returns once it has
        joined the cluster."""
        if self.worker_sid:
            _end_session(self.worker_sid)
        temp = self.folder / f"worker{self._starts}"
        self.worker_sid = self._start([f"--address={self.address}", *_node_args(temp)], "worker")

    def kill_worker_node(self) -> None:
        """SIGKILL every process of the worker node, as a machine lost would; returns once none
        runs."""
        _end_session(self.worker_sid)

    def pids(self) -> list[int]:
        return session_members(self.head_sid) + session_members(self.worker_sid)


def _end_session(sid: int) -> None:
    def killed_all() -> bool:
        # Again on every pass: a worker the raylet was starting can appear after a pass.
        members = session_members(sid)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not members

    if not wait_until(killed_all, 20.0, 0.1):
        raise RuntimeError(f"Ray processes of session {sid} still run: {session_members(sid)}")


@contextlib.contextmanager
def running_cluster(folder: Path | None = None) -> Iterator[RayCluster]:
    """A head and a worker node on this machine (1 CPU each), their files under `folder` (a
    short new folder in /tmp when None: Ray's socket paths must stay under 108 bytes). At exit
    ends every process of both nodes and checks that none is left."""
    own = folder is None
    base = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")) if folder is None else folder
    port = free_port()
    cluster = RayCluster(address=f"127.0.0.1:{port}", folder=base)
    try:
        cluster.start_head(port)
        cluster.restart_worker_node()
        yield cluster
    finally:
        try:
            for sid in (cluster.worker_sid, cluster.head_sid):
                if sid:
                    _end_session(sid)
        finally:
            if own:
                shutil.rmtree(base, ignore_errors=True)
