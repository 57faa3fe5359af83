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
from semops.tabular.cleaning import normalise_categorical
from semops.tabular.featureio import LABEL, load_features
from semops.tabular.features import fit_featurizer, transform

CFG = FeaturizeConfig()


def split(numbers: dict[str, list[float]], categories: dict[str, list[Any]]) -> pd.DataFrame:
    """A split as the clean stage leaves it: float64 numerics, normalised categoricals."""
    table = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in numbers.items()})
    for name, values in categories.items():
        table[name] = normalise_categorical(pd.Series(values, dtype=object))
    return table


def schema_of(table: pd.DataFrame, target: str = "y") -> dict[str, Any]:
    """The clean stage's input schema of a split: numbers numeric, the rest categorical."""
    kinds = {True: "numeric", False: "categorical"}
    return {
        "target": target,
        "columns": [
            {"name": name, "kind": kinds[pd.api.types.is_float_dtype(table[name])]}
            for name in table.columns
            if name != target
        ],
    }


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
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
    z = spec["numeric"]["z"]
    assert z["fill"] == 2.0  # median of the present values 1, 2, 9
    filled = np.array([1.0, 2.0, 2.0, 9.0])
    assert z["mean"] == pytest.approx(filled.mean())
    assert z["std"] == pytest.approx(filled.std())
    # A constant column is centred but not divided by zero.
    assert spec["numeric"]["a"] == {"fill": 10.0, "mean": 10.0, "std": 1.0}


def test_mean_imputation_and_no_scaling(train: pd.DataFrame) -> None:
    spec = fit_featurizer(
        train, schema_of(train), "bad", FeaturizeConfig(numeric_impute="mean", scale=False)
    )
    assert spec["numeric"]["z"] == {"fill": 4.0, "mean": 0.0, "std": 1.0}


def test_transforming_other_splits_leaves_the_spec_alone(
    train: pd.DataFrame, other: pd.DataFrame
) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
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
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
    assert spec["categorical"]["colour"] == ["blue", "red"]


def test_rare_categories_are_dropped_below_min_category_count(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", FeaturizeConfig(min_category_count=2))
    assert spec["categorical"]["colour"] == ["red"]
    rows = columns(transform(train, spec))
    assert rows["colour=red"] == [1.0, 0.0, 1.0, 0.0]
    assert "colour=blue" not in rows


def test_numeric_column_without_values_in_train_raises(train: pd.DataFrame) -> None:
    train = train.assign(empty=np.nan)
    with pytest.raises(SemopsError, match="'empty' has no values in the training split"):
        fit_featurizer(train, schema_of(train), "bad", CFG)


# ----------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("positive", "classes"), [("bad", ["good", "bad"]), ("Good ", ["bad", "good"])]
)
def test_binary_puts_the_positive_class_last(
    train: pd.DataFrame, positive: str, classes: list[str]
) -> None:
    spec = fit_featurizer(train, schema_of(train), positive, CFG)
    assert spec["target"] == {"column": "y", "classes": classes}
    labels = columns(transform(train, spec))[LABEL]
    assert [classes[i] for i in labels] == ["bad", "good", "good", "good"]


def test_multiclass_classes_are_sorted() -> None:
    table = split({"x": [1.0, 2.0, 3.0, 4.0]}, {"y": ["zeta", "alpha", "mid", "alpha"]})
    spec = fit_featurizer(table, schema_of(table), None, CFG)
    assert spec["target"]["classes"] == ["alpha", "mid", "zeta"]
    assert columns(transform(table, spec))[LABEL] == [2, 0, 1, 0]


