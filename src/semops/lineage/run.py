"""One stage run as OpenLineage sees it: a START event before the stage, COMPLETE or FAIL after,
for the job of the stage's name, as a child of the pipeline run (the `dvc repro` or `dvc exp run`
process that started it), with the datasets it reads and writes.

Lineage observes and never decides: nothing here changes what a stage writes, and whatever
fails here (DVC's view of the stage, the transport) is one warning; the stage's result stands."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attr
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    error_message_run,
    job_type_job,
    parent_run,
    source_code_location_job,
    tags_run,
)
from openlineage.client.transport.noop import NoopTransport
from openlineage.client.uuid import generate_new_uuid

from semops import paths
from semops.lineage import datasets, transport
from semops.redaction import redact
from semops.tabular.models import torchrun
from semops.tracking import processes

log = logging.getLogger(__name__)

NAMESPACE_VARIABLE = "OPENLINEAGE_NAMESPACE"  # what OpenLineage's integrations read
DEFAULT_NAMESPACE = "semops"
PARENT_JOB = "pipeline"
PRODUCER = "urn:semops:stage"
METRICS_FACET = "semops_metrics"
METRICS_SCHEMA = "urn:semops:lineage:facets:1-0-0:StageMetricsRunFacet"


@attr.define
class StageMetricsRunFacet(RunFacet):
    """The stage's DVC metrics files, by path (its schema: tests/data/openlineage/)."""

    files: dict[str, Any]

    @staticmethod
    def _get_schema() -> str:
        return f"{METRICS_SCHEMA}#/$defs/StageMetricsRunFacet"


def job_namespace() -> str:
    return os.environ.get(NAMESPACE_VARIABLE) or DEFAULT_NAMESPACE


def stage_name() -> str:
    """The stage DVC runs (DVC_STAGE), else the one whose script this is, by dvc.yaml's naming
    (stages/research_embed.py is research-embed)."""
    return os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem.replace("_", "-")


@contextlib.contextmanager
def observed(stage: str) -> Iterator[None]:
    """START before the block, COMPLETE after it, FAIL (with the error) when it raises, or exits
    with a status other than 0. torchrun's workers emit nothing: the stage process that started
    torchrun reports the run."""
    if torchrun.is_worker():
        yield
        return
    with contextlib.ExitStack() as stack:
        lineage = StageRun(stage, stack)
        lineage.start()
        try:
            yield
        except BaseException as exc:
            failed = not (isinstance(exc, SystemExit) and exc.code in (0, None))
            lineage.finish(exc if failed else None)
            raise
        lineage.finish(None)


