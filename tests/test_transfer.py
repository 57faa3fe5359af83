"""Copying a store into another (`semops mirror --to URI`): the results the real track stage
logged into a project's sqlite store (tests/test_registry.py's project), copied into a second
sqlite store and into a real `mlflow server`, once."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import run
from serverkit import running_server
from test_registry import (
    DATA,
    MODEL_NAME,
    build_results,
    copy_project,
    dead_uri,
    pending_tabular,
    raw_test_rows,
    store_uri,
)

from semops.tracking.bundle import COMPLETE_TAG, RESULT_TAG
from semops.tracking.runlog import LOGGER_TAG
from semops.tracking.transfer import COPIED_TAG, OWN_TAGS, copy_store

SOURCE_RUNS = 4  # a run per model kind and the research run
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return build_results(tmp_path_factory.getbasetemp() / "three-results")


@pytest.fixture(scope="module")
def team_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real team server: `mlflow server` on PostgreSQL, serving its artifacts."""
    with running_server(tmp_path_factory.mktemp("team-server"), workers=1) as server:
        yield server.url


@pytest.fixture
def scores(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A function: rows scored by models:/<MODEL_NAME>@champion (or another version: `ref`) of
    a store; sys.path as it was after (a loaded model prepends its code folder)."""
    import mlflow

    monkeypatch.setattr(sys, "path", list(sys.path))

    def score(uri: str, rows: pd.DataFrame, ref: str = "@champion") -> pd.DataFrame:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # where models:/ resolves
        return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}{ref}").predict(rows)

    return score


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def all_runs(uri: str) -> list[Any]:
    found = client(uri)
    experiments = [e.experiment_id for e in found.search_experiments()]
    return list(found.search_runs(experiments, max_results=1000))


def versions(uri: str) -> list[Any]:
    found = client(uri).search_model_versions(f"name = '{MODEL_NAME}'")
    return sorted(found, key=lambda v: int(v.version))


def target_store(folder: Path) -> str:
    folder.mkdir(parents=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_files(store: Any, run_id: str, path: str = "") -> dict[str, int]:
    files = {}
    for item in store.list_artifacts(run_id, path or None):
        if item.is_dir:
            files.update(artifact_files(store, run_id, item.path))
        else:
            files[item.path] = item.file_size
    return files


def histories(store: Any, logged: Any) -> dict[str, list[tuple[int, int, float]]]:
    """Each metric's every value, with its step and timestamp."""
    history = lambda key: store.get_metric_history(logged.info.run_id, key)  # noqa: E731
    return {
        key: sorted((m.step, m.timestamp, m.value) for m in history(key))
        for key in logged.data.metrics
    }


def datasets(logged: Any) -> list[tuple[Any, ...]]:
    found = []
    for item in logged.inputs.dataset_inputs:
        data, tags = item.dataset, [(t.key, t.value) for t in item.tags]
        where = (data.source_type, data.source)
        found.append((data.name, data.digest, *where, data.schema, data.profile, tags))
    return found


def run_models(store: Any, logged: Any) -> list[Any]:
    return list(
        store.search_logged_models(
            [logged.info.experiment_id], filter_string=f"source_run_id = '{logged.info.run_id}'"
        )
    )


def log_by_hand(uri: str, folder: Path) -> str:
    """A run logged by other means than the track stage (a notebook): no result id."""
    from mlflow.entities import Metric, Param

    store = client(uri)
    folder.mkdir()
    experiment = store.create_experiment("notebook", (folder / "artifacts").as_uri())
    run_id = store.create_run(experiment, run_name="by-hand", tags={"note": "hand"}).info.run_id
    losses = [Metric("loss", 1 / (step + 1), 1_000 + step, step) for step in range(3)]
    store.log_batch(run_id, metrics=losses, params=[Param("alpha", "0.5")])
    (folder / "notes.txt").write_text("a note\n")
    store.log_artifact(run_id, str(folder / "notes.txt"), "notes")
    store.set_terminated(run_id)
    return str(run_id)


def assert_same_run(source: Any, target: Any, original: Any, copy: Any) -> None:
    assert copy.data.tags[COMPLETE_TAG] == "true"
    assert copy.data.tags[COPIED_TAG] == original.info.run_id
    own = lambda tags: {k: v for k, v in tags.items() if k not in OWN_TAGS | {COPIED_TAG}}  # noqa: E731
    assert own(copy.data.tags) == own(original.data.tags)
    assert copy.info.run_name == original.info.run_name
    assert copy.info.status == original.info.status
    assert (copy.info.start_time, copy.info.end_time) == (
        original.info.start_time,
        original.info.end_time,
    )
    assert copy.data.params == original.data.params and copy.data.params
    assert histories(target, copy) == histories(source, original)
    assert datasets(copy) == datasets(original)
    assert artifact_files(target, copy.info.run_id) == artifact_files(source, original.info.run_id)


def assert_same_models(source: Any, target: Any, original: Any, copy: Any) -> None:
    models = run_models(source, original)
    (copied_model,) = run_models(target, copy)
    (model,) = models
    assert copied_model.source_run_id == copy.info.run_id
    assert copied_model.status.name == "READY"
    assert (copied_model.name, copied_model.model_type) == (model.name, model.model_type)
    assert (copied_model.params, copied_model.tags) == (model.params, model.tags)
    linked = lambda m: sorted((x.key, x.step, x.timestamp, x.value) for x in m.metrics)  # noqa: E731
    assert linked(copied_model) == linked(model) and linked(model)
    assert [o.model_id for o in copy.outputs.model_outputs] == [copied_model.model_id]


def test_the_copy_holds_the_same_runs_models_versions_and_aliases(
    results: tuple[Path, dict[str, Any]], tmp_path: Path, scores: Any
) -> None:
    project = copy_project(results[0], tmp_path / "project")
    source = store_uri(project)
    by_hand = log_by_hand(source, tmp_path / "notebook")
    client(source).set_registered_model_alias(MODEL_NAME, "staging", "1")  # a user's alias
    target = target_store(tmp_path / "team")

    copied = copy_store(source, target)
    assert (copied.runs, copied.runs_there, copied.versions, copied.versions_there) == (
        SOURCE_RUNS + 1,
        0,
        3,
        0,
    )
    assert copied.skipped == [] and copied.failed == []
    src, dst = client(source), client(target)
    copies = {r.data.tags[COPIED_TAG]: r for r in all_runs(target)}
    originals = all_runs(source)
    assert sorted(copies) == sorted(r.info.run_id for r in originals)
    for original in originals:
        copy = copies[original.info.run_id]
        assert_same_run(src, dst, original, copy)
        if original.data.tags.get("model"):  # a tabular result, with its MLflow Model
            assert_same_models(src, dst, original, copy)
        else:
            assert run_models(dst, copy) == []
    assert RESULT_TAG not in copies[by_hand].data.tags
    assert histories(dst, copies[by_hand])["loss"] == [
        (s, 1_000 + s, 1 / (s + 1)) for s in range(3)
    ]

    source_versions, target_versions = versions(source), versions(target)
    assert [v.tags[RESULT_TAG] for v in target_versions] == [
        v.tags[RESULT_TAG] for v in source_versions
    ]
    for original, copy in zip(source_versions, target_versions, strict=True):
        copied_run = copies[original.run_id]
        (copied_model,) = run_models(dst, copied_run)
        assert copy.run_id == copied_run.info.run_id
        assert copy.source == f"models:/{copied_model.model_id}"
        assert copy.description == original.description
        assert {k: v for k, v in copy.tags.items() if k != COPIED_TAG} == original.tags

    def result_of(uri: str, alias: str) -> str:
        return str(client(uri).get_model_version_by_alias(MODEL_NAME, alias).tags[RESULT_TAG])

    assert copied.aliases[MODEL_NAME] == {
        a: str(v) for a, v in dst.get_registered_model(MODEL_NAME).aliases.items()
    }
    for alias in ("champion", "staging"):
        assert result_of(target, alias) == result_of(source, alias)
    rows = raw_test_rows(project)
    expected = scores(source, rows)
    assert scores(target, rows).iloc[:, :-1].to_numpy() == pytest.approx(
        expected.iloc[:, :-1].to_numpy(), abs=TOLERANCE
    )
    assert list(scores(target, rows)["prediction"]) == list(expected["prediction"])


def dead_pid() -> int:
    probe = subprocess.Popen(["true"])
    probe.wait()
    return probe.pid


def cut_off_copy(uri: str, result_id: str, artifacts: Path | None = None) -> tuple[str, str]:
    """What a copy killed part-way leaves: the result's run not marked complete, by a process
    that has ended, and its MLflow Model still PENDING. Returns (run id, model id)."""
    store = client(uri)
    experiment = store.get_experiment_by_name("semops")
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else store.create_experiment("semops", artifacts.as_uri() if artifacts else None)
    )
    logger = f"{socket.gethostname()}:{dead_pid()}"
    tags = {RESULT_TAG: result_id, COMPLETE_TAG: "false", LOGGER_TAG: logger}
    partial = store.create_run(experiment_id, tags=tags).info.run_id
    model = store.create_logged_model(experiment_id, name="model", source_run_id=partial)
    return str(partial), str(model.model_id)


