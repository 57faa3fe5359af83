"""Each shipped data set config runs download → clean → featurize with no code of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from projectkit import REPO
from stagekit import params_with, run_stage, write_params

DATASETS = sorted(p.stem for p in (REPO / "conf/data").glob("*.yaml"))


def test_the_three_required_data_sets_ship() -> None:
    assert {"credit", "churn", "crashes"} <= set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_data_set_config_runs_through_featurize(tmp_path: Path, name: str) -> None:
    data = {"positive": None, **yaml.safe_load((REPO / f"conf/data/{name}.yaml").read_text())}
    if "path" in data["source"]:  # relative to the repository root, where DVC runs stages
        data["source"]["path"] = str(REPO / data["source"]["path"])
    write_params(tmp_path, params_with(data=data))
    for stage in ("download", "clean", "featurize"):
        result = run_stage(tmp_path, stage)
        assert result.returncode == 0, f"{stage}: {result.stderr}"
    report = json.loads((tmp_path / "reports/clean.json").read_text())
    spec = json.loads((tmp_path / "data/processed/featurizer.json").read_text())
    classes = spec["target"]["classes"]
    if data["positive"] is not None:
        assert classes[-1] == str(data["positive"]).casefold()
    assert sum(report["split"].values()) == report["rows"]["clean"]
    used = set(spec["numeric"]) | set(spec["categorical"])
    assert not used & set(data["drop"])  # ids and leaking columns never become features
    test = pd.read_parquet(tmp_path / "data/processed/test.parquet")
    assert set(test["label"]) == set(range(len(classes)))
    assert list(test.columns[:-1]) == spec["features"]
