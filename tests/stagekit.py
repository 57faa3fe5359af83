"""Run single stages in a scratch directory with a params.yaml the test writes."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from projectkit import REPO, clean_env

CITIES = ["Paris", " paris ", "Lyon", "Nice"]  # two spellings of one city: normalised by clean
DEFAULT_PARAMS: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())


def params_with(**sections: Any) -> dict[str, Any]:
    """The default params with whole sections replaced or (for dicts) updated."""
    params = copy.deepcopy(DEFAULT_PARAMS)
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(params.get(name), dict):
            params[name].update(value)
        else:
            params[name] = value
    return params


def file_data(path: Path, **extra: Any) -> dict[str, Any]:
    """A `data` section reading a local file with target `y` (positive `yes`)."""
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "0" * 64
    return {
        "name": "toy",
        "source": {"kind": "file", "path": str(path), "sha256": sha256},
        "target": "y",
        "positive": "yes",
        "drop": [],
        "types": {},
        "valid": {},
        **extra,
    }


def write_params(workdir: Path, params: dict[str, Any]) -> None:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(workdir: Path, stage: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        cwd=workdir,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def toy_csv(path: Path, rows: int = 90) -> Path:
    lines = ["id,age,city,y"]
    for i in range(rows):
        lines.append(f"{i},{20 + i % 50},{CITIES[i % 4]},{'yes' if i % 3 == 0 else 'no'}")
    path.write_text("\n".join(lines) + "\n")
    return path
