"""The team MLflow server, for real: Debian's PostgreSQL and `mlflow server` with basic auth,
started by `semops server start` in a project (its mlruns/server/) on a loopback port chosen
here, shared by this module's tests, and stopped at the end with none of its processes left.
tests/serverkit.py starts the same server for other tests (tests/reliability/)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import run
from projectkit import clean_env
from serverkit import world_reachable_dir
from test_registry import MODEL_NAME, build_results, copy_project

from semops import paths
from semops.io import write_json
from semops.tracking import postgres, processes
from semops.tracking import server as team_server
from semops.tracking.bundle import RESULT_TAG

ADMIN = ("alice", "s3cret-Admin-pw-4242")
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
# In the starter's environment (as `make` exports .env's), never in the server's.
API_KEY = {"ANTHROPIC_API_KEY": "sk-test-Kept-Out-Of-The-Server-0042"}


def status_of(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def cmdlines() -> dict[int, str]:
    """Every running process's command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and processes.running(int(entry.name)):
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            found[int(entry.name)] = command.replace(b"\0", b" ").decode(errors="replace")
    return found


def processes_naming(folder: Path) -> list[str]:
    """Running processes whose command line names `folder` (the server's and the cluster's do)."""
    return [f"{pid}: {line}" for pid, line in cmdlines().items() if str(folder) in line]


@dataclass
class Served:
    project: Path
    url: str
    port: int
    outputs: list[str]  # of the two `semops server start` run at once

    @property
    def folder(self) -> Path:
        return self.project / "mlruns" / "server"

    def record(self) -> dict[str, Any]:
        found = team_server.read_record(self.folder)
        assert found is not None
        return found


