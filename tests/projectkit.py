"""Fresh copies of the project in temporary git repos, for the tests (tests/conftest.py); the
benchmarks keep their own (benchmarks/common.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
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
    "reports",
    "samples",
    "src",
    "stages",
    "data/raw/.gitkeep",
    "data/raw/research/.gitkeep",
    "data/interim/.gitkeep",
    "data/processed/.gitkeep",
    "mlruns/.gitkeep",
]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without MLflow, DVC, OpenLineage, make or PYTHONPATH settings, the venv
    first on PATH."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "OPENLINEAGE"))
    }
    # Nor make's, when the suite runs under `make test`: a make started here is a user's, at
    # top level (no "make[1]: Entering directory" lines, no parent's jobserver).
    for name in ("PYTHONPATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(name, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # The committed dvc.lock is the CPU result; a GPU trains other (bf16) weights.
    env["CUDA_VISIBLE_DEVICES"] = ""
    # Lineage costs each stage process half a second: it is on where it is tested (the built
    # project's `make repro`, tests/test_lineage.py: OPENLINEAGE_DISABLED=false), off elsewhere.
    env["OPENLINEAGE_DISABLED"] = "true"
    env.update(
        GIT_AUTHOR_NAME="semops-dev",
        GIT_AUTHOR_EMAIL="dev@example.invalid",
        GIT_COMMITTER_NAME="semops-dev",
        GIT_COMMITTER_EMAIL="dev@example.invalid",
    )
    env.update(extra)
    return env


def copy_project_files(source: Path, dest: Path) -> Path:
    """The files of PROJECT_FILES, from `source` (REPO or a snapshot of it) into `dest`."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (source / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source / name, target, ignore=ignore)
        else:
            shutil.copy2(source / name, target)
    return dest


def make_project(dest: Path, cache: Path, source: Path = REPO) -> Path:
    """A fresh git repo holding the project files of `source`, the venv symlinked, its DVC cache
    in `cache` (a shared one gives run-cache hits) and a private DVC site cache beside it."""
    copy_project_files(source, dest)
    (dest / ".venv").symlink_to(REPO / ".venv")
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "project"],
        ["dvc", "cache", "dir", "--local", str(cache)],
        [
            "dvc",
            "config",
            "--local",
            "core.site_cache_dir",
            str(cache.parent / f"{cache.name}-site"),
        ],
    ):
        subprocess.run(cmd, cwd=dest, env=clean_env(), check=True, capture_output=True)
    return dest