def test_copying_again_adds_nothing_and_a_copy_cut_off_part_way_is_made_again(
    results: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    project, by_kind = results
    source = store_uri(project)
    target = target_store(tmp_path / "team")
    result_id = by_kind["gbdt"]["result_id"]
    partial, orphan = cut_off_copy(target, result_id, tmp_path / "team" / "artifacts")

    copied = copy_store(source, target)
    assert (copied.runs, copied.runs_there, copied.versions) == (SOURCE_RUNS, 0, 3)
    dst = client(target)
    assert dst.get_run(partial).info.lifecycle_stage == "deleted"
    experiment_id = dst.get_experiment_by_name("semops").experiment_id
    assert orphan not in {m.model_id for m in dst.search_logged_models([experiment_id])}
    (redone,) = [r for r in all_runs(target) if r.data.tags[RESULT_TAG] == result_id]
    assert redone.data.tags[COMPLETE_TAG] == "true"

    runs_before = sorted(r.info.run_id for r in all_runs(target))
    versions_before = [(v.version, v.run_id, v.source) for v in versions(target)]
    again = copy_store(source, target)
    assert (again.runs, again.runs_there, again.versions, again.versions_there) == (
        0,
        SOURCE_RUNS,
        0,
        3,
    )
    assert sorted(r.info.run_id for r in all_runs(target)) == runs_before
    assert [(v.version, v.run_id, v.source) for v in versions(target)] == versions_before
    assert again.aliases == copied.aliases


def test_mirror_refuses_a_copy_into_itself_and_fails_on_a_store_out_of_reach(
    results: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    project = results[0]
    same = f"sqlite:///{project / 'mlruns' / '..' / 'mlruns' / 'mlflow.db'}"
    refused = run(["semops", "mirror", "--to", same], project, check=False)
    assert refused.returncode == 1 and "is the store copied from" in refused.stderr
    alone = run(["semops", "mirror", "--from", store_uri(project)], project, check=False)
    assert alone.returncode == 1 and "--from needs --to" in alone.stderr
    secret = "hunter2-Not-In-Argv"
    command = ["semops", "mirror", "--to", f"http://bob:{secret}@127.0.0.1:5050"]
    in_argv = run(command, project, check=False)
    assert in_argv.returncode == 1 and "MLFLOW_TRACKING_PASSWORD" in in_argv.stderr
    assert secret not in in_argv.stdout + in_argv.stderr
    missing = target_store(tmp_path / "none")
    command = ["semops", "mirror", "--from", missing, "--to", store_uri(project)]
    absent = run(command, tmp_path, check=False)
    assert absent.returncode == 1 and "no MLflow store to copy" in absent.stderr
    down = run(["semops", "mirror", "--to", dead_uri()], project, check=False)
    assert down.returncode == 1 and "could not be reached (Connection refused)" in down.stderr


def test_make_mirror_to_a_server_logs_what_is_pending_then_copies_the_store_once(
    results: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    scores: Any,
    team_server: str,
) -> None:
    """On a server the champion is chosen among all its versions (here also a result the local
    store never got), not taken over from the local alias; a copy another process left cut off
    (no lock on a server: its logger has ended) is made again."""
    url = team_server
    project = copy_project(results[0], tmp_path / "project")
    source = store_uri(project)
    local = versions(source)
    worst = min(local, key=roc)
    assert roc(worst) < max(map(roc, local))
    client(source).set_registered_model_alias(MODEL_NAME, "champion", worst.version)
    run(["semops", "compose", f"data={DATA}", "model=gbdt", "evaluate.threshold=0.3"], project)
    run(["python", "stages/evaluate.py"], project)
    run(["python", "stages/track.py"], project, MLFLOW_TRACKING_URI=dead_uri())
    pending = pending_tabular(project)
    cut_off = results[1]["mlp"]["result_id"]
    partial, orphan = cut_off_copy(url, cut_off)

    first = run(["make", "mirror", f"TO={url}"], project).stdout
    assert "2 pending result(s) mirrored" in first  # the research result too: found then
    assert "3 run(s) copied" in first and "1 already there" in first
    assert "3 model version(s) registered, 0 already there" in first
    assert not list((project / "mlruns/pending").glob("[!.]*"))
    team = client(url)
    assert team.get_run(partial).info.lifecycle_stage == "deleted"
    experiment_id = team.get_experiment_by_name("semops").experiment_id
    assert orphan not in {m.model_id for m in team.search_logged_models([experiment_id])}
    found = all_runs(url)
    result_ids = [r.data.tags[RESULT_TAG] for r in found]
    assert sorted(result_ids) == sorted({*result_ids}) and len(found) == SOURCE_RUNS + 1
    assert all(r.data.tags[COMPLETE_TAG] == "true" for r in found)

    there = versions(url)
    assert {v.tags[RESULT_TAG] for v in there} == {v.tags[RESULT_TAG] for v in local} | {
        pending.name
    }
    best = max(there, key=lambda v: (roc(v), -int(v.version)))
    champion = team.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.version == best.version and champion.tags[RESULT_TAG] != worst.tags[RESULT_TAG]
    assert f"{MODEL_NAME}@champion is version {best.version}" in first
    rows = raw_test_rows(project)
    (same_model,) = [v for v in local if v.tags["model"] == champion.tags["model"]]
    expected = scores(source, rows, f"/{same_model.version}")
    served = scores(url, rows)
    assert served.iloc[:, :-1].to_numpy() == pytest.approx(
        expected.iloc[:, :-1].to_numpy(), abs=TOLERANCE
    )

    again = run(["make", "mirror", f"TO={url}"], project).stdout
    assert "0 pending result(s)" in again and "0 run(s) copied" in again
    assert f"{SOURCE_RUNS} already there" in again and "0 model version(s) registered" in again
    assert sorted(r.info.run_id for r in all_runs(url)) == sorted(r.info.run_id for r in found)
    assert [v.version for v in versions(url)] == [v.version for v in there]


def roc(version: Any) -> float:
    return float(version.tags["test_roc_auc"])
