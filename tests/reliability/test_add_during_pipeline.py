"""Sources changed while research-embed runs (issue 9, case 4): the stage must fail with the
reason (or index them), `research add` must wait for the running pipeline, so that `dvc status`
never claims as indexed what was not. Real `dvc repro` and `semops` processes in a scratch
project with a small corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from projectkit import REPO, clean_env, make_project

PYFAQ = REPO / "samples/research/pyfaq"


def env() -> dict[str, str]:
    """The projects' environment; PYTHONPATH kept (it may point at another checkout)."""
    keep = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    return clean_env(**keep)


def small_corpus(dest: Path, passages: int = 160) -> None:
    """A BEIR folder of `passages` short passages (enough embedding to land a change in)."""
    rows = [json.loads(line) for line in (PYFAQ / "corpus.jsonl").read_text().splitlines()]
    rows = [r for r in rows if len(r["text"]) < 2000][:passages]
    (dest / "qrels").mkdir(parents=True)
    (dest / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (dest / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "What is Python?"}) + "\n")
    (dest / "qrels/test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq\t{rows[0]['_id']}\t1\n")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, dvc_cache: Path) -> Path:
    """A project whose research section reads a small corpus, with one source added."""
    base = tmp_path_factory.mktemp("add-during-pipeline")
    project = make_project(base / "project", dvc_cache)
    small_corpus(project / "corpus")
    (project / "docs/documents").mkdir(parents=True)
    (project / "docs/documents/notes.md").write_text("# Notes\n\nDVC records hashes.\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["research"].update(corpus="corpus", documents="docs")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    models = project / "data/.cache/research/models"
    models.mkdir(parents=True)
    for exported in (REPO / "data/.cache/research/models").glob("*.onnx"):
        shutil.copyfile(exported, models / exported.name)  # else the first stage exports
    note = base / "note.md"
    note.write_text("# A note\n\nAdded before the pipeline ran.\n")
    run(project, "semops", "research", "add", str(note), "--no-build")
    return project


def run(project: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=project, env=env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result


def start_repro(project: Path) -> subprocess.Popen[str]:
    repro = subprocess.Popen(
        ["dvc", "repro", "research-embed"],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    chunks = project / "data/research/chunks.parquet"
    deadline = time.monotonic() + 240
    while not chunks.exists() and repro.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # chunks written: the stage has read the sources, it embeds now
    assert repro.poll() is None, "the stage ended before the test could change its sources"
    return repro


def indexed_text(project: Path) -> str:
    import pandas as pd

    return " ".join(pd.read_parquet(project / "data/research/chunks.parquet")["text"])


def stage_status(project: Path) -> dict[str, object]:
    return json.loads(run(project, "dvc", "status", "--json", "research-embed").stdout or "{}")


def test_a_source_changed_while_the_stage_runs_is_never_recorded_as_indexed(
    prepared: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(prepared, project, symlinks=True)
    repro = start_repro(project)
    (copy,) = (project / "data/raw/research/files").rglob("note.md")
    copy.write_text("# A note\n\nQuokkas, edited by hand while the stage ran.\n")
    assert repro.poll() is None, "the stage ended before the change: the test proves nothing"
    output, _ = repro.communicate(timeout=300)

    print(output[-800:])
    indexed = "Quokkas" in indexed_text(project)
    status = stage_status(project)
    assert indexed or status, f"dvc status claims the edit is indexed:\n{output}"
    if repro.returncode != 0:
        assert "changed while research-embed ran" in output and "note.md" in output, output
        assert "dvc repro" in output and "Traceback" not in output


def test_an_add_blocked_by_the_stage_lands_after_the_pipeline(
    prepared: Path, tmp_path: Path
) -> None:
    """`dvc repro` first: research-embed holds the sources' lock when `research add` starts, so
    the add waits for the lock, gets it when the stage's Python ends (DVC has yet to hash the
    stage's inputs), sees the pipeline still running, lets the lock go and waits for it: the
    source lands after the stage, and `dvc status` reports it as a change, not as indexed."""
    project = tmp_path / "project"
    shutil.copytree(prepared, project, symlinks=True)
    paper = tmp_path / "paper.md"
    paper.write_text("# A paper\n\nWombats, added while the pipeline ran.\n")
    repro = start_repro(project)
    added = run(project, "semops", "research", "add", str(paper), "--no-build")
    output, _ = repro.communicate(timeout=300)
    assert repro.returncode == 0, output
    print(added.stderr)
    locked_at = added.stderr.find("which is changing or indexing")
    waited_at = added.stderr.find("waiting for the running pipeline (dvc, process")
    assert locked_at >= 0, "the add was not blocked by the stage: the test proves nothing"
    assert waited_at > locked_at, added.stderr  # the lock taken, the pipeline seen, waited for
    assert str(paper) in (project / "data/raw/research/sources.json").read_text()
    assert "Wombats" not in indexed_text(project)
    assert stage_status(project), "dvc status claims the added source is indexed"


def test_the_stage_fails_when_any_of_its_input_folders_changes(tmp_path: Path) -> None:
    """Not only the added sources: the document set and the corpus are watched as well."""
    from semops.research.ingest.sources import SourceError, held_unchanged

    root, documents, corpus = tmp_path / "research", tmp_path / "docs", tmp_path / "corpus"
    for folder in (root, documents, corpus):
        folder.mkdir()
    (documents / "notes.md").write_text("# Notes\n")
    (corpus / "corpus.jsonl").write_text("{}\n")
    with held_unchanged(root, "research-embed", [root, documents, corpus]):
        pass  # nothing changed: no error
    with (
        pytest.raises(SourceError, match=r"changed while research-embed ran .*notes\.md"),
        held_unchanged(root, "research-embed", [root, documents, corpus / "corpus.jsonl"]),
    ):
        (documents / "notes.md").write_text("# Notes\n\nEdited while the stage ran.\n")
    with (
        pytest.raises(SourceError, match=r"added .*corpus/more\.jsonl"),
        held_unchanged(root, "research-embed", [root, documents, corpus]),
    ):
        (corpus / "more.jsonl").write_text("{}\n")
