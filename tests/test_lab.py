"""`make lab` and `make services`, for real, as a user (or the dev container's postStartCommand)
runs them: Jupyter Lab, and beside it the MLflow UI, in a folder holding only the Makefile, the
venv (linked) and mlruns/, on free loopback ports. Each test stops what it started and checks
that none of its processes is left.

Jupyter reads its settings from folders of the test's own (no user's config applies), and keeps
its runtime files (which hold the token) there. Runtime here: `make lab` 3-9 s, `make services`
17 s (65 s on a loaded machine: the MLflow UI's start takes most of it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from projectkit import REPO, clean_env
from test_devcontainer import load_devcontainer, make_targets_in, makefile_variable
from test_server import processes_naming

from semops.io import wait_until
from semops.tracking.processes import boot_id, group_members, same_process, stat_fields
from semops.tracking.server import free_port

LINE = r"lab: Jupyter Lab on http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]{{48}})"
# Jupyter is up in seconds, the MLflow UI in 7-25 s here (60 s on a loaded machine).
START_S = 120
LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def lab_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder `make lab` and `make ui` run in, and the environment to run them with."""
    folder = tmp_path / "project"
    (folder / "mlruns").mkdir(parents=True)
    shutil.copy2(REPO / "Makefile", folder / "Makefile")
    (folder / ".venv").symlink_to(REPO / ".venv")
    jupyter = tmp_path / "jupyter"
    env = {
        "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
        "JUPYTER_DATA_DIR": str(jupyter / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    return folder, env


def make(args: list[str], folder: Path, env: dict[str, str], timeout: float = 60) -> str:
    """`make ARGS` in `folder`; its output, once it succeeded."""
    result = subprocess.run(
        ["make", *args],
        cwd=folder,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"make {args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def fetch(url: str) -> tuple[int, str, bytes]:
    """(status, the URL answered after redirects, body)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.url, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, url, exc.read()


def answers(url: str) -> bool:
    try:
        fetch(url)
    except OSError:
        return False
    return True


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp gives them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def check_jupyter(port: int, token: str, folder: Path) -> None:
    """Jupyter Lab on `port` lets in the token's holder only, and serves `folder`."""
    base = f"http://127.0.0.1:{port}"
    assert fetch(f"{base}/api/status?token={token}")[0] == 200
    assert fetch(f"{base}/api/status")[0] == 403
    status, landed, _ = fetch(f"{base}/lab")
    assert (status, landed.split("?")[0]) == (200, f"{base}/login"), (status, landed)
    status, _, body = fetch(f"{base}/api/contents?token={token}")
    assert status == 200
    assert {"Makefile", "mlruns"} <= {entry["name"] for entry in json.loads(body)["content"]}
    assert listening_addresses(port) == {LOOPBACK_HEX}, "not on loopback alone"


def stop_group(pgid: int) -> None:
    """SIGTERM the process group, SIGKILL what is left after 20 s."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_until(lambda: not group_members(pgid), 20, 0.1):
        os.killpg(pgid, signal.SIGKILL)
        wait_until(lambda: not group_members(pgid), 10, 0.1)


def test_make_lab_serves_jupyter_to_the_printed_token_on_loopback(tmp_path: Path) -> None:
    folder, env = lab_folder(tmp_path)
    port = free_port()
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        # As `make lab &` in a shell: make, then Jupyter, in a process group of their own.
        lab = subprocess.Popen(
            ["make", "lab", f"LAB_PORT={port}"],
            cwd=folder,
            env=clean_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/api/status"), START_S, 0.2), (
            log.read_text()
        )
        first = log.read_text().splitlines()[0]
        match = re.fullmatch(LINE.format(port=port), first)
        assert match, first
        check_jupyter(port, match[1], folder)
        members = group_members(lab.pid)
        assert len(members) >= 2, members  # make and Jupyter
        assert not [pid for pid in members if match[1] in cmdline(pid)], "token in a command line"
    finally:
        stop_group(lab.pid)
        lab.wait(10)
    assert not group_members(lab.pid)
    assert not processes_naming(folder)


def test_make_services_starts_lab_and_ui_detached_and_services_stop_ends_them(
    tmp_path: Path,
) -> None:
    folder, env = lab_folder(tmp_path)
    lab_port = free_port()
    ui_port = free_port()
    ports = [f"LAB_PORT={lab_port}", f"UI_PORT={ui_port}"]
    # A record left by a container's previous start: its id is now another process's, one
    # that even runs in this folder.
    (folder / ".services").mkdir()
    other = subprocess.Popen(["sleep", "300"], cwd=folder)
    (folder / ".services" / "lab.pid").write_text(f"{other.pid} {boot_id()} 1\n")
    try:
        # Returns once both serve, while they run on: a postStartCommand's end must not end them.
        started = make(["services", *ports], folder, env, timeout=2 * START_S)
        match = re.search(LINE.format(port=lab_port), started)
        assert match, started
        check_jupyter(lab_port, match[1], folder)
        assert fetch(f"http://127.0.0.1:{ui_port}/health")[:1] == (200,)
        assert listening_addresses(ui_port) == {LOOPBACK_HEX}
        records = {
            s: (folder / ".services" / f"{s}.pid").read_text().split() for s in ("lab", "ui")
        }
        groups = {s: int(r[0]) for s, r in records.items()}
        # Each recorded as same_process reads a record back, so an id taken since is not ours.
        assert all(same_process(int(p), b, int(t)) for p, b, t in records.values())
        for service, pid in groups.items():
            fields = stat_fields(pid)
            assert fields is not None, f"{service}'s recorded process {pid} does not run"
            assert fields[3] == str(pid), f"{service} is not the leader of a session of its own"
        assert (folder / ".services").stat().st_mode & 0o077 == 0, "the lab's log is the token's"

        again = make(["services", *ports], folder, env)
        assert "lab runs already" in again and "ui runs already" in again, again
        assert match[0] in again, "a second lab, or another token"

        stopped = make(["services-stop"], folder, env)
        assert "stopped lab" in stopped and "stopped ui" in stopped, stopped
        for pid in groups.values():
            assert not group_members(pid)
        assert not processes_naming(folder)
        assert not list((folder / ".services").glob("*.pid"))
        assert other.poll() is None, "make services-stop ended a process that was not its own"
    finally:
        other.kill()
        other.wait()
        for record in (folder / ".services").glob("*.pid"):
            pid = int(record.read_text().split()[0])
            if pid != other.pid and stat_fields(pid) is not None:
                stop_group(pid)


def test_dev_container_starts_the_services_where_it_forwards_ports() -> None:
    config = load_devcontainer()
    assert "make setup" in config["postCreateCommand"]
    assert make_targets_in(config["postStartCommand"]) == ["services"]
    forwarded = {int(str(port).rsplit(":", 1)[-1]) for port in config["forwardPorts"]}
    assert {int(makefile_variable("LAB_PORT")), int(makefile_variable("UI_PORT"))} <= forwarded
    # VS Code forwards a port from inside the container: loopback is reached, and enough.
    assert makefile_variable("LAB_HOST") == makefile_variable("UI_HOST") == "127.0.0.1"
