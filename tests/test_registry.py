"""The MLflow Model of each result and the Model Registry, end to end: a small project
(credit_sample, five epochs) trained with each model kind, each result mirrored by the real
track stage into a real sqlite store. tests/test_serving.py serves it, tests/test_tracking.py
reads its run pages."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run
from projectkit import make_project

from semops import paths
from semops.config.schema import parse_section
from semops.tabular import clean
from semops.tabular.featureio import load_features
from semops.tabular.models import predict
from semops.tabular.scoring import PREDICTION, RawScorer

KINDS = ("mlp", "logreg", "gbdt")
DATA = "credit_sample"
MODEL_NAME = f"semops-{DATA}"
TOLERANCE = 1e-6
# A research result as research-eval writes it (the research stages are not run here).
RESEARCH_RESULT = {
    "chunks": 12,
    "documents": 3,
    "method": "hybrid",
    "pyfaq": {"hybrid": {"ndcg_at_10": 0.5, "recall_at_10": 0.75}},
}


def build_results(root: Path) -> tuple[Path, dict[str, Any]]:
    """The project with one tracked result per model kind (in KINDS order), built once per
    session under `root`; each kind's model folder, epoch times and evaluate's test predictions
    (confusion.csv) are kept in root/kinds/."""
    project, done = root / "project", root / "results.json"
    if done.exists():
        return project, json.loads(done.read_text())
    shutil.rmtree(root, ignore_errors=True)  # a build cut off part-way
    make_project(project, root / "dvc-cache")
    reports = project / paths.REPORTS
    reports.mkdir(parents=True, exist_ok=True)
    (project / paths.RESEARCH_METRICS).write_text(json.dumps(RESEARCH_RESULT))
    results = {}
    for kind in KINDS:
        run(["semops", "compose", f"data={DATA}", f"model={kind}", "train.epochs=5"], project)
        first = ("download", "clean", "featurize") if kind == KINDS[0] else ()
        for stage in (*first, "train", "evaluate", "track"):
            run(["python", f"stages/{stage}.py"], project)
        keep = root / "kinds" / kind
        shutil.copytree(project / "data/models/model", keep / "model")
        shutil.copy2(project / paths.TRAIN_TIMES, keep / "train_times.json")
        shutil.copy2(reports / "plots" / "confusion.csv", keep / "confusion.csv")
        metrics = json.loads((reports / "metrics.json").read_text())
        tracked = json.loads((project / paths.TRACKED).read_text())
        results[kind] = {**tracked, "roc_auc": metrics["test"]["roc_auc"]}
    done.write_text(json.dumps(results))
    return project, results


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return build_results(tmp_path_factory.getbasetemp() / "three-results")


@pytest.fixture
def mlflow_of(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A function: the project's store made MLflow's tracking URI (models:/ URIs resolve there),
    returning a client; sys.path as it was after (a loaded model prepends its code folder)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(sys, "path", list(sys.path))

    def use(project: Path) -> Any:
        uri = store_uri(project)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        return MlflowClient(tracking_uri=uri)

    return use


def store_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"


def raw_test_rows(project: Path) -> pd.DataFrame:
    """The raw rows (as downloaded) whose clean split is test, in the order of the clean and
    featurize stages' test split: clean_and_split's steps, keeping the raw index."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    data, split = parse_section("data", params), parse_section("split", params)
    raw = pd.read_parquet(project / "data" / "raw" / data.name / "table.parquet")
    table, _ = clean.clean_table(raw, data)
    keyed = raw[list(data.key)] if data.key else raw
    hashes = clean.row_hash(keyed, split.seed)[table.index]
    codes = clean.assign_splits(hashes, table[data.target].to_numpy(), data.target, split)
    return raw.loc[table.index[codes == 2]]


def evaluate_probabilities(project: Path, model_dir: Path) -> np.ndarray:
    """The evaluate stage's test predictions: the processed test features through the model."""
    x_test, _, _ = load_features(project / "data" / "processed" / "test.parquet")
    classifier, _ = predict.load(model_dir)
    return classifier.predict_proba(x_test)


def versions(client: Any) -> list[Any]:
    found = client.search_model_versions(f"name = '{MODEL_NAME}'")
    return sorted(found, key=lambda v: int(v.version))


def version_of(client: Any, result_id: str) -> Any:
    (version,) = [v for v in versions(client) if v.tags["semops.result_id"] == result_id]
    return version


def copy_project(project: Path, dest: Path) -> Path:
    shutil.copytree(project, dest, symlinks=True)
    return dest