def start(project: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["semops", "server", "start", "--port", str(port), "--auth"],
        cwd=project,
        env=clean_env(**CREDENTIALS, **API_KEY),
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The server, started twice at once in a new project the `postgres` user can enter
    (pytest's tmp_path is 0700 under root); stopped at the end, nothing of it left running."""
    base = world_reachable_dir("semops-server-test-")
    project = base / "project"
    project.mkdir()
    port = team_server.free_port()
    try:
        both = [start(project, port), start(project, port)]
        outputs = [process.communicate(timeout=300)[0] for process in both]
        assert [process.returncode for process in both] == [0, 0], outputs
        yield Served(project, f"http://127.0.0.1:{port}", port, outputs)
        assert "stopped the server" in run(["semops", "server", "stop"], project).stdout
        assert not processes_naming(base)
    finally:
        team_server.stop(project / "mlruns" / "server")  # the library, should the CLI fail
        leftover = processes_naming(base)
        if not leftover:
            shutil.rmtree(base)
    assert not leftover, leftover


@pytest.fixture
def as_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's MLflow client logs in as the admin (a teammate's .env gives their own)."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)


def test_two_starts_at_once_start_one_server_and_say_where_it_listens(served: Served) -> None:
    (first,) = [out for out in served.outputs if "already running" not in out]
    (second,) = [out for out in served.outputs if "already running" in out]
    pid = served.record()["pids"]["mlflow"]
    assert f"listening on {served.url} (pid {pid})" in first
    assert f"already running on {served.url} (pid {pid})" in second
    for out in served.outputs:
        assert f"MLFLOW_TRACKING_URI={served.url}" in out and "semops server stop" in out
    assert status_of(f"{served.url}/health") == 200
    status = run(["semops", "server", "status"], served.project).stdout
    assert f"{served.url} running; its API answers 401" in status
    assert f"mlflow     pid {pid} alive" in status and "postgres   pid" in status
    assert "postgresql+psycopg2://" in status and str(served.folder / "artifacts") in status


def test_a_start_with_other_settings_is_refused_while_it_runs(served: Served) -> None:
    without_auth = ["semops", "server", "start", "--port", str(served.port)]
    refused = run(without_auth, served.project, check=False)
    assert refused.returncode == 1
    assert "running with other settings (auth on (asked: off))" in refused.stderr
    assert "semops server stop" in refused.stderr
    other_port = [*without_auth[:-1], str(team_server.free_port()), "--auth"]
    refused = run(
        other_port,
        served.project,
        check=False,
        MLFLOW_TRACKING_USERNAME=ADMIN[0],
        MLFLOW_TRACKING_PASSWORD=ADMIN[1],
    )
    assert refused.returncode == 1 and f"port {served.port} (asked: " in refused.stderr
    record = served.record()  # the server running, untouched
    pid, ticks = record["pids"]["mlflow"], record["start_ticks"]["mlflow"]
    assert processes.same_process(pid, processes.boot_id(), ticks)


def test_runs_and_artifacts_go_through_the_server(
    served: Served, as_admin: None, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(served.url)
    run_id = client.create_run(client.create_experiment("artifacts")).info.run_id
    (tmp_path / "note.txt").write_text("served through the server")
    client.log_artifact(run_id, str(tmp_path / "note.txt"))
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = list((served.folder / "artifacts").rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["served through the server"]
    fetched = client.download_artifacts(run_id, "note.txt", str(tmp_path))
    assert Path(fetched).read_text() == "served through the server"


def test_basic_auth_asks_for_credentials_kept_out_of_logs_and_argv(served: Served) -> None:
    search = f"{served.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(search) == 401
    assert status_of(search, (ADMIN[0], "wrong-password-123")) == 401
    assert status_of(search, ADMIN) == 200

    record = served.record()
    assert record["auth"] is True
    written = [*served.folder.glob("*"), *Path(record["cluster"]).glob("*.log")]
    assert served.folder / "mlflow.log" in written and served.folder / "server.json" in written
    pgpass = served.folder / "pgpass"
    assert pgpass.stat().st_mode & 0o077 == 0
    role_password = pgpass.read_text().strip().split(":")[-1]
    for file in written:
        if file.is_file() and file != pgpass:
            text = file.read_text(errors="replace")
            assert ADMIN[1] not in text and role_password not in text, file
    lines = cmdlines().values()
    assert [line for line in lines if f"--port {served.port}" in line]  # the server's are seen
    assert not [line for line in lines if ADMIN[1] in line or role_password in line]

    ours = processes.group_members(record["pids"]["mlflow"])
    ours += [int(line.split(":")[0]) for line in processes_naming(Path(record["cluster"]))]
    assert len(ours) > 3 and record["pids"]["postgres"] in ours  # server, workers, PostgreSQL
    for pid in ours:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"MLFLOW_BACKEND_STORE_URI" in environ or b"PG" in environ, pid
        assert API_KEY["ANTHROPIC_API_KEY"].encode() not in environ, pid
        assert b"MLFLOW_TRACKING_PASSWORD" not in environ, pid


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return build_results(tmp_path_factory.getbasetemp() / "three-results")


def test_the_track_stage_logs_run_version_and_champion_to_the_server(
    served: Served, as_admin: None, results: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    project = copy_project(results[0], tmp_path / "project")
    tracked = run(
        ["python", "stages/track.py"],
        project,
        MLFLOW_TRACKING_URI=served.url,
        MLFLOW_TRACKING_USERNAME=ADMIN[0],
        MLFLOW_TRACKING_PASSWORD=ADMIN[1],
    )
    assert "logged as new run" in tracked.stdout and served.url in tracked.stdout
    assert ADMIN[1] not in tracked.stdout + tracked.stderr
    result_id = json.loads((project / paths.TRACKED).read_text())["result_id"]

    client = MlflowClient(served.url)
    experiment = client.get_experiment_by_name("semops")
    assert experiment is not None
    (logged,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{RESULT_TAG}` = '{result_id}'"
    )
    assert logged.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert client.list_artifacts(logged.info.run_id)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.run_id == logged.info.run_id


def test_stop_leaves_nothing_running_and_a_restart_keeps_the_runs(
    served: Served, as_admin: None
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(served.url)
    run_id = client.create_run(client.create_experiment("kept")).info.run_id
    client.log_metric(run_id, "auc", 0.875)
    record = served.record()
    pids = record["pids"]

    stopped = run(["semops", "server", "stop"], served.project).stdout
    assert f"stopped the server of {served.url}" in stopped
    assert not [pid for pid in pids.values() if processes.running(pid)]
    assert not processes.group_members(pids["mlflow"])
    assert not processes_naming(served.project)
    assert run(["semops", "server", "status"], served.project, check=False).returncode == 3
    assert "not running" in run(["semops", "server", "stop"], served.project).stdout

    # As a start killed before it wrote its record leaves it: the cluster running, unrecorded.
    orphan = postgres.Cluster(Path(record["cluster"])).start(team_server.free_port())
    restarted = start(served.project, served.port)  # the same URL, the same PostgreSQL data
    assert restarted.communicate(timeout=300)[0] and restarted.returncode == 0
    assert not processes.running(orphan)
    assert client.get_run(run_id).data.metrics == {"auc": 0.875}


def test_a_recorded_id_taken_by_another_process_is_left_alone(tmp_path: Path) -> None:
    """server.json outlives a reboot, and a process id is reused: a process with the recorded
    id, even an `mlflow` one leading its own process group, is not stopped as the server."""
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "mlflow", "server"],
        start_new_session=True,
    )
    try:
        ticks = processes.start_ticks(other.pid)
        assert ticks is not None
        folder = tmp_path / "server"
        for boot, recorded_ticks in ((processes.boot_id(), ticks + 1), ("an-earlier-boot", ticks)):
            record = {
                "url": "http://127.0.0.1:1",
                "host": "127.0.0.1",
                "port": 1,
                "cluster": None,
                "pids": {"mlflow": other.pid, "postgres": None},
                "boot_id": boot,
                "start_ticks": {"mlflow": recorded_ticks, "postgres": None},
            }
            write_json(folder / "server.json", record)
            found = team_server.status(folder)
            assert found is not None and found["alive"]["mlflow"] is False
            assert team_server.stop(folder) == record
            assert other.poll() is None and processes.running(other.pid)
    finally:
        other.kill()
        other.wait()


def test_remote_listening_and_auth_are_refused_unless_asked_for(tmp_path: Path) -> None:
    refused = run(["semops", "server", "start", "--host", "0.0.0.0"], tmp_path, check=False)
    assert refused.returncode == 1
    assert "'0.0.0.0'" in refused.stderr and "--allow-remote" in refused.stderr
    assert not (tmp_path / "mlruns" / "server" / "server.json").exists()
    anonymous = run(["semops", "server", "start", "--auth"], tmp_path, check=False)
    assert anonymous.returncode == 1 and "MLFLOW_TRACKING_PASSWORD" in anonymous.stderr
    assert not (tmp_path / "mlruns" / "server" / "server.json").exists()


def test_listening_beyond_loopback_answers_on_the_url_it_prints(tmp_path: Path) -> None:
    """MLflow refuses (403) a Host header it does not allow: the machine's name, printed as the
    URL for teammates, is allowed. A sqlite backend keeps this test to one process group."""
    port = team_server.free_port()
    remote = ["semops", "server", "start", "--host", "0.0.0.0", "--allow-remote", "--port"]
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        started = run(
            [*remote, str(port), "--workers", "1"], tmp_path, MLFLOW_BACKEND_STORE_URI=backend
        ).stdout
        url = f"http://{socket.gethostname()}:{port}"
        assert f"listening on {url} " in started
        assert status_of(f"{url}/api/2.0/mlflow/experiments/search?max_results=1") == 200
    finally:
        assert run(["semops", "server", "stop"], tmp_path).returncode == 0
    assert not processes_naming(tmp_path)
