"""Lineage: every stage's OpenLineage events (START, COMPLETE or FAIL) valid against the
OpenLineage schema, as children of one pipeline run, with DVC's md5 of each dataset; the HTTP
transport reaching a Marquez-compatible server; a transport that fails leaving the stage's result
as it is; the event file shared by writers at once; `semops lineage`; the Marquez compose file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from conftest import run
from lineagekit import lineage_server, validate
from projectkit import BIN, REPO, clean_env

from semops.lineage.transport import read_events

EVENTS = Path("data/lineage/events.jsonl")


def events_of(project: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (project / EVENTS).read_text().splitlines()]


def lock_md5(project: Path) -> dict[str, str]:
    """Each path's md5 in dvc.lock (deps and outs of every stage)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {
        item["path"]: item["md5"]
        for stage in lock.values()
        for item in stage.get("deps", []) + stage.get("outs", [])
    }


def versions(datasets: list[dict[str, Any]]) -> dict[str, str]:
    return {d["name"]: d["facets"]["version"]["datasetVersion"] for d in datasets}


def ran_stages(project: Path) -> list[str]:
    """The stages the fixture's `make repro` ran (DVC skips those whose outputs are up to date:
    they run no code, and send no event)."""
    log = (project / "first-repro.log").read_text()
    ran = [
        s
        for s in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
        if f"Running stage '{s}'" in log
    ]
    assert "clean" in ran
    return ran


def parent(event: dict[str, Any]) -> str:
    return str(event["run"]["facets"]["parent"]["run"]["runId"])


def test_pipeline_run_events_are_valid_children_of_one_run_with_dvc_md5s(
    built_project: Path,
) -> None:
    """The events of the fixture's `make repro` (the default transport: the event file; later
    tests may add runs of their own after them)."""
    every = events_of(built_project)
    assert {i: errors for i, e in enumerate(every) if (errors := validate(e))} == {}
    events = [e for e in every if "parent" in e["run"]["facets"]]
    events = [e for e in events if parent(e) == parent(events[0])]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        runs[event["job"]["name"]].append(event)
    assert sorted(runs) == sorted(ran_stages(built_project))
    for job, job_events in runs.items():
        assert [e["eventType"] for e in job_events] == ["START", "COMPLETE"], job
        assert len({e["run"]["runId"] for e in job_events}) == 1, job
        assert job_events[0]["job"]["facets"]["sourceCodeLocation"]["type"] == "git"

    lock = lock_md5(built_project)
    lock_stages = yaml.safe_load((built_project / "dvc.lock").read_text())["stages"]
    for job, (_, complete) in runs.items():
        outs = versions(complete["outputs"])
        assert outs == {o["path"]: o["md5"] for o in lock_stages[job].get("outs", [])}, job
        inputs = versions(complete["inputs"])
        assert inputs == {path: lock[path] for path in inputs}, job
        assert not any(name.endswith(".py") for name in inputs), job

    clean = runs["clean"][1]
    report = json.loads((built_project / "reports/clean.json").read_text())
    assert clean["run"]["facets"]["semops_metrics"]["files"]["reports/clean.json"] == report
    raw = clean["inputs"][0]["inputFacets"]
    assert raw["inputStatistics"]["rowCount"] == report["rows"]["raw"]
    assert raw["dataQualityMetrics"]["rowCount"] == report["rows"]["raw"]
    split_rows = {
        o["name"]: o["outputFacets"]["outputStatistics"]["rowCount"]
        for o in clean["outputs"]
        if o["name"].endswith(".parquet")
    }
    assert split_rows == {f"data/interim/{k}.parquet": v for k, v in report["split"].items()}
    assert {f["name"] for f in clean["outputs"][0]["facets"]["schema"]["fields"]} >= {
        report_column for report_column in report["set_missing"]["impossible"]
    }


def test_semops_lineage_prints_the_last_runs_graph(built_project: Path) -> None:
    shown = run([str(BIN / "semops"), "lineage"], built_project).stdout
    lock = lock_md5(built_project)
    assert shown.startswith("pipeline run ")
    for stage in ran_stages(built_project):
        assert f"-> {stage} [COMPLETE, run " in shown
    assert f"data/raw/credit  md5 {lock['data/raw/credit']}  4,454 rows" in shown
    lines = shown.splitlines()
    at = lines.index(next(line for line in lines if "-> clean [" in line))
    assert lines[at - 1].strip().startswith("data/raw/credit")  # input, above the job
    assert lines[at + 1].strip().startswith("data/interim/")  # outputs below it


