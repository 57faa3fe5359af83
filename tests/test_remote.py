"""The team flow against real servers: results in git (`reports/`, `cache: false`), a DVC remote
set by `make remote` (a WebDAV server, wsgidav, with basic auth, and a shared folder), `make push`
/ `make pull`, and experiments shared through a bare git remote. Each teammate's clone gets an
empty DVC cache of its own, so whatever it has came through the remote."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
import yaml
from conftest import run
from projectkit import BIN, REPO, clean_env

from semops.io import wait_until
from semops.tracking.server import free_port

USER = "alice"
MAKE = ["make", "-s"]
STORE = Path("data/research/embeddings")
UP_TO_DATE = "Data and pipelines are up to date."


@dataclass
class WebDav:
    url: str
    password: str
    root: Path


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def webdav(tmp_path: Path) -> Iterator[WebDav]:
    """wsgidav on a free loopback port, serving a folder at /dav to one user with basic auth.
    Its password is in its own config file (0600), never on a command line."""
    root, port = tmp_path / "dav", free_port()
    root.mkdir()
    password = secrets.token_urlsafe(16)
    config = tmp_path / "wsgidav.yaml"
    config.touch(mode=0o600)
    settings = {
        "host": "127.0.0.1",
        "port": port,
        "provider_mapping": {"/dav": str(root)},
        "simple_dc": {"user_mapping": {"*": {USER: {"password": password}}}},
        "http_authenticator": {"accept_basic": True, "accept_digest": False},
        "verbose": 1,
    }
    config.write_text(yaml.safe_dump(settings))
    log = (tmp_path / "wsgidav.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "wsgidav"), "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )
    try:
        assert wait_until(lambda: answers(port), 30, 0.1), (tmp_path / "wsgidav.log").read_text()
        with pytest.raises(HTTPError) as anonymous:
            urlopen(f"http://127.0.0.1:{port}/dav/", timeout=10)
        assert anonymous.value.code == 401  # the remote needs the password DVC is given
        yield WebDav(f"webdav://127.0.0.1:{port}/dav", password, root)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()
    assert not answers(port)


def commit_all(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


def git_changes(project: Path) -> str:
    return run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout


def publish(project: Path, origin: Path) -> Path:
    """The project's git history in a bare repository, its `origin`, as a team's git server."""
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], project)
    run(["git", "remote", "add", "origin", str(origin)], project)
    run(["git", "push", "-q", "origin", "main"], project)
    return origin


def fresh_clone(origin: Path, dest: Path) -> Path:
    """A teammate's clone, with an empty DVC cache of its own (nothing from the tests' shared
    cache): every output it has came through the remote."""
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    (dest / ".venv").symlink_to(REPO / ".venv")
    cache = dest.parent / f"{dest.name}-cache"
    run(["dvc", "cache", "dir", "--local", str(cache)], dest)
    run(["dvc", "config", "--local", "core.site_cache_dir", f"{cache}-site"], dest)
    assert not cache.exists()
    return dest


def set_remote(project: Path, url: str, password: str | None = None) -> str:
    """`make remote`; with a password, as a teammate gives it: in the environment. Its output."""
    if password is None:
        return run([*MAKE, "remote", f"URL={url}"], project).stdout
    remote = [*MAKE, "remote", f"URL={url}", f"REMOTE_USER={USER}"]
    done = run(remote, project, DVC_REMOTE_PASSWORD=password)
    return done.stdout + done.stderr


def store_files(project: Path) -> dict[str, str]:
    """The embedding store's files by path, with their md5: a chunk embedded adds a file."""
    folder = project / STORE
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def metrics(project: Path) -> dict[str, Any]:
    return json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)


