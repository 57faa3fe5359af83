"""`make serve`: the real MLflow scoring server on 127.0.0.1 serving the champion of the project
tests/test_registry.py builds, answering raw rows as `semops predict` does, and bad rows with a
4xx naming the column; stopped with nothing left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import run
from projectkit import clean_env
from test_registry import MODEL_NAME, TOLERANCE, build_results, raw_test_rows

from semops.tabular.scoring import PREDICTION, RawScorer
from semops.tracking.server import free_port

START_TIMEOUT_S = 120.0


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (make, mlflow, uvicorn), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            server.poll()
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, int]]:
    """(project, the champion's kind, port) while `make serve` runs there."""
    project, by_kind = build_results(tmp_path_factory.getbasetemp() / "three-results")
    port = free_port()
    log = (project.parent / f"serve-{port}.log").open("wb")
    started = time.monotonic()
    server = subprocess.Popen(
        ["make", "-s", "serve", f"SERVE_PORT={port}"],
        cwd=project,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() ends exactly what it started
    )
    try:
        while not answers(port):
            assert server.poll() is None, (project.parent / f"serve-{port}.log").read_text()
            assert time.monotonic() - started < START_TIMEOUT_S, "the server did not start"
            time.sleep(0.25)
        print(f"make serve answered /ping after {time.monotonic() - started:.1f} s")
        yield project, champion_kind(project, by_kind), port
    finally:
        stop(server)
        log.close()
    assert not answers(port)
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)  # nothing of it left running


def champion_kind(project: Path, by_kind: dict[str, Any]) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    (kind,) = [k for k, r in by_kind.items() if r["result_id"] == champion.tags["semops.result_id"]]
    return kind


def post(port: int, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def split_body(rows: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}


def records_body(rows: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_records": json.loads(rows.to_json(orient="records"))}


def predictions(text: str) -> pd.DataFrame:
    return pd.DataFrame(json.loads(text)["predictions"])


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    probabilities = [c for c in expected.columns if c != PREDICTION]
    assert list(got.columns) == list(expected.columns)
    assert got[probabilities].to_numpy() == pytest.approx(
        expected[probabilities].to_numpy(), abs=TOLERANCE
    )
    assert list(got[PREDICTION]) == list(expected[PREDICTION])


def test_served_champion_scores_raw_rows_as_semops_predict_does(
    served: tuple[Path, str, int], tmp_path: Path
) -> None:
    project, kind, port = served
    rows = raw_test_rows(project)
    expected = RawScorer.load(project.parent / "kinds" / kind / "model").score(rows)
    status, text = post(port, split_body(rows))  # as downloaded: the target column too
    assert status == 200, text
    assert_same(predictions(text), expected.reset_index(drop=True))
    features = rows.drop(columns=["Status"])
    status, text = post(port, records_body(features))
    assert status == 200, text
    assert_same(predictions(text), expected.reset_index(drop=True))

    rows.to_parquet(tmp_path / "rows.parquet")
    out = tmp_path / "predicted.parquet"
    model = f"models:/{MODEL_NAME}@champion"
    command = ["semops", "predict", "--model", model, "--input", str(tmp_path / "rows.parquet")]
    run([*command, "--output", str(out), "--keep", ""], project)
    assert_same(predictions(text), pd.read_parquet(out).reset_index(drop=True))


@pytest.mark.parametrize(
    ("column", "value"),
    [("Age", "thirty"), ("Income", "a lot"), ("Age", None), ("Age", [30])],
    ids=["text-in-long", "text-in-double", "null-in-long", "list-in-long"],
)
def test_a_wrong_typed_value_is_a_4xx_naming_the_column(
    served: tuple[Path, str, int], column: str, value: Any
) -> None:
    """MLflow casts each column to its signature type first: a value it cannot cast is its 400.
    A null in an integer (long) column is one: JSON has no missing integer (see README)."""
    project, _, port = served
    rows = json.loads(raw_test_rows(project).head(3).to_json(orient="records"))
    rows[1][column] = value
    status, text = post(port, {"dataframe_records": rows})
    assert 400 <= status < 500, text
    assert column in json.loads(text)["message"]


def test_a_missing_column_is_a_4xx_naming_it(served: tuple[Path, str, int]) -> None:
    project, _, port = served
    rows = raw_test_rows(project).head(3).drop(columns=["Income"])
    for body in (split_body(rows), records_body(rows)):
        status, text = post(port, body)
        assert 400 <= status < 500, text
        assert "Income" in json.loads(text)["message"]


def test_a_null_in_a_double_or_text_column_is_a_missing_value(
    served: tuple[Path, str, int],
) -> None:
    project, kind, port = served
    rows = raw_test_rows(project).head(4).copy()
    rows.at[rows.index[0], "Income"] = None
    rows.at[rows.index[1], "Home"] = None
    status, text = post(port, records_body(rows))
    assert status == 200, text
    expected = RawScorer.load(project.parent / "kinds" / kind / "model").score(rows)
    assert_same(predictions(text), expected.reset_index(drop=True))