def test_each_result_is_a_version_whose_model_scores_raw_rows_as_evaluate_did(
    results: tuple[Path, dict[str, Any]], mlflow_of: Any
) -> None:
    import mlflow

    project, by_kind = results
    client = mlflow_of(project)
    rows = raw_test_rows(project)
    assert "int64" in set(map(str, rows.dtypes))  # raw rows as downloaded, integers and all
    # evaluate decided at 0.5, the model's own threshold: its test predictions are the model's.
    assert yaml.safe_load((project / "params.yaml").read_text())["evaluate"]["threshold"] == 0.5
    assert len(rows) == len(pd.read_parquet(project / "data/processed/test.parquet"))
    for kind, result in by_kind.items():
        version = version_of(client, result["result_id"])
        assert version.tags["test_roc_auc"] == repr(result["roc_auc"])
        assert version.tags["model"] == kind
        assert f"on data set {DATA}" in version.description and "Git commit" in version.description
        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version.version}")
        flavor = model.metadata.flavors["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # nothing pickled
        scored = model.predict(rows)
        model_dir = project.parent / "kinds" / kind / "model"
        expected = evaluate_probabilities(project, model_dir)
        classes = [c.removeprefix("proba_") for c in scored.columns if c != PREDICTION]
        assert scored[[f"proba_{c}" for c in classes]].to_numpy() == pytest.approx(
            expected, abs=TOLERANCE
        ), kind
        evaluated = pd.read_csv(model_dir.parent / "confusion.csv", dtype=str)  # per test row
        assert list(scored[PREDICTION]) == list(evaluated["predicted"]), kind
        direct = RawScorer.load(model_dir).score(rows)
        assert np.allclose(scored.iloc[:, :-1], direct.iloc[:, :-1], atol=TOLERANCE, rtol=0)


def test_the_model_has_the_raw_signature_and_pinned_requirements(
    results: tuple[Path, dict[str, Any]], mlflow_of: Any, tmp_path: Path
) -> None:
    import importlib.metadata

    import mlflow

    project, _ = results
    mlflow_of(project)
    uri = f"models:/{MODEL_NAME}@champion"
    inputs = {c.name: c.type.name for c in mlflow.models.get_model_info(uri).signature.inputs}
    assert inputs["Age"] == "long" and inputs["Income"] == "double" and inputs["Home"] == "string"
    assert "Status" not in inputs
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert f"numpy=={importlib.metadata.version('numpy')}" in requirements
    assert all("==" in r for r in requirements)
    assert any(r.startswith(("mlflow==", "mlflow-skinny==")) for r in requirements)


# Run with only what the pinned requirements install importable: a third-party module of any
# other distribution raises ModuleNotFoundError, as in a fresh virtualenv (optional imports,
# caught by their importers, are left out as they would be there).
FRESH_ENV_SCORER = """
import importlib.abc, importlib.metadata, json, re, sys

before = set(sys.modules)  # the interpreter's start (a .pth may import setuptools' hack)
allowed = set(json.loads(sys.argv[1]))
owners = importlib.metadata.packages_distributions()
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()


class PinnedOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        dists = {norm(d) for d in owners.get(top, [])}
        if top == "semops" or not dists or dists & allowed:
            return None
        raise ModuleNotFoundError(f"No module named {fullname!r} (not pinned)", name=fullname)


sys.meta_path.insert(0, PinnedOnly())
import pandas as pd

from pathlib import Path

from semops.tabular.scoring import RawScorer

rows = pd.read_parquet(sys.argv[2])
models = json.loads(sys.argv[3])
scored = {kind: RawScorer.load(Path(p)).predict_proba(rows).tolist() for kind, p in models.items()}
new = set(sys.modules) - before
loaded = {norm(d) for m in new for d in owners.get(m.partition(".")[0], [])}
print(json.dumps({"scored": scored, "loaded": sorted(loaded)}))
"""


def installed_closure(names: list[str]) -> set[str]:
    """The distributions (normalised names) that installing `names` installs: they and what
    they require, without extras, as installed here."""
    import importlib.metadata
    import re

    from packaging.requirements import Requirement

    found: set[str] = set()
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in found:
            continue
        found.add(name)
        try:
            required = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:  # not for this platform
            continue
        for spec in map(Requirement, required):
            if spec.marker is None or spec.marker.evaluate({"extra": ""}):
                todo.append(spec.name)
    return found


def test_the_pinned_requirements_are_all_scoring_imports(
    results: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Each model kind scores raw rows in a process where only the pinned requirements (and
    what pip installs with them) can be imported. MLflow's own requirements do not count: the
    scorer must not depend on what the (or a skinny) MLflow happens to bring along."""
    import subprocess

    from semops.tracking.describe import pip_requirements

    project, by_kind = results
    pins = [p.split("==")[0] for p in pip_requirements()]
    allowed = installed_closure([p for p in pins if not p.startswith("mlflow")])
    rows = raw_test_rows(project).head(50)
    rows.to_parquet(tmp_path / "rows.parquet")
    models = {kind: str(project.parent / "kinds" / kind / "model") for kind in by_kind}
    script = [sys.executable, "-c", FRESH_ENV_SCORER, json.dumps(sorted(allowed))]
    done = subprocess.run(
        [*script, str(tmp_path / "rows.parquet"), json.dumps(models)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    for kind, folder in models.items():
        expected = RawScorer.load(Path(folder)).predict_proba(rows)
        assert np.asarray(found["scored"][kind]) == pytest.approx(expected, abs=TOLERANCE), kind
    assert "scikit-learn" in found["loaded"]  # gbdt's compiled tree predictor
    assert set(found["loaded"]) - {"semops"} <= allowed


def test_a_wrong_input_is_an_invalid_parameter_naming_the_column(
    results: tuple[Path, dict[str, Any]], mlflow_of: Any
) -> None:
    """Past MLflow's own schema checks, the model's: an InputError becomes
    INVALID_PARAMETER_VALUE (a scoring server's 400), naming the column."""
    import mlflow
    from mlflow.exceptions import MlflowException

    project, _ = results
    mlflow_of(project)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").unwrap_python_model()
    rows = raw_test_rows(project).head(3)
    with pytest.raises(MlflowException) as missing:
        model.predict(None, rows.drop(columns=["Income"]))
    assert missing.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "'Income'" in missing.value.message
    wrong = rows.astype({"Age": object})
    wrong.at[wrong.index[1], "Age"] = "thirty"
    with pytest.raises(MlflowException) as typed:
        model.predict(None, wrong)
    assert "'Age'" in typed.value.message and "thirty" in typed.value.message


def test_champion_is_the_best_test_roc_auc_and_latest_the_newest(
    results: tuple[Path, dict[str, Any]], mlflow_of: Any
) -> None:
    import mlflow

    project, by_kind = results
    client = mlflow_of(project)
    found = versions(client)
    assert [v.tags["model"] for v in found] == list(KINDS)
    best = max(by_kind.values(), key=lambda r: r["roc_auc"])  # max: the first of equals
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["semops.result_id"] == best["result_id"]
    newest = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/latest")
    assert f"models:/{newest.model_id}" == found[-1].source


def test_champion_ties_go_to_the_older_version() -> None:
    from semops.tracking.registry import choose_aliases

    def version(number: int, roc: str | None) -> Any:
        return SimpleNamespace(
            version=str(number), tags={} if roc is None else {"test_roc_auc": roc}
        )

    candidates = [version(1, "0.8"), version(2, "0.9"), version(3, "0.9"), version(4, None)]
    assert choose_aliases(candidates) == {"champion": "2"}
    assert choose_aliases([version(1, None)]) == {}


def test_logging_a_result_again_adds_no_run_and_no_version(
    results: tuple[Path, dict[str, Any]], mlflow_of: Any, tmp_path: Path
) -> None:
    project = copy_project(results[0], tmp_path / "project")
    client = mlflow_of(project)
    before = [v.version for v in versions(client)]
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = lambda: len(client.search_runs(experiments, max_results=1000))  # noqa: E731
    logged = runs()
    (project / paths.TRACKED).unlink()  # the research result is spooled again too
    again = run(["python", "stages/track.py"], project).stdout
    assert "tabular result" in again and "already logged as run" in again
    assert "research result" in again and "logged as new run" not in again
    assert [v.version for v in versions(client)] == before and runs() == logged
    assert "0 pending result(s)" in run(["semops", "mirror"], project).stdout


def dead_uri() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def pending_tabular(project: Path) -> Path:
    """The tabular result the track stage kept pending; its research result is kept with it:
    logged to another store, it is still to be logged to the one out of reach."""
    tracked = json.loads((project / paths.TRACKED).read_text())
    pending = sorted((project / "mlruns/pending").iterdir())
    assert [p.name for p in pending] == sorted(
        [tracked["result_id"], tracked["research_result_id"]]
    )
    return project / "mlruns/pending" / tracked["result_id"]


def test_a_pending_result_is_registered_once_when_mirrored(
    results: tuple[Path, dict[str, Any]], mlflow_of: Any, tmp_path: Path
) -> None:
    project = copy_project(results[0], tmp_path / "project")
    client = mlflow_of(project)
    before = versions(client)
    run(["semops", "compose", f"data={DATA}", "model=gbdt", "evaluate.threshold=0.3"], project)
    run(["python", "stages/evaluate.py"], project)
    offline = run(["python", "stages/track.py"], project, MLFLOW_TRACKING_URI=dead_uri())
    assert "could not be reached" in offline.stdout
    pending = pending_tabular(project)
    assert len(versions(client)) == len(before)

    assert "2 pending result(s) mirrored" in run(["semops", "mirror"], project).stdout
    after = versions(client)
    assert len(after) == len(before) + 1
    assert after[-1].tags["semops.result_id"] == pending.name
    assert "0 pending result(s)" in run(["semops", "mirror"], project).stdout
    run(["python", "stages/track.py"], project)
    assert len(versions(client)) == len(after)


def test_a_queued_experiment_registers_into_the_main_store(
    results: tuple[Path, dict[str, Any]], mlflow_of: Any, tmp_path: Path
) -> None:
    """DVC runs a queued experiment in a copy of the repository, DVC_ROOT naming the main one."""
    main = copy_project(results[0], tmp_path / "main")
    worker = tmp_path / "exps" / "tmp1234"
    shutil.copytree(main, worker, symlinks=True, ignore=shutil.ignore_patterns("mlruns"))
    client = mlflow_of(main)
    before = len(versions(client))
    head = run(["git", "rev-parse", "HEAD"], main).stdout.strip()
    run(["semops", "compose", f"data={DATA}", "model=logreg", "evaluate.threshold=0.4"], worker)
    for stage in ("train", "evaluate", "track"):
        run(
            ["python", f"stages/{stage}.py"],
            worker,
            DVC_ROOT=str(main),
            DVC_EXP_NAME="queued-exp",
            DVC_EXP_BASELINE_REV=head,
        )
    found = versions(client)
    assert len(found) == before + 1
    assert found[-1].tags["dvc_experiment"] == "queued-exp"
    assert found[-1].tags["git_commit"] == head
    assert not (worker / "mlruns").exists()
    assert not [p for p in (main / "mlruns/pending").iterdir() if not p.name.startswith(".")]


def test_dvc_lists_the_model_as_a_registry_artifact(results: tuple[Path, dict[str, Any]]) -> None:
    """dvc.yaml's `artifacts:` (what `dvc artifacts get` and the VS Code extension read)."""
    from dvc.repo import Repo

    with Repo(str(results[0])) as repo:
        artifacts = repo.artifacts.read()["dvc.yaml"]
    model = artifacts["tabular-classifier"]
    assert (model.type, model.path) == ("model", "data/models/model")
    assert model.desc and model.labels


@pytest.mark.parametrize(
    ("message", "code", "lost"),
    [
        # PostgreSQL behind a server: two processes inserting the alias at once.
        (
            "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "
            '"registered_model_alias_pk"',
            "BAD_REQUEST",
            True,
        ),
        ("UNIQUE constraint failed: registered_model_aliases.alias", "BAD_REQUEST", True),
        ("Registered Model Version 3 not found", "RESOURCE_DOES_NOT_EXIST", True),
        ('duplicate key value violates unique constraint "runs_pk"', "BAD_REQUEST", False),
        ("Invalid alias name", "INVALID_PARAMETER_VALUE", False),
    ],
)
def test_an_alias_moved_by_another_process_at_once_is_looked_at_again(
    message: str, code: str, lost: bool
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from semops.tracking.registry import _lost_race

    exc = MlflowException(message, error_code=getattr(databricks_pb2, code))
    assert _lost_race(exc) is lost


def test_a_data_set_inserted_by_another_process_at_once_is_linked_again() -> None:
    from mlflow.exceptions import MlflowException

    from semops.tracking.runlog import inserted_meanwhile

    collided = MlflowException(
        "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"dataset_pk" DETAIL: Key (experiment_id, name, digest)'
    )
    assert inserted_meanwhile(collided, "dataset")
    assert not inserted_meanwhile(collided, "registered_model_alias")
    assert not inserted_meanwhile(MlflowException("dataset schema too large"), "dataset")