def test_a_teammate_pulls_from_webdav_and_computes_nothing(
    project_copy: Path, webdav: WebDav, tmp_path: Path
) -> None:
    project = project_copy
    commit_all(project, "the built result")
    with_password = webdav.url.replace("://", f"://{USER}:{webdav.password}@")
    refused = run([*MAKE, "remote", f"URL={with_password}"], project, check=False)
    assert refused.returncode != 0
    assert "refused a URL with a password" in refused.stderr
    assert webdav.password not in refused.stdout + refused.stderr
    assert git_changes(project) == ""

    assert webdav.password not in set_remote(project, webdav.url, webdav.password)
    committed = (project / ".dvc/config").read_text()
    assert webdav.url in committed and webdav.password not in committed
    local = project / ".dvc/config.local"
    assert webdav.password in local.read_text()
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    run(["git", "check-ignore", "-q", ".dvc/config.local"], project)
    pushed = run([*MAKE, "push"], project)
    assert "commit dvc.lock, reports/ and data/research/embeddings.dvc" in pushed.stdout
    assert (project / "data/research/embeddings.dvc").exists()
    assert git_changes(project).split() == [
        "M",
        ".dvc/config",
        "??",
        "data/research/embeddings.dvc",
    ]
    commit_all(project, "share the remote and the embedding store")
    clone = fresh_clone(publish(project, tmp_path / "origin.git"), tmp_path / "teammate")

    # Results are in git: shown before anything is pulled.
    assert metrics(clone) == metrics(project)
    set_remote(clone, webdav.url, webdav.password)
    assert git_changes(clone) == ""  # .dvc/config already named the remote
    run([*MAKE, "pull"], clone)
    assert UP_TO_DATE in run(["dvc", "status"], clone).stdout
    repro = run(["dvc", "repro"], clone)
    assert "Running stage" not in repro.stdout + repro.stderr
    assert repro.stdout.count("didn't change, skipping") == len(stages(clone))
    assert git_changes(clone) == ""

    pulled = store_files(clone)
    assert pulled == store_files(project) and pulled
    assert not (clone / "data/research/index").exists()  # Qdrant's files: this clone's own
    asked = run(
        ["semops", "research", "ask", "How do I copy an object?"], clone, ANTHROPIC_API_KEY=""
    )
    assert "[1]" in asked.stdout
    assert (clone / "data/research/index").is_dir()
    assert store_files(clone) == pulled  # no chunk was embedded
    assert UP_TO_DATE in run(["dvc", "status"], clone).stdout


def stages(project: Path) -> list[str]:
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def experiments(project: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json`: each experiment's name and its test metrics."""
    found = {}
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], project).stdout):
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            found[rev["name"]] = rev["data"]["metrics"]["reports/metrics.json"]["data"]["test"]
    return found


def test_experiments_and_metric_changes_travel_through_git_and_a_shared_folder(
    project_copy: Path, tmp_path: Path
) -> None:
    project = project_copy
    commit_all(project, "the built result")
    set_remote(project, str(tmp_path / "shared"))
    run([*MAKE, "push"], project)
    commit_all(project, "share")
    origin = publish(project, tmp_path / "origin.git")
    ours = metrics(project)[""]["data"]["reports/metrics.json"]["data"]["test"]
    run(["dvc", "exp", "run", "-n", "lower-threshold", "-S", "evaluate.threshold=0.4"], project)
    theirs = experiments(project)["lower-threshold"]
    run(["dvc", "exp", "push", "origin", "lower-threshold"], project)
    run(["dvc", "exp", "branch", "lower-threshold", "pr-threshold"], project)
    run(["git", "push", "-q", "origin", "pr-threshold"], project)
    clone = fresh_clone(origin, tmp_path / "teammate")

    # A pull request's view, nothing pulled: the diff holds the metric change, DVC reads it.
    run(["git", "checkout", "-q", "pr-threshold"], clone)
    assert "reports/metrics.json" in run(["git", "diff", "--name-only", "main"], clone).stdout
    diff = json.loads(run(["dvc", "metrics", "diff", "main", "--json"], clone).stdout)
    f1 = diff["reports/metrics.json"]["test.f1"]
    assert (f1["old"], f1["new"]) == (ours["f1"], theirs["f1"]) and f1["old"] != f1["new"]

    run(["git", "checkout", "-q", "main"], clone)
    assert "lower-threshold" not in experiments(clone)
    run(["dvc", "exp", "pull", "origin", "lower-threshold"], clone)
    assert experiments(clone)["lower-threshold"] == theirs
    run(["dvc", "exp", "apply", "lower-threshold"], clone)  # its outputs came with it
    assert UP_TO_DATE in run(["dvc", "status"], clone).stdout
    assert json.loads((clone / "reports/metrics.json").read_text())["test"] == theirs
