"""Secrets in params.yaml: a value that reads the environment (`${oc.env:...}`, from an override
or a conf/ file) is refused by `semops compose`, and a params.yaml holding a secret variable's
value (as `dvc exp run -S` writes one) by every stage that loads it; URLs of the research
section carry no token-like query parameters. No message quotes the secret."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from projectkit import BIN, REPO, clean_env

from semops.config.schema import load_section
from semops.config.validation import check_http_url, check_no_environment, url_credential
from semops.errors import ConfigError

SECRET = "sk-test-0123456789abcdef"


def passthrough() -> dict[str, str]:
    """PYTHONPATH, where set, for the subprocesses (clean_env drops it): running these tests
    against another checkout's src/."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    return tmp_path


def compose(project: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "semops"), "compose", *overrides],
        cwd=project,
        env=clean_env(SEMOPS_TEST_API_KEY=SECRET, **passthrough()),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], project: Path, key: str) -> None:
    assert result.returncode != 0
    assert result.stderr.startswith(f"error: {key}"), result.stderr
    assert "belong in the environment or the project's .env" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not (project / "params.yaml").exists()


@pytest.mark.parametrize(
    "value",
    [
        "${oc.env:SEMOPS_TEST_API_KEY}",
        "run-${oc.env:SEMOPS_TEST_API_KEY,none}",
        "${oc.decode:${oc.env:SEMOPS_TEST_API_KEY}}",
        "${env:SEMOPS_TEST_API_KEY}",  # oc.env's name before OmegaConf 2.1
    ],
)
def test_an_override_reading_the_environment_is_refused(project: Path, value: str) -> None:
    result = compose(project, f"tracking.experiment='{value}'")
    assert_refused(result, project, "tracking.experiment: ${")
    assert "reads the environment" in result.stderr


def test_a_conf_file_reading_the_environment_is_refused(project: Path) -> None:
    config = project / "conf" / "config.yaml"
    text = config.read_text()
    assert "  collection: research " in text
    config.write_text(text.replace("  collection: research ", "  collection: ${oc.env:HOME} ", 1))
    assert_refused(compose(project), project, "research.store.collection: ${oc.env:HOME}")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("research.store.url='http://qdrant:6333/?api_key=abc'", "research.store.url"),
        ("research.ollama.host='http://ollama:11434/?token=abc'", "research.ollama.host"),
        ("research.openai.base_url='https://llm.example/v1?access_token=x'", "research.openai"),
    ],
)
def test_research_urls_with_token_like_query_parameters_are_refused(
    project: Path, override: str, key: str
) -> None:
    result = compose(project, override)
    assert result.returncode != 0
    assert key in result.stderr and "must not embed credentials" in result.stderr


def test_params_yaml_holding_a_secret_from_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMOPS_TEST_API_KEY", SECRET)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tracking": {"experiment": f"exp-{SECRET}"}}))
    with pytest.raises(ConfigError) as refused:
        load_section("tracking", params)
    assert str(refused.value).startswith("tracking.experiment holds the value of")
    assert "$SEMOPS_TEST_API_KEY" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_params_yaml_with_an_environment_interpolation_is_refused(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tracking": {"experiment": "${oc.env:OPENAI_API_KEY}"}}))
    with pytest.raises(ConfigError, match=r"^tracking\.experiment: .* reads the environment"):
        load_section("tracking", params)


def test_an_ordinary_experiment_name_still_composes(project: Path) -> None:
    result = compose(project, "tracking.experiment=nightly")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((project / "params.yaml").read_text())["tracking"] == {
        "experiment": "nightly"
    }


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("https://user:s3cret@llm.example/v1", "user:password@"),
        ("https://llm.example/v1?access_token=s3cret", "'access_token'"),
        ("https://llm.example/cb#access_token=s3cret&state=1", "'access_token'"),  # OAuth implicit
        ("https://llm.example/cb#state=1;id_token=s3cret", "'id_token'"),
        ("https://llm.example/v1?t%6Fken=s3cret", "'token'"),  # percent-encoded name
        ("https://llm.example/v1?x=1;%61pi_key=s3cret", "'api_key'"),
        ("https://llm.example/v1?a+token=s3cret", "'a token'"),  # + is a space in a query
        ("https://llm.example/v1?x=1&token%3Ds3cret", "'token'"),  # an encoded = as well
    ],
)
def test_a_url_credential_is_found_and_named_without_its_value(url: str, named: str) -> None:
    assert url_credential(url) == named
    with pytest.raises(ConfigError) as refused:
        check_http_url("research.openai.base_url", url)
    assert named in str(refused.value) and "must not embed credentials" in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://docs.example/api#api-keys",  # an anchor, not a parameter
        "https://docs.example/a.csv?raw=true;page=2",
        "https://docs.example/search?q=a%40b#results",
        "http://qdrant:6333",
    ],
)
def test_a_url_without_credentials_passes(url: str) -> None:
    assert url_credential(url) is None
    check_http_url("research.store.url", url)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("GITHUB_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("MLFLOW_TRACKING_PASSWORD", True),
        ("GIT_AUTHOR_NAME", False),
        ("PIP_KEYRING_PROVIDER", False),
        ("SSH_AUTH_SOCK", False),
    ],
)
def test_only_variables_named_as_secrets_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, secret: bool
) -> None:
    value = "a-value-long-enough"
    monkeypatch.setenv(name, value)
    tree = {"experiment": f"run-{value}"}
    if secret:
        with pytest.raises(
            ConfigError, match=rf"^tracking\.experiment holds the value of \${name}"
        ):
            check_no_environment(tree, "tracking")
    else:
        check_no_environment(tree, "tracking")
