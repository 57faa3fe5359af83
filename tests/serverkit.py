"""A real team MLflow server for tests: PostgreSQL (Debian's) and `mlflow server` on free
loopback ports, stopped at the end with nothing left running.

    with running_server(tmp_path / "server") as server:
        client = MlflowClient(server.url)
        ...
        server.kill()      # SIGKILL the MLflow server and its workers (PostgreSQL stays up)
        server.restart()   # the same URL again, the same data

Under root PostgreSQL runs as the `postgres` user, who cannot enter pytest's tmp_path (under
/tmp/pytest-of-root, 0700): the cluster lives in a folder of its own in /tmp (0755), removed
at the end; the rest (record, artifacts, logs) lives in `folder`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from semops.io import wait_until
from semops.tracking import processes
from semops.tracking import server as team_server


def world_reachable_dir(prefix: str) -> Path:
    """A new folder in /tmp that the `postgres` user can enter (mode 0755); the caller removes
    it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    return folder


@dataclass
class ServerInfo:
    url: str
    folder: Path
    settings: team_server.ServerSettings
    # {"mlflow": the server's process id (also its process group), "postgres": the postmaster's}
    pids: dict[str, int] = field(default_factory=dict)

    def kill(self) -> None:
        """SIGKILL the MLflow server with all its workers, as a crash would; PostgreSQL keeps
        running. Returns once none of them runs."""
        pgid = self.pids["mlflow"]
        os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, 0)
        assert wait_until(lambda: not processes.group_members(pgid), 10, 0.1), "server still runs"

    def restart(self) -> None:
        """Start the server again (after kill or stop) on the same URL, with the same data."""
        record, _ = team_server.start(self.folder, self.settings)
        self.url, self.pids = record["url"], dict(record["pids"])

    def stop(self) -> None:
        team_server.stop(self.folder)


@contextlib.contextmanager
def running_server(
    folder: Path, auth: tuple[str, str] | None = None, workers: int = 2
) -> Iterator[ServerInfo]:
    """A real PostgreSQL cluster and `mlflow server` (artifacts served by it, basic auth with
    `auth` as its admin's credentials) on free loopback ports; record, logs and artifacts in
    `folder`. Stops both at exit and checks that none of their processes is left."""
    base = world_reachable_dir("semops-pg-")
    settings = team_server.ServerSettings(
        port=team_server.free_port(), workers=workers, credentials=auth, cluster=base / "postgres"
    )
    started: list[int] = []
    try:
        record, _ = team_server.start(folder, settings)
        info = ServerInfo(record["url"], folder.absolute(), settings, dict(record["pids"]))
        started += info.pids.values()
        yield info
        started += info.pids.values()
    finally:
        team_server.stop(folder)
        shutil.rmtree(base, ignore_errors=True)
    left = [pid for pid in started if processes.running(pid)]
    assert not left, f"processes of the test server still run: {left}"
