"""features: a featurizer fitted on train only, applied to every split, saved as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from semops.config.schema import FeaturizeConfig
from semops.errors import SemopsError
from semops.io import dump_json, write_arrow, write_parquet
from semops.tabular.clean import normalise_categorical
from semops.tabular.featureio import LABEL, load_features
from semops.tabular.features import fit_featurizer, transform

CFG = FeaturizeConfig()


def split(numbers: dict[str, list[float]], categories: dict[str, list[Any]]) -> pd.DataFrame:
    """A split as the clean stage leaves it: float64 numerics, normalised categoricals."""
    table = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in numbers.items()})
    for name, values in categories.items():
        table[name] = normalise_categorical(pd.Series(values, dtype=object))
    return table


@pytest.fixture
def train() -> pd.DataFrame:
    # Columns deliberately not in sorted order (the JSON spec sorts its mapping keys).
    return split(
        {"z": [1.0, 2.0, np.nan, 9.0], "a": [10.0, 10.0, 10.0, 10.0]},
        {"colour": ["red", "blue", "red", None], "y": ["bad", "good", "good", "good"]},
    )


@pytest.fixture
def other() -> pd.DataFrame:
    """A validation-like split with very different values, an unseen and a missing category."""
    return split(
        {"z": [100.0, np.nan, -3.0], "a": [0.0, 20.0, np.nan]},
        {"colour": ["green", None, "blue"], "y": ["good", "bad", "bad"]},
    )


def columns(table: Any) -> dict[str, list[Any]]:
    return {name: table.column(name).to_pylist() for name in table.column_names}


# ------------------------------------------------------------------------------ fit


def test_numeric_statistics_come_from_the_training_split(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    z = spec["numeric"]["z"]
    assert z["fill"] == 2.0  # median of the present values 1, 2, 9
    filled = np.array([1.0, 2.0, 2.0, 9.0])
    assert z["mean"] == pytest.approx(filled.mean())
    assert z["std"] == pytest.approx(filled.std())
    # A constant column is centred but not divided by zero.
    assert spec["numeric"]["a"] == {"fill": 10.0, "mean": 10.0, "std": 1.0}


def test_mean_imputation_and_no_scaling(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", FeaturizeConfig(numeric_impute="mean", scale=False))
    assert spec["numeric"]["z"] == {"fill": 4.0, "mean": 0.0, "std": 1.0}


def test_transforming_other_splits_leaves_the_spec_alone(
    train: pd.DataFrame, other: pd.DataFrame
) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    saved = json.loads(dump_json(spec))
    transform(other, spec)
    transform(train, spec)
    assert spec == saved
    assert spec["categorical"] == {"colour": ["blue", "red"]}  # no "green" from the other split
    assert spec["features"] == ["z", "a", "colour=blue", "colour=red"]


def test_categories_absent_from_train_are_not_features(train: pd.DataFrame) -> None:
    # As read back from Parquet, a split's categorical column knows every category of the data set.
    train = train.copy()
    train["colour"] = train["colour"].cat.set_categories(["blue", "green", "purple", "red"])
    spec = fit_featurizer(train, "y", "bad", CFG)
    assert spec["categorical"]["colour"] == ["blue", "red"]


def test_rare_categories_are_dropped_below_min_category_count(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", FeaturizeConfig(min_category_count=2))
    assert spec["categorical"]["colour"] == ["red"]
    rows = columns(transform(train, spec))
    assert rows["colour=red"] == [1.0, 0.0, 1.0, 0.0]
    assert "colour=blue" not in rows


def test_numeric_column_without_values_in_train_raises(train: pd.DataFrame) -> None:
    train = train.assign(empty=np.nan)
    with pytest.raises(SemopsError, match="'empty' has no values in the training split"):
        fit_featurizer(train, "y", "bad", CFG)


# ----------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("positive", "classes"), [("bad", ["good", "bad"]), ("Good ", ["bad", "good"])]
)
def test_binary_puts_the_positive_class_last(
    train: pd.DataFrame, positive: str, classes: list[str]
) -> None:
    spec = fit_featurizer(train, "y", positive, CFG)
    assert spec["target"] == {"column": "y", "classes": classes}
    labels = columns(transform(train, spec))[LABEL]
    assert [classes[i] for i in labels] == ["bad", "good", "good", "good"]


def test_multiclass_classes_are_sorted() -> None:
    table = split({"x": [1.0, 2.0, 3.0, 4.0]}, {"y": ["zeta", "alpha", "mid", "alpha"]})
    spec = fit_featurizer(table, "y", None, CFG)
    assert spec["target"]["classes"] == ["alpha", "mid", "zeta"]
    assert columns(transform(table, spec))[LABEL] == [2, 0, 1, 0]


def test_target_class_unseen_in_training_raises(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    odd = split({"z": [1.0], "a": [1.0]}, {"colour": ["red"], "y": ["ugly"]})
    with pytest.raises(SemopsError, match=r"target classes \['ugly'\]"):
        transform(odd, spec)


# ------------------------------------------------------------------- transform


def test_transform_uses_the_training_statistics(train: pd.DataFrame, other: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    out = transform(other, spec)
    z = spec["numeric"]["z"]
    expected = (np.array([100.0, z["fill"], -3.0]) - z["mean"]) / z["std"]
    got = out.column("z").to_numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6)
    # `a` was constant 10 in train: centred on 10, unscaled, its missing value filled with 10.
    np.testing.assert_array_equal(
        out.column("a").to_numpy(), np.array([-10.0, 10.0, 0.0], dtype=np.float32)
    )


def test_train_numerics_are_standardised(train: pd.DataFrame) -> None:
    z = transform(train, fit_featurizer(train, "y", "bad", CFG)).column("z").to_numpy()
    assert z.mean() == pytest.approx(0.0, abs=1e-6)
    assert z.std() == pytest.approx(1.0, abs=1e-6)


def test_unseen_and_missing_categories_encode_as_all_zeros(
    train: pd.DataFrame, other: pd.DataFrame
) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    out = columns(transform(other, spec))
    assert out["colour=blue"] == [0.0, 0.0, 1.0]
    assert out["colour=red"] == [0.0, 0.0, 0.0]
    assert "colour=green" not in out
    assert list(out) == [*spec["features"], LABEL]


def test_transform_accepts_plain_string_columns(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    plain = train.assign(colour=train["colour"].astype(object), y=train["y"].astype(object))
    assert columns(transform(plain, spec)) == columns(transform(train, spec))


def test_spec_survives_a_json_round_trip(train: pd.DataFrame, other: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    reloaded = json.loads(dump_json(spec))
    assert reloaded == spec
    for table in (train, other):
        direct, via_json = transform(table, spec), transform(table, reloaded)
        # Same columns in the same order: a model reads them by position.
        assert direct.column_names == via_json.column_names == [*spec["features"], LABEL]
        assert direct.equals(via_json)


# ------------------------------------------------------------------ load_features


def test_load_features_round_trip(tmp_path: Path, train: pd.DataFrame, other: pd.DataFrame) -> None:
    spec = fit_featurizer(train, "y", "bad", CFG)
    table = transform(other, spec)
    path = tmp_path / "processed" / "val.parquet"
    write_arrow(path, table)
    features, labels, names = load_features(path)
    assert names == spec["features"]
    assert features.dtype == np.float32
    assert features.shape == (3, 4)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 1, 1])
    for j, name in enumerate(names):
        np.testing.assert_array_equal(features[:, j], table.column(name).to_numpy())


def test_featurize_after_parquet_round_trip_of_the_splits(
    tmp_path: Path, train: pd.DataFrame, other: pd.DataFrame
) -> None:
    """The featurize stage reads the interim splits back from Parquet: same result."""
    write_parquet(tmp_path / "train.parquet", train)
    write_parquet(tmp_path / "val.parquet", other)
    train_back = pd.read_parquet(tmp_path / "train.parquet")
    other_back = pd.read_parquet(tmp_path / "val.parquet")
    spec = fit_featurizer(train_back, "y", "bad", CFG)
    assert spec == fit_featurizer(train, "y", "bad", CFG)
    assert transform(other_back, spec).equals(transform(other, spec))


def test_load_features_refuses_nulls_and_other_types(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semops.errors import SemopsError

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"x": pa.array([1.0, None], pa.float32()), "label": [0, 1]}), path)
    with pytest.raises(SemopsError, match="1 nulls"):
        load_features(path)
    pq.write_table(pa.table({"x": pa.array([1.0, 2.0], pa.float64()), "label": [0, 1]}), path)
    with pytest.raises(SemopsError, match="type double"):
        load_features(path)
