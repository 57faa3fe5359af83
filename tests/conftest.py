"""Shared fixtures: project copies in temporary git repos, and a helper to run commands there."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from projectkit import clean_env, make_project


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
    result = run(["make", "repro"], project)
    (project / "first-repro.log").write_text(result.stdout + result.stderr)
    yield project


@pytest.fixture
def project_copy(built_project: Path, tmp_path: Path) -> Path:
    """A private copy of the built project (git, DVC state, outputs, MLflow store) to change."""
    dest = tmp_path / "project"
    shutil.copytree(built_project, dest, symlinks=True)
    return dest
