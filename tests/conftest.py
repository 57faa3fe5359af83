"""Shared fixtures: project copies in temporary git repos, and a helper to run commands there."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from projectkit import clean_env, make_project
from raykit import RayCluster, running_cluster


def run(
    cmd: list[str] | str, cwd: Path, check: bool = True, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        shell=isinstance(cmd, str),
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def dvc_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dvc-cache")


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory, dvc_cache: Path) -> Iterator[Path]:
    """The project after `make repro` from scratch (shared by read-only tests)."""
    project = make_project(tmp_path_factory.mktemp("built") / "project", dvc_cache)
    result = run(["make", "repro"], project, OPENLINEAGE_DISABLED="false")
    (project / "first-repro.log").write_text(result.stdout + result.stderr)
    yield project


@pytest.fixture
def project_copy(built_project: Path, tmp_path: Path) -> Path:
    """A private copy of the built project (git, DVC state, outputs, MLflow store) to change."""
    dest = tmp_path / "project"
    shutil.copytree(built_project, dest, symlinks=True)
    return dest


# The Ray cluster of `ray_cluster`, shared by consecutive tests that ask for it (tests/test_ray_*:
# starting one takes tens of seconds) and stopped after the last of them.
_ray_cluster: tuple[contextlib.ExitStack, RayCluster] | None = None


@pytest.fixture
def ray_cluster() -> RayCluster:
    """A real Ray cluster on this machine (tests/raykit.py): a head and a worker node."""
    global _ray_cluster
    if _ray_cluster is None:
        stack = contextlib.ExitStack()
        _ray_cluster = stack, stack.enter_context(running_cluster())
    return _ray_cluster[1]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if "ray_cluster" not in getattr(nextitem, "fixturenames", ()):
        stop_ray_cluster()


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_ray_cluster()  # a run interrupted mid-module


def stop_ray_cluster() -> None:
    global _ray_cluster
    if _ray_cluster is not None:
        stack, cluster = _ray_cluster
        _ray_cluster = None
        stack.close()
        assert not cluster.pids(), f"Ray processes left running: {cluster.pids()}"