def test_http_transport_reaches_marquez_and_failures_leave_the_stage_alone(
    project_copy: Path,
) -> None:
    """A real stage run under dvc with OPENLINEAGE_URL: valid events on the Marquez-compatible
    server, dvc.lock unchanged; a failing stage sends FAIL with its error and no secret; an
    endpoint that refuses is one warning and the stage's result stands."""
    secret = "sk-lineage-test-not-a-real-key-0123456789"
    lock = (project_copy / "dvc.lock").read_bytes()
    with lineage_server() as server:
        url = {"OPENLINEAGE_URL": server.url, "OPENLINEAGE_DISABLED": "false"}
        run([str(BIN / "dvc"), "repro", "--force", "-s", "clean"], project_copy, True, 600, **url)
        assert (project_copy / "dvc.lock").read_bytes() == lock
        assert server.rejected == []
        start, complete = server.events
        assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
        assert start["run"]["facets"]["parent"] == complete["run"]["facets"]["parent"]
        assert versions(complete["outputs"]).items() <= lock_md5(project_copy).items()

        params = project_copy / "params.yaml"
        # A key pasted where a column name goes: the error quotes it, the event must not.
        params.write_text(params.read_text().replace("target: Status", f"target: {secret}"))
        failed = run([sys.executable, "stages/clean.py"], project_copy, False, 600, **url)
        assert failed.returncode == 1
        assert server.rejected == []
        assert [e["eventType"] for e in server.events[2:]] == ["START", "FAIL"]
        error = server.events[3]["run"]["facets"]["errorMessage"]
        assert "sk-[redacted]" in error["message"] and "sk-[redacted]" in error["stackTrace"]
        assert error["programmingLanguage"] == "python"
        assert not any(secret.encode() in body for body in server.bodies)

        refused = run(
            [sys.executable, "stages/download.py"],
            project_copy,
            True,
            600,
            **url,
            OPENLINEAGE_ENDPOINT="api/v1/no-such-endpoint",
        )
        assert refused.stderr.count("lineage:") == 1, refused.stderr
        assert "the stage goes on" in refused.stderr
        assert len(server.events) == 4  # nothing more arrived


WRITER = """
import sys, time
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from semops.lineage.transport import EventFileConfig, EventFileTransport
transport = EventFileTransport(EventFileConfig(path=sys.argv[1]))
while time.time() < float(sys.argv[3]):
    pass
for i in range(int(sys.argv[4])):
    transport.emit(RunEvent(eventType=RunState.OTHER, eventTime="2026-01-01T00:00:00Z",
        run=Run(runId="01a242a8-aa8e-7c0d-85fa-4ca42e2443f3"),
        job=Job(namespace=sys.argv[2], name=f"event-{i:04d}" + "x" * 5000)))
"""


def test_two_writers_at_once_lose_no_event_and_a_reader_sees_whole_ones(tmp_path: Path) -> None:
    import time

    path, count = tmp_path / "events.jsonl", 200
    go = str(time.time() + 1.5)  # both start appending at the same moment
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, go, str(count)], env=clean_env()
        )
        for name in ("a", "b")
    ]
    # `semops lineage` beside running stages: whatever it reads is whole events.
    while any(w.poll() is None for w in writers):
        if path.exists():
            assert all(e["eventType"] == "OTHER" for e in read_events(path))
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    events = read_events(path)
    got = sorted((e["job"]["namespace"], e["job"]["name"][:10]) for e in events)
    assert got == sorted((n, f"event-{i:04d}") for n in ("a", "b") for i in range(count))


def test_marquez_compose_file_starts_api_web_and_postgres() -> None:
    """Docker is not here to run it: the file parses, and wires the three services together."""
    folder = REPO / "docker" / "marquez"
    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    services = compose["services"]
    assert services["api"]["image"].startswith("marquezproject/marquez:")
    assert services["web"]["image"].startswith("marquezproject/marquez-web:")
    assert services["db"]["image"].startswith("postgres:")
    assert services["web"]["environment"]["MARQUEZ_HOST"] == "api"
    mount, target, _ = services["api"]["volumes"][0].split(":")
    assert services["api"]["environment"]["MARQUEZ_CONFIG"] == target
    config = yaml.safe_load((folder / mount).read_text())
    assert (
        config["db"]["url"]
        == f"jdbc:postgresql://db:5432/{services['db']['environment']['POSTGRES_DB']}"
    )
    assert config["db"]["user"] == services["db"]["environment"]["POSTGRES_USER"]
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
