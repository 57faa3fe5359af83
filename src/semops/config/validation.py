"""The checks every params section shares: strict types and keys through pydantic, errors that
name the key path and the bad value, finite numbers within bounds, URLs without credentials, and
no value read from the environment."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import (
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
)
from pydantic import ValidationError as PydanticError

from semops.errors import ConfigError

# Attribute docstrings become descriptions in the JSON Schema (editor hover text). No float
# key, in any section, takes inf or nan (YAML .inf/.nan, `key=inf` overrides): time.sleep(inf)
# raises, and a learning rate of nan trains nothing.
STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

# Names of URL parameters that carry credentials: tokens, API keys, pre-signed URL signatures.
SECRET_PARAMETER = re.compile(
    r"token|key|secret|password|passwd|sig|signature|credential|auth", re.IGNORECASE
)


# Bounds declared on the field: pydantic checks them (inf and nan fail STRICT); the JSON Schema
# shows them.
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveFloat = Annotated[StrictFloat, Field(gt=0)]
NonNegativeFloat = Annotated[StrictFloat, Field(ge=0)]


def url_credential(url: str) -> str | None:
    """What in `url` carries a credential, named without its value: "user:password@" (anything
    before an @ in the host part), and the name of each query or fragment parameter (#access_token=,
    OAuth's implicit flow) that looks like a token, key or signature, percent-decoded, the
    parameters split on & and ; as servers do; None when nothing does."""
    from urllib.parse import unquote_plus

    rest = url.split("://", 1)[-1]
    found = ["user:password@"] if "@" in re.split(r"[/?#]", rest, maxsplit=1)[0] else []
    before_fragment, _, fragment = rest.partition("#")
    for text in (before_fragment.partition("?")[2], fragment):
        for part in re.split(r"[&;]", text):
            name, equals, _ = unquote_plus(part).partition("=")
            if equals and SECRET_PARAMETER.search(name) and repr(name) not in found:
                found.append(repr(name))
    return ", ".join(found) or None


def check_http_url(key: str, url: str) -> None:
    """params.yaml is committed and logged: a URL in it must carry no credentials."""
    found = url_credential(url)
    if found:
        raise ConfigError(
            f"{key} must not embed credentials ({found}; the value is not shown): params.yaml "
            "is committed and logged; keys come from the environment"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must start with http:// or https://, got {url!r}")


# Where secrets go instead of params.yaml: the end of every refusal of one.
SECRETS_BELONG = (
    "params.yaml is committed and logged (dvc.lock, MLflow): API keys and other secrets belong "
    "in the environment or the project's .env, read by the code that needs them"
)
# The resolvers that read the environment: OmegaConf's oc.env, and env (its name before 2.1).
ENV_RESOLVERS = ("oc.env", "env")
# An interpolation that reads the environment when OmegaConf resolves it.
ENV_INTERPOLATION = re.compile(r"\$\{\s*(" + "|".join(map(re.escape, ENV_RESOLVERS)) + r")\s*:")
# Environment variables that hold secrets (OPENAI_API_KEY, HF_TOKEN, MLFLOW_TRACKING_PASSWORD):
# the name ends in one of these words, so GIT_AUTHOR_NAME or PIP_KEYRING_PROVIDER do not count.
SECRET_VARIABLE = re.compile(
    r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE
)


def check_no_environment(tree: Any, where: str) -> None:
    """No value may read the environment, or hold a secret variable's value however it got
    there (an `oc.env` interpolation resolved by `dvc exp run -S`, a paste)."""
    secrets = {
        name: value
        for name, value in os.environ.items()
        if SECRET_VARIABLE.search(name) and len(value) >= 8
    }
    for key, value in _strings(tree, where):
        if ENV_INTERPOLATION.search(value):
            raise ConfigError(f"{key}: {value!r} reads the environment; {SECRETS_BELONG}")
        for name, secret in sorted(secrets.items()):
            if secret in value:
                raise ConfigError(f"{key} holds the value of ${name}; {SECRETS_BELONG}")


def _strings(tree: Any, path: str) -> typing.Iterator[tuple[str, str]]:
    """Every string in nested mappings and lists, with its key path."""
    if isinstance(tree, str):
        yield path, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _strings(value, f"{path}[{index}]")


T = TypeVar("T")

# What a value of the type a pydantic error names must be, in the words of the messages.
EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "model_attributes_type": "a mapping",
}
# The key that picks the class of a tagged union (data.source.kind).
TAG = "kind"


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(cls: Any) -> TypeAdapter[Any]:
    """The validator of `cls`, built once (building one takes milliseconds)."""
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def build(cls: type[T], raw: Any, where: str) -> T:
    """Validate the mapping `raw` into `cls`; a failure names the key path and the bad value."""
    try:
        built: T = adapter(cls).validate_python(raw)
    except PydanticError as exc:
        errors = exc.errors()
        # The first unknown key in sorted order: the same message whatever the mapping's order.
        unknown = sorted(
            (e for e in errors if e["type"] == "unexpected_keyword_argument"),
            key=lambda e: str(e["loc"][-1]),
        )
        raise ConfigError(_message(cls, where, (unknown or errors)[0])) from exc
    return built


def _message(cls: type, where: str, error: Any) -> str:
    kind, loc, value = error["type"], error["loc"], error["input"]
    if kind == "unexpected_keyword_argument":
        parent, tp = _locate(cls, where, loc[:-1])
        allowed = ", ".join(sorted(f.name for f in dataclasses.fields(tp)))
        return f"{parent}: unknown key {loc[-1]!r}; allowed keys: {allowed}"
    path, tp = _locate(cls, where, loc)
    if kind == "missing":
        return f"{path} is required"
    if kind == "union_tag_not_found":
        return f"{path} must be a mapping with a {TAG!r} key ({', '.join(_tags(tp))})"
    if kind == "union_tag_invalid":
        return f"{path}.{TAG}: unknown {TAG} {value[TAG]!r}; choose one of {', '.join(_tags(tp))}"
    bounds = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">=")}
    if kind in bounds:
        name, sign = bounds[kind]
        return f"{path} must be {sign} {error['ctx'][name]:g}, got {value!r}"
    if kind == "finite_number":
        return f"{path} must be a finite number, got {value!r}"
    shown = f"{value!r} ({type(value).__name__})"
    if kind == "literal_error":
        return f"{path} must be one of {', '.join(map(repr, get_args(tp)))}, got {shown}"
    if kind in EXPECTED:
        return f"{path} must be {EXPECTED[kind]}, got {shown}"
    return f"{path}: {error['msg']}, got {shown}"


def _locate(tp: Any, path: str, loc: tuple[int | str, ...]) -> tuple[str, Any]:
    """The dotted key path of a pydantic error location, and the type declared there (the
    tags pydantic puts in the location of a tagged union's member left out)."""
    rest = list(loc)
    while rest:
        item = rest.pop(0)
        if _members(tp):
            tp = next(m for m in _members(tp) if _tags(m) == [item])
        elif get_origin(tp) is list:
            path, tp = f"{path}[{item}]", get_args(tp)[0]
        elif get_origin(tp) is dict:
            path, tp = f"{path}.{item}", get_args(tp)[1]
        else:
            path, tp = f"{path}.{item}", typing.get_type_hints(tp).get(str(item))
    return path, tp


def _members(tp: Any) -> tuple[Any, ...]:
    """The classes of a tagged union; none for any other type."""
    options = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else ()
    return options if options and all(map(dataclasses.is_dataclass, options)) else ()


def _tags(tp: Any) -> list[str]:
    """The tags of a tagged union, sorted; of a member class, its own."""
    classes = _members(tp) or (tp,)
    return sorted(get_args(typing.get_type_hints(c)[TAG])[0] for c in classes)