class StageRun:
    def __init__(self, stage: str, stack: contextlib.ExitStack) -> None:
        self.job = stage
        self.run_id = str(generate_new_uuid())
        self.stack = stack
        self.client: Any = None
        self.dvc_stage: Any = None
        self.warned = False
        self.job_facets: dict[str, Any] = {}
        self.run_facets: dict[str, Any] = {}

    def warn(self, what: str, exc: BaseException) -> None:
        if not self.warned:
            self.warned = True
            log.warning(
                "lineage: %s failed (%s); the stage goes on, without lineage events",
                what,
                redact(f"{type(exc).__name__}: {exc}"),
            )

    def start(self) -> None:
        try:
            self.client = transport.client()
            if self.client.transport.kind == NoopTransport.kind:  # OPENLINEAGE_DISABLED
                self.client = None
                return
            self.job_facets = job_facets()
            self.run_facets = run_facets()
        except Exception as exc:  # a broken openlineage.yml, say: the stage runs all the same
            self.warn("the OpenLineage transport", exc)
            return
        try:
            self.dvc_stage = self.stack.enter_context(datasets.dvc_stage(self.job))
            inputs = datasets.inputs(self.dvc_stage)
        except Exception as exc:
            self.warn(f"reading stage {self.job!r} of dvc.yaml", exc)
            inputs = []
        self.emit(RunState.START, dict(self.run_facets), inputs=inputs)

    def finish(self, error: BaseException | None) -> None:
        if self.client is None:
            return
        facets = dict(self.run_facets)
        inputs: list[Any] = []
        outputs: list[Any] = []
        try:
            if self.dvc_stage is not None:
                inputs = datasets.inputs(self.dvc_stage)
                if error is None:
                    outputs = datasets.outputs(self.dvc_stage)
                    if found := datasets.metrics(self.dvc_stage):
                        facets[METRICS_FACET] = StageMetricsRunFacet(files=found)
        except Exception as exc:
            self.warn(f"the datasets of stage {self.job!r}", exc)
        if error is not None:
            facets["errorMessage"] = error_facet(error)
        state = RunState.COMPLETE if error is None else RunState.FAIL
        self.emit(state, facets, inputs=inputs, outputs=outputs)

    def emit(self, state: RunState, facets: dict[str, Any], **datasets_: list[Any]) -> None:
        if self.client is None:
            return
        event = RunEvent(
            eventType=state,
            eventTime=datetime.datetime.now(datetime.UTC).isoformat(),
            run=Run(runId=self.run_id, facets=facets),
            job=Job(namespace=job_namespace(), name=self.job, facets=self.job_facets),
            producer=PRODUCER,
            **datasets_,
        )
        try:
            self.client.emit(event)
        except Exception as exc:
            self.warn(f"sending the {state.value} event", exc)
            self.client = None  # a transport that failed once is not waited for again


def run_facets() -> dict[str, Any]:
    facets: dict[str, Any] = {}
    parent = pipeline_run()
    if parent is not None:
        facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent),
            job=parent_run.Job(namespace=job_namespace(), name=PARENT_JOB),
        )
    tags = [
        tags_run.TagsRunFacetFields(key, os.environ[name], "SEMOPS")
        for key, name in (
            ("dvc_experiment", "DVC_EXP_NAME"),
            ("dvc_baseline", "DVC_EXP_BASELINE_REV"),
        )
        if os.environ.get(name)
    ]
    if tags:
        facets["tags"] = tags_run.TagsRunFacet(tags=tags)
    return facets


def pipeline_run() -> str | None:
    """The run id of the pipeline run this stage belongs to: the nearest `dvc` process above
    this one (`dvc repro`, or the process of one `dvc exp run` experiment, queued ones too),
    named by the boot, its process id and its start time, which every stage it starts sees
    alike and no later process shares. None for a stage run by hand."""
    pid = os.getppid()
    while pid > 1:
        fields = processes.stat_fields(pid)
        if fields is None:
            return None
        if is_dvc(pid):
            key = f"{processes.boot_id()}/{pid}/{fields[19]}"
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PRODUCER}/{key}"))
        pid = int(fields[1])
    return None


def is_dvc(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(arg.decode(errors="replace")).name == "dvc" for arg in argv[:3])


def job_facets() -> dict[str, Any]:
    facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DVC", jobType="STAGE"
        )
    }
    commit = git("rev-parse", "HEAD")
    if commit:
        remote = git("config", "--get", "remote.origin.url")
        here = f"file://{socket.gethostname()}{paths.project_root()}"
        facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git",
            url=redact(remote) if remote else here,
            repoUrl=redact(remote) if remote else here,
            version=commit,
            path=str(Path(sys.argv[0]).as_posix()),
        )
    return facets


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def error_facet(error: BaseException) -> Any:
    """What failed, redacted (an API error may quote the key it refused)."""
    if isinstance(error, SystemExit):
        message = f"the stage exited with status {error.code}"
    else:
        message = f"{type(error).__name__}: {error}"
    return error_message_run.ErrorMessageRunFacet(
        message=redact(message),
        programmingLanguage="python",
        stackTrace=redact("".join(traceback.format_exception(error))),
    )
