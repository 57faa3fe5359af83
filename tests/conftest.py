"""Shared fixtures: project copies in temporary git repos, and a helper to run commands there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a clone of the project holds that the pipeline needs (the package is installed editable).
PROJECT_FILES = [
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "Makefile",
    "conf",
    "constraints.txt",
    "dvc.lock",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    "src",
    "stages",
    "data/raw/.gitkeep",
    "data/interim/.gitkeep",
    "data/processed/.gitkeep",
    "mlruns/.gitkeep",
]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    env.update(extra)
    return env


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


def make_project(dest: Path, cache: Path) -> Path:
    """A fresh git repo holding the project; its DVC cache is `cache` (shared: run-cache hits)."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, target)
    (dest / ".venv").symlink_to(REPO / ".venv")
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "project"], dest)
    run(["dvc", "cache", "dir", "--local", str(cache)], dest)
    return dest


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