def test_target_class_unseen_in_training_raises(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
    odd = split({"z": [1.0], "a": [1.0]}, {"colour": ["red"], "y": ["ugly"]})
    with pytest.raises(SemopsError, match=r"target classes \['ugly'\]"):
        transform(odd, spec)


# ------------------------------------------------------------------- transform


def test_transform_uses_the_training_statistics(train: pd.DataFrame, other: pd.DataFrame) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
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
    z = transform(train, fit_featurizer(train, schema_of(train), "bad", CFG)).column("z").to_numpy()
    assert z.mean() == pytest.approx(0.0, abs=1e-6)
    assert z.std() == pytest.approx(1.0, abs=1e-6)


def test_unseen_and_missing_categories_encode_as_all_zeros(
    train: pd.DataFrame, other: pd.DataFrame
) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
    out = columns(transform(other, spec))
    assert out["colour=blue"] == [0.0, 0.0, 1.0]
    assert out["colour=red"] == [0.0, 0.0, 0.0]
    assert "colour=green" not in out
    assert list(out) == [*spec["features"], LABEL]


def test_transform_accepts_plain_string_columns(train: pd.DataFrame) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
    plain = train.assign(colour=train["colour"].astype(object), y=train["y"].astype(object))
    assert columns(transform(plain, spec)) == columns(transform(train, spec))


def test_spec_survives_a_json_round_trip(train: pd.DataFrame, other: pd.DataFrame) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
    reloaded = json.loads(dump_json(spec))
    assert reloaded == spec
    for table in (train, other):
        direct, via_json = transform(table, spec), transform(table, reloaded)
        # Same columns in the same order: a model reads them by position.
        assert direct.column_names == via_json.column_names == [*spec["features"], LABEL]
        assert direct.equals(via_json)


# ------------------------------------------------------------------ load_features


def test_load_features_round_trip(tmp_path: Path, train: pd.DataFrame, other: pd.DataFrame) -> None:
    spec = fit_featurizer(train, schema_of(train), "bad", CFG)
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
    spec = fit_featurizer(train_back, schema_of(train_back), "bad", CFG)
    assert spec == fit_featurizer(train, schema_of(train), "bad", CFG)
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


# ------------------------------------------------------------------ max_categories


def counted(levels: dict[str, int]) -> list[str]:
    return [level for level, n in levels.items() for _ in range(n)]


@pytest.fixture
def many() -> pd.DataFrame:
    """A categorical with levels of counts 4, 3, 3, 2, 2, 1 (ties in both orders)."""
    colour = counted({"red": 4, "teal": 3, "blue": 3, "pink": 2, "gold": 2, "cyan": 1})
    return split({"x": list(range(15))}, {"colour": colour, "y": ["a", "b", "c"] * 5})


def test_max_categories_keeps_the_most_frequent_and_merges_the_rest(many: pd.DataFrame) -> None:
    spec = fit_featurizer(many, schema_of(many), None, FeaturizeConfig(max_categories=3))
    # Frequency first (red 4), then ties alphabetical (blue before teal at 3).
    assert spec["categorical"] == {"colour": ["blue", "red", "teal"]}
    assert spec["other"] == {"colour": ["cyan", "gold", "pink"]}
    assert spec["features"] == ["x", "colour=blue", "colour=red", "colour=teal", "colour=<OTHER>"]
    rows = split(
        {"x": [0.0] * 5}, {"colour": ["red", "gold", "cyan", "green", None], "y": ["a"] * 5}
    )
    out = columns(transform(rows, spec))
    assert out["colour=red"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert out["colour=<OTHER>"] == [0.0, 1.0, 1.0, 0.0, 0.0]  # unseen and missing: all zeros
    assert out["colour=blue"] == out["colour=teal"] == [0.0] * 5


@pytest.mark.parametrize("cap", [1, 2, 4, 5])
def test_width_is_at_most_the_cap_plus_one(many: pd.DataFrame, cap: int) -> None:
    spec = fit_featurizer(many, schema_of(many), None, FeaturizeConfig(max_categories=cap))
    width = [name for name in spec["features"] if name.startswith("colour=")]
    assert len(width) == cap + 1
    ranked = ["red", "blue", "teal", "gold", "pink", "cyan"]
    assert spec["categorical"]["colour"] == sorted(ranked[:cap])
    assert spec["other"]["colour"] == sorted(ranked[cap:])


def test_min_category_count_applies_before_the_cap(many: pd.DataFrame) -> None:
    cfg = FeaturizeConfig(min_category_count=2, max_categories=3)
    spec = fit_featurizer(many, schema_of(many), None, cfg)
    assert spec["other"] == {"colour": ["gold", "pink"]}  # cyan (1 row) is no feature at all
    out = columns(transform(many, spec))
    assert out["colour=<OTHER>"] == [0.0] * 10 + [1.0] * 4 + [0.0]


def test_no_other_feature_nor_key_within_the_cap(many: pd.DataFrame) -> None:
    spec = fit_featurizer(many, schema_of(many), None, FeaturizeConfig(max_categories=6))
    assert set(spec) == {"target", "numeric", "categorical", "features", "input"}
    assert not any(name.endswith("<OTHER>") for name in spec["features"])


def test_a_category_spelt_other_in_the_data_does_not_collide(many: pd.DataFrame) -> None:
    """Categories are casefolded by clean: `<OTHER>` in the data becomes `<other>`."""
    many = many.copy()
    many["colour"] = normalise_categorical(many["colour"].astype(str).replace("cyan", "<OTHER>"))
    spec = fit_featurizer(many, schema_of(many), None, FeaturizeConfig(max_categories=1))
    assert "<other>" in spec["other"]["colour"]
    assert spec["features"][-1] == "colour=<OTHER>"


# -------------------------------------------------------------------------- text


def text_split(reviews: list[Any], labels: list[str]) -> pd.DataFrame:
    from semops.tabular.cleaning import clean_text

    table = split({"x": [float(i) for i in range(len(reviews))]}, {"y": labels})
    table["review"] = clean_text(pd.Series(reviews, dtype=object))
    return table


def text_schema() -> dict[str, Any]:
    return {
        "target": "y",
        "columns": [{"name": "x", "kind": "numeric"}, {"name": "review", "kind": "text"}],
    }


REVIEWS = ["Great tea", "great price, great tea", "bad tea", None, "bad   price", "tea"]


def test_text_columns_become_bounded_tfidf_features(tmp_path: Path) -> None:
    train = text_split(REVIEWS, ["good", "good", "bad", "bad", "bad", "good"])
    spec = fit_featurizer(train, text_schema(), "good", FeaturizeConfig(text_features=5))
    terms = spec["text"]["review"]["terms"]
    assert len(terms) == 5
    text_features = [f"review~{term}" for term in terms]
    assert spec["features"] == ["x", *text_features]
    out = transform(train, spec)
    assert out.column_names == [*spec["features"], LABEL]
    assert all(out.column(name).to_numpy().dtype == np.float32 for name in text_features)
    assert not any(out.column(name)[3].as_py() for name in text_features)  # the missing review
    # Read back from Parquet (pandas' string dtype) and from featurizer.json: the same bits.
    write_parquet(tmp_path / "train.parquet", train)
    back = pd.read_parquet(tmp_path / "train.parquet")
    assert transform(back, json.loads(dump_json(spec))).equals(out)


def test_feature_columns_score_rows_without_a_target() -> None:
    from semops.tabular.features import feature_columns

    train = text_split(REVIEWS, ["good", "good", "bad", "bad", "bad", "good"])
    spec = fit_featurizer(train, text_schema(), "good", CFG)
    rows = text_split(["great tea", "never seen"], ["good", "bad"]).drop(columns="y")
    got = feature_columns(rows, spec)
    assert set(got) == set(spec["features"])
    assert all(values.dtype == np.float32 and len(values) == 2 for values in got.values())
    text = [name for name in spec["features"] if name.startswith("review~")]
    assert any(got[name][0] for name in text)
    assert not any(got[name][1] for name in text)  # no training term: all zeros


def test_a_feature_name_made_twice_fails_naming_it() -> None:
    table = split({"colour=red": [1.0, 2.0]}, {"colour": ["red", "red"], "y": ["a", "b"]})
    with pytest.raises(SemopsError, match=r"feature 'colour=red' is made by two columns"):
        fit_featurizer(table, schema_of(table), None, CFG)
