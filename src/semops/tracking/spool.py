"""Spooling: each bundle is written under mlruns/pending/<result id>/ in the main repository,
complete or not at all (built in a hidden staging folder, then renamed), before it is logged.

A tabular bundle holds copies of what its run logs: the plots' data and PNG renderings, the
report (one HTML page), the trained model folder, and the semops package as it is now (the
MLflow Model's code), so that a result logged later by `semops mirror` is the result as it was
produced."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import semops
from semops import paths
from semops.errors import SemopsError
from semops.io import dump_json
from semops.tracking.bundle import BUNDLE, RESULT_TAG, TABULAR

PLOT_FILES = (
    paths.ROC_PLOT,
    paths.PR_PLOT,
    paths.CALIBRATION_PLOT,
    paths.CONFUSION_PLOT,
    paths.TRAIN_HISTORY,
)
# Inside a tabular bundle: the trained model folder, and the package the MLflow Model runs.
MODEL = "model"
CODE = "code"
# The report, as one HTML page (semops.reporting), logged as the run's artifact of that name.
REPORT = "report.html"


def pending_dir() -> Path:
    return paths.mlruns_dir() / "pending"


def package_dir() -> Path:
    """The semops package this process runs: what the MLflow Model ships as its code."""
    return Path(semops.__file__).resolve().parent


def spool(bundle: dict[str, Any], while_rendering: Callable[[], object] = lambda: None) -> Path:
    """Write the bundle (and, for a tabular one, copies of its files and PNG renderings of its
    plots) under pending/, atomically by rename. The plots are drawn by a subprocess, so
    `while_rendering` runs at the same time on the other core (matplotlib's import alone takes
    over a second).

    Processes may spool one result at once (queued experiments share their research result):
    whoever renames first wins, and a bundle already there, or put there meanwhile, is this one
    (its folder is named by its content's hash). It may be logged, and removed, by another
    process before this one logs it: `mirror.log_bundle` looks the result up then."""
    target = pending_dir() / bundle["tags"][RESULT_TAG]
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".spool-", dir=target.parent))
    try:
        (staging / BUNDLE).write_text(dump_json(bundle))
        if bundle.get("kind", TABULAR) == TABULAR:
            _copy_files(staging)
            _render_plots(staging, while_rendering)
        try:
            os.replace(staging, target)
        except OSError as exc:
            # Another process's copy in the way (it may be logged and gone by now): done.
            if exc.errno not in {errno.ENOTEMPTY, errno.EEXIST} and not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _copy_files(staging: Path) -> None:
    for path in PLOT_FILES:
        shutil.copy2(path, staging / path.name)
    shutil.copytree(paths.MODEL_DIR, staging / MODEL)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(package_dir(), staging / CODE / "semops", ignore=ignore)


def _render_plots(staging: Path, while_rendering: Callable[[], object]) -> None:
    """The PNGs and the report (semops.reporting.report, the track stage's copy), each drawn by
    a subprocess of its own."""
    commands = {
        "the plots": ["semops.tracking.plots", str(staging), str(staging / "plots")],
        "the report": ["semops.reporting.report", "--out", str(staging / REPORT)],
    }
    renderers = {
        what: subprocess.Popen([sys.executable, "-m", *command], stderr=subprocess.PIPE, text=True)
        for what, command in commands.items()
    }
    try:
        while_rendering()
    finally:
        errors = {what: renderer.communicate()[1] for what, renderer in renderers.items()}
    for what, renderer in renderers.items():
        if renderer.returncode != 0:
            raise SemopsError(f"rendering {what} failed: {errors[what].strip()}")
