"""The last pipeline run of an event file as a graph: its jobs in the order they started, each
with the datasets it read and wrote (`semops lineage`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from semops.errors import SemopsError

FINAL = ("COMPLETE", "FAIL", "ABORT")


@dataclass
class JobRun:
    job: str
    run_id: str
    state: str
    started: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


def parent_of(event: dict[str, Any]) -> str | None:
    parent = (event.get("run", {}).get("facets") or {}).get("parent")
    return parent["run"]["runId"] if parent else None


def last_run(events: list[dict[str, Any]]) -> tuple[str | None, list[JobRun]]:
    """The pipeline run of the last event (its parent run id; None for a stage run by hand, then
    that one run alone) and its job runs, in the order they started."""
    if not events:
        raise SemopsError("the event file holds no events")
    parent = parent_of(events[-1])
    last_id = events[-1]["run"]["runId"]
    runs: dict[str, JobRun] = {}
    for event in events:
        run_id = event["run"]["runId"]
        if not (parent_of(event) == parent if parent else run_id == last_id):
            continue
        run = runs.setdefault(
            run_id, JobRun(event["job"]["name"], run_id, "START", event["eventTime"])
        )
        if run.state in FINAL and event.get("eventType") not in FINAL:
            continue  # an event after the final one (OTHER) keeps the run's outcome
        run.state = event.get("eventType", run.state)
        run.inputs = event.get("inputs") or run.inputs
        run.outputs = event.get("outputs") or run.outputs
    return parent, sorted(runs.values(), key=lambda r: r.started)


def describe(dataset: dict[str, Any], side: str) -> str:
    """A dataset's name, version, rows and columns; `side`: input or output."""
    facets = dataset.get("facets") or {}
    parts = [dataset["name"]]
    if "version" in facets:
        parts.append(f"md5 {facets['version']['datasetVersion']}")
    stats = (dataset.get(f"{side}Facets") or {}).get(f"{side}Statistics") or {}
    if stats.get("rowCount") is not None:
        parts.append(f"{stats['rowCount']:,} rows")
    if "schema" in facets:
        parts.append(f"{len(facets['schema'].get('fields') or [])} columns")
    return "  ".join(parts)


def render(events: list[dict[str, Any]], source: str) -> list[str]:
    """Lines: the pipeline run, then each job run as its inputs -> job -> outputs."""
    parent, runs = last_run(events)
    datasets = {d["name"] for r in runs for d in r.inputs + r.outputs}
    head = f"pipeline run {parent}" if parent else "a stage run by hand (no pipeline run)"
    lines = [f"{head}: {len(runs)} job(s), {len(datasets)} dataset(s), from {source}"]
    for run in runs:
        lines.append("")
        lines.extend(f"  {describe(d, 'input')}" for d in run.inputs)
        lines.append(f"    -> {run.job} [{run.state}, run {run.run_id}] ->")
        lines.extend(f"  {describe(d, 'output')}" for d in run.outputs)
    return lines
