"""End to end: the real pipeline under real DVC, Hydra and MLflow, in temporary git repos."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import yaml
from conftest import run

from semops import paths
from semops.config.schema import flatten
from semops.tracking.mirror import RESULT_TAG

STAGES = ("download", "clean", "featurize", "train", "evaluate", "track")


def dvc_metrics(project: Path) -> dict[str, float]:
    """DVC's own view of the metrics, keyed the way the track stage names them in MLflow."""
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = shown[""]["data"] if "" in shown else next(iter(shown.values()))["data"]
    metrics: dict[str, float] = {}
    for path, content in files.items():
        stem = Path(path).stem
        prefix = "" if stem == "metrics" else f"{stem}."
        metrics.update(
            {
                k: v
                for k, v in flatten(content["data"], prefix).items()
                if isinstance(v, int | float)
            }
        )
    return metrics


def tabular(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a tabular run holds: research.json's go to the research run."""
    return {k: v for k, v in metrics.items() if not k.startswith("research.")}


def mlflow_runs(project: Path, experiment_name: str = "semops") -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=1000)


def experiments(project: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json`: each experiment's name and data (params, metrics)."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            found[rev["name"]] = rev["data"]
    return found


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def test_repro_from_scratch_runs_every_stage_and_mirrors_to_mlflow(built_project: Path) -> None:
    log = (built_project / "first-repro.log").read_text()
    # The metrics and plots are committed (reports/, as in any clone): the model trained anew is
    # bit-identical, so evaluate finds its outputs up to date. track runs: this clone's MLflow
    # has no result yet (its record, data/reports/mlflow.json, comes only with `dvc pull`).
    assert ran_stages(log) == ["download", "clean", "featurize", "train", "track"]
    assert "Stage 'evaluate' didn't change, skipping" in log
    # Training shows its progress in DVC's captured output: a line every ten epochs.
    assert re.search(r"train: epoch 10/200  train_loss \d\.\d{4}  val_loss \d\.\d{4}", log)
    # Byte-identical outputs: a run from scratch reproduces every hash of the committed dvc.lock.
    assert run(["git", "diff", "--stat", "dvc.lock"], built_project).stdout == ""
    metrics = dvc_metrics(built_project)
    assert metrics["test.roc_auc"] > 0.8
    runs = mlflow_runs(built_project)
    assert len(runs) == 1
    logged = runs[0].data.metrics
    assert {k: logged[k] for k in tabular(metrics)} == tabular(metrics)
    assert not any(k.startswith("research") for k in [*logged, *runs[0].data.params])
    research_runs = mlflow_runs(built_project, "semops-research")
    assert len(research_runs) == 1
    research_metrics = {k: v for k, v in metrics.items() if k not in tabular(metrics)}
    assert {k: research_runs[0].data.metrics[k] for k in research_metrics} == research_metrics
    head = run(["git", "rev-parse", "HEAD"], built_project).stdout.strip()
    manifest = json.loads((built_project / "data/raw/credit/manifest.json").read_text())
    assert runs[0].data.tags["git_commit"] == head
    assert runs[0].data.tags["data_sha256"] == manifest["sha256"]
    assert runs[0].data.params["model.lr"] == "0.002"
    history = (built_project / "reports/train_history.csv").read_text().splitlines()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{built_project / 'mlruns' / 'mlflow.db'}")
    assert len(client.get_metric_history(runs[0].info.run_id, "val_loss")) == len(history) - 1
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "plots")}
    assert {"plots/roc.png", "plots/confusion.png", "plots/history.png"} <= artifacts
    # The run's MLflow Model, registered as the data set's champion, scores raw rows.
    [output] = runs[0].outputs.model_outputs
    champion = client.get_model_version_by_alias("semops-credit", "champion")
    assert champion.run_id == runs[0].info.run_id
    assert champion.source == f"models:/{output.model_id}"


def test_second_repro_does_no_work_and_adds_no_run(project_copy: Path) -> None:
    before = len(mlflow_runs(project_copy))
    result = run(["make", "repro"], project_copy)
    assert ran_stages(result.stdout) == []
    assert "Data and pipelines are up to date" in result.stdout
    assert len(mlflow_runs(project_copy)) == before


def test_exp_run_switches_model_and_params_match_our_composition(project_copy: Path) -> None:
    run(["semops", "compose", "model=logreg"], project_copy)
    ours = (project_copy / "params.yaml").read_text()
    run(["git", "checkout", "params.yaml"], project_copy)
    result = run(["dvc", "exp", "run", "-S", "model=logreg"], project_copy)
    assert (project_copy / "params.yaml").read_text() == ours  # DVC's composition == ours
    assert ran_stages(result.stdout) == ["train", "evaluate", "track"]
    ((name, data),) = experiments(project_copy).items()
    exp_metrics = data["metrics"]["reports/metrics.json"]["data"]
    runs = {r.data.tags["dvc_experiment"]: r for r in mlflow_runs(project_copy)}
    logged = runs[name]
    assert logged.data.tags["model"] == "logreg"
    assert {k: logged.data.metrics[k] for k in flatten(exp_metrics["test"], "test.")} == flatten(
        exp_metrics["test"], "test."
    )


def test_queued_sweep_logs_each_experiment_into_the_main_store(project_copy: Path) -> None:
    before = {r.info.run_id for r in mlflow_runs(project_copy)}
    run(
        ["dvc", "exp", "run", "--queue", "-S", "model=logreg", "-S", "model.C=0.1,10"], project_copy
    )
    run(["dvc", "exp", "run", "--run-all"], project_copy)
    new = [r for r in mlflow_runs(project_copy) if r.info.run_id not in before]
    assert sorted(float(r.data.params["model.C"]) for r in new) == [0.1, 10.0]
    assert {r.data.tags["dvc_experiment"] for r in new} == set(experiments(project_copy))
    assert not list((project_copy / ".dvc" / "tmp" / "exps").glob("**/mlflow.db"))


def test_conf_edit_is_picked_up_by_make_repro(project_copy: Path) -> None:
    conf = project_copy / "conf/model/mlp.yaml"
    conf.write_text(conf.read_text().replace("lr: 0.002", "lr: 0.003"))
    result = run(["make", "repro"], project_copy)
    assert yaml.safe_load((project_copy / "params.yaml").read_text())["model"]["lr"] == 0.003
    assert ran_stages(result.stdout) == ["train", "evaluate", "track"]


def test_retrieval_settings_rerun_only_the_research_evaluation(project_copy: Path) -> None:
    conf = project_copy / "conf/config.yaml"
    weight = "dense_weight: 0.8"
    conf.write_text(conf.read_text().replace(weight, "dense_weight: 0.7", 1))
    run(["make", "params"], project_copy)
    changed = json.loads(run(["dvc", "status", "--json"], project_copy).stdout)
    assert sorted(changed) == ["research-eval", "track"]


def test_unreachable_mlflow_keeps_results_and_mirror_logs_them_later(project_copy: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    before = len(mlflow_runs(project_copy))
    run(["semops", "compose", "evaluate.threshold=0.4"], project_copy)
    result = run(
        ["dvc", "repro"], project_copy, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{dead_port}"
    )
    assert "could not be reached" in result.stdout
    assert ran_stages(result.stdout) == ["evaluate", "track"]
    # The tabular result, and the research result too: logged to the sqlite store before, it is
    # still to be logged to this one.
    tracked = json.loads((project_copy / paths.TRACKED).read_text())
    pending = sorted(p.name for p in (project_copy / "mlruns/pending").iterdir())
    assert pending == sorted([tracked["result_id"], tracked["research_result_id"]])
    assert len(mlflow_runs(project_copy)) == before

    mirrored = run(["semops", "mirror"], project_copy)
    assert "2 pending result(s) mirrored" in mirrored.stdout
    assert not list((project_copy / "mlruns/pending").iterdir())
    runs = mlflow_runs(project_copy)
    assert len(runs) == before + 1
    newest = next(r for r in runs if r.data.tags[RESULT_TAG] == tracked["result_id"])
    metrics = tabular(dvc_metrics(project_copy))
    assert {k: newest.data.metrics[k] for k in metrics} == metrics
    assert "0 pending result(s)" in run(["semops", "mirror"], project_copy).stdout
