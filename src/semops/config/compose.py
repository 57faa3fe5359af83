"""Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra routine),
validating the result before it replaces params.yaml."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from semops import paths
from semops.config.research import ResearchConfig
from semops.config.schema import (
    PARAMS_FILE,
    DataConfig,
    EvaluateConfig,
    FeaturizeConfig,
    ModelConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    flatten,
    parse_section,
    read_params,
    validate_all,
)
from semops.config.validation import ENV_RESOLVERS, SECRETS_BELONG, STRICT, adapter
from semops.errors import ConfigError, SemopsError
from semops.io import atomic_path, read_json

CONF_DIR = Path("conf")
CONFIG_NAME = "config"
# The JSON Schema of params.yaml; its first line points editors (yaml-language-server) at it.
PARAMS_SCHEMA = CONF_DIR / "params.schema.json"


@dataclass(frozen=True, config=STRICT)
class Params:
    """The whole of params.yaml: the source of its JSON Schema."""

    data: DataConfig
    model: Annotated[ModelConfig, Field(discriminator="name")]
    train: TrainConfig
    split: SplitConfig
    featurize: FeaturizeConfig
    evaluate: EvaluateConfig
    tracking: TrackingConfig
    research: ResearchConfig


def params_json_schema() -> dict[str, Any]:
    """JSON Schema of params.yaml, for editor completion (yaml-language-server)."""
    schema: dict[str, Any] = adapter(Params).json_schema()
    return schema


def write_params_schema(path: Path = PARAMS_SCHEMA) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(params_json_schema(), indent=2, sort_keys=True) + "\n")


def compose_params(
    overrides: Sequence[str] = (), output: Path = PARAMS_FILE, conf_dir: Path = CONF_DIR
) -> list[str]:
    """Compose, validate and write params.yaml; return the values that changed, as lines
    (so that recomposing over an applied experiment says what it reset)."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (conf_dir / f"{CONFIG_NAME}.yaml").exists():
        raise SemopsError(f"{conf_dir / CONFIG_NAME}.yaml: not found")
    with atomic_path(output) as tmp:
        try:
            with _environment_refused() as reads:
                compose_and_dump(
                    tmp,
                    str(conf_dir.resolve()),
                    None,
                    CONFIG_NAME,
                    str(conf_dir.resolve().parent),
                    list(overrides),
                )
        except (HydraException, OmegaConfBaseException) as exc:
            if reads:
                raise ConfigError(f"{reads[0]} reads the environment; {SECRETS_BELONG}") from exc
            raise SemopsError(f"{conf_dir}: cannot compose config: {exc}") from exc
        composed = read_params(tmp)
        validate_all(composed)
        completed = with_defaults(composed)
        if completed != composed:
            from omegaconf import OmegaConf

            tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(completed)), encoding="utf-8")
            composed = completed
        check_against_raw_data(composed)
        before = previous_values(output)
    after = flatten(composed)
    return [
        f"{key}: {before.get(key, '(unset)')} -> {after.get(key, '(unset)')}"
        for key in sorted(set(before) | set(after))
        if before and before.get(key) != after.get(key)
    ]


def with_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """Validated params with every key a section leaves out written in, as its schema default
    (`data.positive: null` for a data set that omits it): DVC fails a stage whose declared
    params (`data.positive`) are absent from params.yaml. Keys keep conf/'s order, an added one
    following the key before it in the schema; the entries of a mapping (data.valid) are the
    user's, so left alone."""
    return {
        name: _filled(value, parse_section(name, params)) if isinstance(value, dict) else value
        for name, value in params.items()
    }


def _filled(raw: dict[str, Any], typed: Any) -> dict[str, Any]:
    """`raw` with the fields of the dataclass `typed` (its validated form) that it lacks."""
    if not dataclasses.is_dataclass(typed) or isinstance(typed, type):
        return raw
    schema_order = [f.name for f in dataclasses.fields(typed)]
    filled: dict[str, Any] = {}
    pending = [name for name in schema_order if name not in raw]

    def add_missing_before(position: int) -> None:
        while pending and schema_order.index(pending[0]) < position:
            name = pending.pop(0)
            filled[name] = _plain(getattr(typed, name))

    for key, value in raw.items():
        if key in schema_order:
            add_missing_before(schema_order.index(key))
            value = _filled(value, getattr(typed, key)) if isinstance(value, dict) else value
        filled[key] = value
    add_missing_before(len(schema_order))
    return filled


def _plain(value: Any) -> Any:
    """A default as YAML data: settings dataclasses as mappings, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def _environment_refused() -> Iterator[list[str]]:
    """While composing, the resolvers that read the environment fail instead, and record where
    (`key: ${oc.env:NAME}`): a value composed from conf/ or an override would carry a key into
    params.yaml, then dvc.lock and MLflow."""
    from omegaconf import OmegaConf
    from omegaconf.basecontainer import BaseContainer

    registry = BaseContainer._resolvers  # OmegaConf has no public way to restore a resolver
    saved = {name: registry.get(name) for name in ENV_RESOLVERS}
    reads: list[str] = []

    def refusal(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, _node_: Any = None) -> Any:
            key = _node_._get_full_key(None) if _node_ is not None else "a value"
            reads.append(f"{key}: ${{{name}:{','.join(map(str, args))}}}")
            raise ConfigError(reads[-1])

        return refuse

    for name in ENV_RESOLVERS:
        OmegaConf.register_new_resolver(name, refusal(name), replace=True)
    try:
        yield reads
    finally:
        for name, resolver in saved.items():
            OmegaConf.clear_resolver(name)
            if resolver is not None:
                registry[name] = resolver


def previous_values(path: Path) -> dict[str, Any]:
    """The flattened params being replaced; none when the file is absent or broken (a merge
    conflict, say): composing is how it gets repaired."""
    try:
        return flatten(read_params(path)) if path.exists() else {}
    except ConfigError:
        return {}


def check_against_raw_data(params: dict[str, Any]) -> None:
    """Once a data set is downloaded, its columns are known: a misspelled column fails here,
    before `dvc repro` clears the outputs of the stage that would fail on it."""
    data = parse_section("data", params)
    manifest_path = paths.raw_manifest(data.name)
    if not manifest_path.exists():
        return
    manifest = read_json(manifest_path)
    if manifest.get("source") == dataclasses.asdict(data.source):  # else download runs again
        data.check_columns(manifest["columns"])
