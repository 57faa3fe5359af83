"""Tables larger than memory: clean and featurize a batch at a time give what the whole table at
once gives (the committed dvc.lock's bytes on the default data), with exact medians, exact
duplicates and block-merged moments."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import TypeAdapter

from semops.config.schema import DataConfig, FeaturizeConfig, SplitConfig
from semops.io import write_json, write_parquet
from semops.paths import SPLITS
from semops.tabular import stats
from semops.tabular.clean import clean_and_split, clean_file
from semops.tabular.dedup import CandidateRows
from semops.tabular.download import fetch
from semops.tabular.features import featurize_files, fit_batches, fit_featurizer
from semops.tabular.stream import FrameBatches, LocalEngine

REPO = Path(__file__).resolve().parents[1]
SPLIT = SplitConfig(train=0.7, val=0.15, test=0.15, seed=0)
BUNDLED = ["churn", "crashes", "election", "food_reviews", "credit_sample"]  # credit: below


def bundled(name: str) -> DataConfig:
    settings = yaml.safe_load((REPO / "conf/base/data.yaml").read_text())
    settings.update(yaml.safe_load((REPO / f"conf/data/{name}.yaml").read_text()))
    return TypeAdapter(DataConfig).validate_python(settings)


def raw_file(cfg: DataConfig, folder: Path) -> Path:
    """The raw table as the download stage writes it."""
    table, _ = fetch(cfg.source, folder)
    path = folder / "table.parquet"
    write_parquet(path, table)
    return path


def run_stages(raw: Path, cfg: DataConfig, out: Path, batch_rows: int) -> dict[str, str]:
    """clean and featurize as the stages run them; the md5 of each output, by file name."""
    interim = {name: out / "interim" / f"{name}.parquet" for name in SPLITS}
    report, schema = clean_file(raw, interim, cfg, SPLIT, batch_rows, LocalEngine())
    write_json(out / "interim/schema.json", schema)
    write_json(out / "clean.json", report)
    processed = {name: out / "processed" / f"{name}.parquet" for name in SPLITS}
    spec = featurize_files(interim, processed, schema, cfg.positive, FeaturizeConfig(),
                           batch_rows, LocalEngine())  # fmt: skip
    write_json(out / "processed/featurizer.json", spec)
    return {
        str(path.relative_to(out)): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted(out.rglob("*")) if path.is_file()
    }  # fmt: skip


@pytest.mark.parametrize("name", BUNDLED)
def test_many_batches_write_the_bytes_of_one(name: str, tmp_path: Path) -> None:
    cfg = bundled(name)
    raw = raw_file(cfg, tmp_path)
    one = run_stages(raw, cfg, tmp_path / "one", cfg.batch_rows)
    assert pq_rows(raw) <= cfg.batch_rows  # the default keeps every bundled set in one batch
    many = run_stages(raw, cfg, tmp_path / "many", 1500)
    assert len(one) == 9 and one == many


def test_the_default_data_gives_the_committed_dvc_lock_hashes(tmp_path: Path) -> None:
    cfg = bundled("credit")
    got = run_stages(raw_file(cfg, tmp_path), cfg, tmp_path / "out", 1000)  # 5 batches
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    where = {"interim": "data/interim/", "processed": "data/processed/", "clean.json": "reports/"}
    for name, md5 in got.items():
        path = where[name.split("/")[0]] + name.split("/")[-1]
        stage = "featurize" if "processed" in path else "clean"
        locked = {out["path"]: out["md5"] for out in lock[stage]["outs"]}
        assert locked[path] == md5, path


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


# --------------------------------------------------------------------- statistics


@pytest.mark.parametrize("collect", [0, 1 << 20])
def test_radix_medians_equal_numpys(monkeypatch: pytest.MonkeyPatch, collect: int) -> None:
    """Every radix pass (collect 0: all four 16-bit digits) or one pass and a collection."""
    monkeypatch.setattr(stats, "COLLECT_VALUES", collect)
    rng = np.random.default_rng(0)
    columns = {
        "even": rng.normal(size=10_000) * 1e6,
        "odd": np.round(rng.normal(size=10_001), 1),  # many ties
        "negative": -rng.exponential(size=999),
        "gaps": np.where(rng.random(5_000) < 0.3, np.nan, rng.integers(-3, 3, 5_000) + 0.0),
        "one": np.array([np.nan, 7.5, np.nan]),
    }
    counts = {name: int((~np.isnan(v)).sum()) for name, v in columns.items()}

    def pieces(names: list[str]) -> Any:
        for start in range(0, 10_001, 777):  # pieces of any size: one read per pass
            yield {name: columns[name][start : start + 777] for name in names}

    medians = stats.exact_medians(counts, pieces)
    for name, values in columns.items():
        assert medians[name] == np.median(values[~np.isnan(values)]), name


def test_block_merged_moments_are_within_1e_12_of_numpys() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(3, 2, 100_003) + 1e4  # a large mean: the hard case for one pass
    merged = stats.Moments()
    for start in range(0, len(values), 4096):
        merged = merged.merge(stats.Moments.of(values[start : start + 4096]))
    assert merged.n == len(values)
    assert abs(merged.mean - values.mean()) <= 1e-12 * abs(values.mean())
    assert abs(merged.std - values.std()) <= 1e-12 * values.std()
    one = stats.Moments.of(values)
    assert (one.mean, one.std) == (values.mean(), values.std())  # one block: numpy's bits


@pytest.mark.parametrize("impute", ["median", "mean"])
def test_a_split_of_many_blocks_fits_what_one_block_fits(
    impute: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Buckets of more than 100 values take another radix pass: x's median is found before k's.
    monkeypatch.setattr(stats, "COLLECT_VALUES", 100)
    rng = np.random.default_rng(2)
    n = 5_000
    train = pd.DataFrame({
        "k": np.where(rng.random(n) < 0.5, 3.0, np.nan),
        "x": np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 20, n)),
        "c": pd.Categorical(rng.choice(["a", "b", "c"], n)),
        "y": pd.Categorical(rng.choice(["bad", "good"], n)),
    })  # fmt: skip
    kinds = {"k": "numeric", "x": "numeric", "c": "categorical"}
    schema = {"target": "y", "columns": [{"name": c, "kind": k} for c, k in kinds.items()]}
    cfg = FeaturizeConfig(numeric_impute=impute)  # type: ignore[arg-type]
    whole = fit_featurizer(train, schema, "bad", cfg)
    blocks = fit_batches(FrameBatches(train, 333, 1024), schema, "bad", cfg, LocalEngine())
    for name in ("k", "x"):
        got, want = blocks["numeric"][name], whole["numeric"][name]
        if impute == "median":  # exact
            assert got["fill"] == want["fill"]
        for key in ("fill", "mean", "std"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), (name, key)
    assert {k: v for k, v in blocks.items() if k != "numeric"} == {
        k: v for k, v in whole.items() if k != "numeric"
    }


# ---------------------------------------------------------------------- duplicates


def test_a_hash_collision_never_drops_a_distinct_row(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "a": [1.0, 2.0, 1.0, np.nan, np.nan, -0.0, 0.0],
            "b": ["x", "x", "x", None, None, "y", "y"],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    collided = np.zeros(len(rows), dtype=np.uint64)  # every row shares one hash
    found = CandidateRows(tmp_path, bits=0)
    found.add(rows.iloc[:4], collided[:4], rows.index.to_numpy()[:4])  # in two batches
    found.add(rows.iloc[4:], collided[4:], rows.index.to_numpy()[4:])
    assert found.duplicates().tolist() == rows.index[rows.duplicated()].tolist() == [12, 14, 16]


def test_duplicates_across_batches_keep_the_first_row(tmp_path: Path) -> None:
    cfg = bundled("credit")
    raw = pd.read_parquet(raw_file(cfg, tmp_path))
    copies = raw.iloc[::7]
    raw = pd.concat([raw, copies], ignore_index=True)  # copies of rows thousands of rows apart
    one_parts, one_report, _ = clean_and_split(raw, cfg, SPLIT)
    many_parts, many_report, _ = clean_and_split(raw, cfg, SPLIT, batch_rows=700)
    assert one_report == many_report
    assert one_report["dropped"]["duplicates"] >= len(copies)
    for name in SPLITS:
        pd.testing.assert_frame_equal(one_parts[name], many_parts[name])


def test_duplicates_whose_text_is_missing_in_a_later_batch(tmp_path: Path) -> None:
    """The first batch's duplicate candidates hold text, the second's none (Arrow types that
    column null): every partition file keeps the first batch's schema."""
    cfg = dataclasses.replace(bundled("churn"), target="y", positive="a", drop=[], valid={},
                              types={"note": "text"})  # fmt: skip
    raw = pd.DataFrame({
        "x": [float(i % 7) for i in range(40)],
        "note": ["hello world"] * 20 + [None] * 20,
        "y": ["b", "a"] * 20,
    })  # fmt: skip
    raw = pd.concat([raw, raw], ignore_index=True)
    one_parts, one_report, _ = clean_and_split(raw, cfg, SPLIT)
    many_parts, many_report, _ = clean_and_split(raw, cfg, SPLIT, batch_rows=20)
    assert one_report == many_report and one_report["dropped"]["duplicates"] == 52
    for name in SPLITS:
        pd.testing.assert_frame_equal(one_parts[name], many_parts[name])


