"""Logging result bundles to a real MLflow store (sqlite in a temporary folder)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from projectkit import clean_env

from semops.redaction import redact
from semops.tracking.mirror import (
    BUNDLE,
    COMPLETE_TAG,
    RESULT_TAG,
    is_unreachable,
    log_bundle,
    mirror_pending,
    mlflow_key,
)


def make_bundle(directory: Path, result_id: str = "r1", exp: str = "workspace") -> Path:
    directory.mkdir(parents=True)
    bundle = {
        "experiment": "unit",
        "run_name": f"run-{result_id}",
        "params": {"train.lr": "0.001", "model.name": "mlp"},
        "metrics": {"test.roc_auc": 0.847861, "clean.rows.raw": 4454},
        "history": [{"epoch": 1.0, "val_loss": 0.5}, {"epoch": 2.0, "val_loss": 0.45}],
        "tags": {RESULT_TAG: result_id, "dvc_experiment": exp, "git_commit": "abc"},
    }
    (directory / BUNDLE).write_text(json.dumps(bundle))
    (directory / "roc.csv").write_text("fpr,tpr\n0,0\n0.5,0.8\n1,1\n")
    (directory / "plots").mkdir()
    (directory / "plots" / "roc.png").write_bytes(b"\x89PNG\r\n")
    (directory / "model").mkdir()
    (directory / "model" / "model.json").write_text("{}")
    return directory


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # mlruns/ (and its pending/) live here
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def runs(uri: str, deleted: bool = False) -> list[Any]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("unit")
    assert experiment is not None
    view = ViewType.ALL if deleted else ViewType.ACTIVE_ONLY
    return client.search_runs([experiment.experiment_id], run_view_type=view)


def test_bundle_is_logged_once_with_its_numbers(tmp_path: Path, store: str) -> None:
    run_id, new = log_bundle(make_bundle(tmp_path / "b1"), store)
    assert new and not (tmp_path / "b1").exists()
    (logged,) = runs(store)
    assert logged.info.run_id == run_id
    assert logged.data.metrics == {
        "test.roc_auc": 0.847861,
        "clean.rows.raw": 4454,
        "val_loss": 0.45,
    }
    assert logged.data.params == {"train.lr": "0.001", "model.name": "mlp"}
    assert logged.data.tags[COMPLETE_TAG] == "true"
    again, new = log_bundle(make_bundle(tmp_path / "b2", exp="happy-exp"), store)
    assert (again, new) == (run_id, False)
    (same,) = runs(store)
    assert same.data.tags["dvc_experiment.happy-exp"] == "same result"


def test_an_incomplete_run_is_replaced_not_taken_for_the_result(tmp_path: Path, store: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment_id = client.create_experiment("unit")
    partial = client.create_run(experiment_id, tags={RESULT_TAG: "r1", COMPLETE_TAG: "false"})
    run_id, new = log_bundle(make_bundle(tmp_path / "b"), store)
    assert new and run_id != partial.info.run_id
    assert [r.info.run_id for r in runs(store)] == [run_id]
    assert partial.info.run_id in {r.info.run_id for r in runs(store, deleted=True)}


def test_mirror_logs_each_pending_bundle_and_reports_failures(tmp_path: Path, store: str) -> None:
    pending = tmp_path / "mlruns" / "pending"
    make_bundle(pending / "aaa", result_id="aaa")
    (pending / "bbb").mkdir(parents=True)
    (pending / "bbb" / BUNDLE).write_text("{not json")
    make_bundle(pending / "ccc", result_id="ccc")
    done, failed = mirror_pending(store)
    assert [(result, new) for result, _, new, _ in done] == [("aaa", True), ("ccc", True)]
    assert len(failed) == 1 and failed[0].startswith("bbb: ")
    assert sorted(p.name for p in pending.iterdir()) == ["bbb"]


def test_keys_and_secrets() -> None:
    assert mlflow_key("clean.set_missing.impossible.amount (usd)") == (
        "clean.set_missing.impossible.amount _usd_"
    )
    assert mlflow_key("test.roc_auc") == "test.roc_auc"
    assert redact("sqlite via http://u:p@ss@host/db") == "sqlite via http://***@host/db"
    text = "API request to http://alice:s3cret@host:5000/api failed; retry https://t0k@x.org"
    assert redact(text) == "API request to http://***@host:5000/api failed; retry https://***@x.org"


def test_a_sqlite_store_kept_locked_counts_as_out_of_reach(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process logging past the timeout: a wait that says so, then the result spooled."""
    import logging

    from semops.io import FileLockedError
    from semops.tracking.mirror import store_lock

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with (
        caplog.at_level(logging.INFO, logger="semops.io"),
        store_lock(uri),
        pytest.raises(FileLockedError) as caught,
        store_lock(uri, timeout=0.2),
    ):
        pass
    assert "track: waiting for process" in caplog.text and "mlflow.db" in caplog.text
    assert is_unreachable(caught.value)


@pytest.mark.parametrize(
    ("status", "unreachable"), [(None, True), (503, True), (500, False), (403, False)]
)
def test_unreachable_means_no_answer_from_the_store(
    tmp_path: Path, store: str, status: int | None, unreachable: bool
) -> None:
    """A real client against a closed port or a local server answering with `status`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status or 200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = None
    if status is not None:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(Exception) as raised:
            log_bundle(make_bundle(tmp_path / "b"), f"http://127.0.0.1:{port}")
        assert is_unreachable(raised.value) is unreachable
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def test_entry_points_read_the_project_env_file(tmp_path: Path) -> None:
    """A direct `semops` call sees .env as `make` does; the environment wins over the file."""
    (tmp_path / ".env").write_text(
        "# comment\nexport MLFLOW_TRACKING_URI='sqlite:///from-dotenv.db'\nOTHER=1\n"
    )
    env = clean_env()
    result = subprocess.run(
        ["semops", "mirror"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert "mirrored to sqlite:///from-dotenv.db" in result.stdout, result.stderr
    env["MLFLOW_TRACKING_URI"] = "sqlite:///from-env.db"
    result = subprocess.run(
        ["semops", "mirror"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert "mirrored to sqlite:///from-env.db" in result.stdout, result.stderr
