"""Numbers that are not numbers: inf in a numeric column is counted and set missing by clean
(featurize then fits finite statistics), and no float key of params.yaml takes inf or nan,
whether composed (`key=inf`) or written in params.yaml (YAML .inf/.nan)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from projectkit import BIN, REPO, clean_env
from stagekit import file_data, params_with, run_stage, write_params

from semops.config.schema import load_section
from semops.errors import ConfigError


def passthrough() -> dict[str, str]:
    """PYTHONPATH, where set, for the subprocesses (clean_env drops it): running these tests
    against another checkout's src/."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


def no_constants(name: str) -> float:
    raise AssertionError(f"featurizer.json holds {name}: not JSON")


def write_ages(workdir: Path, specials: dict[int, str]) -> None:
    """A raw CSV of 90 rows whose `age` holds `specials` at those rows, and its params."""
    lines = ["id,age,y"]
    for i in range(90):
        lines.append(f"{i},{specials.get(i, 20 + i % 50)},{'yes' if i % 3 == 0 else 'no'}")
    raw = workdir / "raw.csv"
    raw.write_text("\n".join(lines) + "\n")
    write_params(workdir, params_with(data=file_data(raw, drop=["id"])))


def test_inf_in_a_numeric_column_is_set_missing_and_reported(tmp_path: Path) -> None:
    write_ages(tmp_path, {5: "inf", 17: "-inf", 29: "1e999", 41: "Infinity"})
    for stage in ("download", "clean", "featurize"):
        result = run_stage(tmp_path, stage, **passthrough())
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
    report = json.loads((tmp_path / "reports/clean.json").read_text())
    assert report["set_missing"]["non_finite"] == {"age": 4}
    spec = json.loads(
        (tmp_path / "data/processed/featurizer.json").read_text(), parse_constant=no_constants
    )
    assert all(math.isfinite(v) for v in spec["numeric"]["age"].values() if isinstance(v, float))
    train = pd.read_parquet(tmp_path / "data/interim/train.parquet")
    assert not train["age"].isin([math.inf, -math.inf]).any()


def test_finite_values_whose_spread_overflows_fail_featurize_by_column(tmp_path: Path) -> None:
    write_ages(tmp_path, {i: "1.7e308" for i in range(0, 90, 2)})
    for stage in ("download", "clean"):
        assert run_stage(tmp_path, stage, **passthrough()).returncode == 0
    result = run_stage(tmp_path, "featurize", **passthrough())
    assert result.returncode != 0
    assert "column 'age': its mean or spread overflows a float" in result.stderr
    assert "data.valid.age" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def conf_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("compose")
    shutil.copytree(REPO / "conf", workdir / "conf")
    return workdir


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.lr=inf", "model.lr"),
        ("research.web.delay=inf", "research.web.delay"),
        ("research.answer.timeout=inf", "research.answer.timeout"),
        ("train.early_stopping.min_delta=nan", "train.early_stopping.min_delta"),
    ],
)
def test_compose_refuses_non_finite_params_by_key(conf_copy: Path, override: str, key: str) -> None:
    result = subprocess.run(
        [str(BIN / "semops"), "compose", override],
        cwd=conf_copy,
        env=clean_env(**passthrough()),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert f"{key} must be a finite number" in result.stderr
    assert not (conf_copy / "params.yaml").exists()


@pytest.mark.parametrize(
    ("section", "tree", "key"),
    [
        ("research", {"web": {"delay": math.inf}}, "research.web.delay"),
        ("research", {"ollama": {"timeout": math.inf}}, "research.ollama.timeout"),
        ("model", {"name": "mlp", "lr": math.inf}, "model.lr"),
        ("model", {"name": "gbdt", "l2_regularization": math.nan}, "model.l2_regularization"),
        ("data", {"valid": {"age": {"min": -math.inf}}}, "data.valid.age.min"),
    ],
)
def test_params_yaml_non_finite_values_fail_naming_the_key(
    tmp_path: Path, section: str, tree: dict[str, Any], key: str
) -> None:
    if section == "data":  # the rest of a valid data section
        tree = file_data(tmp_path / "raw.csv", **tree)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({section: tree}))  # YAML's .inf, -.inf and .nan
    assert ".inf" in params.read_text() or ".nan" in params.read_text()
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be a finite number"):
        load_section(section, params)