# ------------------------------------------------------------------------- reading, writing


def test_batches_have_the_whole_tables_dtypes(tmp_path: Path) -> None:
    """An integer or boolean column missing a value in one row group only reads as float64 and
    object in every batch, as pandas reads the whole file: its rows hash the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semops.tabular.cleaning import row_hash
    from semops.tabular.stream import ParquetBatches

    table = pa.table({
        "n": pa.array([1, 2, 3, 4, None, 6], pa.int64()),
        "b": pa.array([True, False, True, True, None, False]),
        "s": ["a", "b", None, "d", "e", "f"],
    })  # fmt: skip
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=3)  # the missing values in the second group
    whole = pd.read_parquet(path)
    batches = list(ParquetBatches(path, 2).frames())
    assert len(batches) == 4 and [str(t) for t in batches[0].dtypes] == ["float64", "object", "str"]
    pd.testing.assert_frame_equal(pd.concat(batches), whole)
    assert (np.concatenate([row_hash(b, 0) for b in batches]) == row_hash(whole, 0)).all()


def test_a_parquet_stream_writes_what_write_table_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semops import io

    monkeypatch.setattr(io, "PARQUET_ROW_GROUP_ROWS", 1000)  # row groups of 1,000 rows
    frame = pd.DataFrame({"x": np.arange(3500.0), "c": pd.Categorical(["a", "b"] * 1750)})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with io.parquet_stream(tmp_path / "stream.parquet") as stream:
        for start, stop in [(0, 10), (10, 1700), (1700, 1701), (1701, 3500)]:  # uneven pieces
            stream.write(pa.Table.from_pandas(frame.iloc[start:stop], preserve_index=False))
    pq.write_table(table, tmp_path / "whole.parquet", row_group_size=1000, compression="zstd")
    assert (tmp_path / "stream.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "stream.parquet").metadata.num_row_groups == 4
