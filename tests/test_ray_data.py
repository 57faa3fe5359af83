"""data.engine: ray on a real Ray cluster (a head and a worker node started by `ray start` on
this machine, tests/raykit.py): clean and featurize map their batches over the cluster's row
group tasks and write the local engine's files, byte for byte."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
from raykit import RayCluster
from test_streaming import SPLIT, bundled, raw_file

from semops.config.schema import FeaturizeConfig
from semops.errors import SemopsError
from semops.io import dump_json
from semops.paths import SPLITS
from semops.tabular.clean import clean_file
from semops.tabular.engine import engine_for
from semops.tabular.features import featurize_files
from semops.tabular.rayengine import RayEngine
from semops.tabular.stream import Engine, LocalEngine


def outputs(raw: Path, out: Path, engine: Engine) -> dict[str, bytes]:
    cfg = bundled("credit")
    interim = {name: out / f"interim-{name}.parquet" for name in SPLITS}
    report, schema = clean_file(raw, interim, cfg, SPLIT, 700, engine)
    processed = {name: out / f"processed-{name}.parquet" for name in SPLITS}
    spec = featurize_files(interim, processed, schema, cfg.positive, FeaturizeConfig(), 700,
                           engine)  # fmt: skip
    files = {path.name: path.read_bytes() for path in [*interim.values(), *processed.values()]}
    files["json"] = dump_json([report, schema, spec]).encode()
    return files


def test_no_address_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SemopsError, match=r"data\.engine is ray but RAY_ADDRESS is not set"):
        RayEngine()


def test_the_cluster_writes_the_local_engines_files(
    ray_cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = raw_file(bundled("credit"), tmp_path)
    groups = tmp_path / "groups.parquet"  # 5 row groups: 5 tasks, on both nodes
    pq.write_table(pq.read_table(raw), groups, row_group_size=1000, compression="zstd")
    assert pq.ParquetFile(groups).metadata.num_row_groups == 5
    local = outputs(groups, tmp_path / "local", LocalEngine())
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    with contextlib.closing(engine_for("ray")) as engine:  # as the stages run it
        on_ray = outputs(groups, tmp_path / "ray", engine)
    assert on_ray == local
    assert not ray.is_initialized()  # closed: no connection left to the cluster
