"""The research-embed stage and the `semops research` commands end to end, on a small slice of
the evaluation set (real Docling, onnxruntime, Qdrant engine), in a scratch project."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from projectkit import REPO, clean_env
from stagekit import DEFAULT_PARAMS, run_stage

PYFAQ = REPO / "samples/research/pyfaq"
MIXED = REPO / "samples/research/mixed"


def small_beir(dest: Path, queries: int = 12, distractors: int = 40) -> Path:
    """The first `queries` questions of the evaluation set with their answers, and distractors."""
    qrels = (PYFAQ / "qrels/test.tsv").read_text().splitlines()[1 : queries + 1]
    wanted = {line.split("\t")[1] for line in qrels}
    query_ids = {line.split("\t")[0] for line in qrels}
    corpus = [json.loads(line) for line in (PYFAQ / "corpus.jsonl").read_text().splitlines()]
    others = [p for p in corpus if p["_id"] not in wanted and len(p["text"]) < 3000][:distractors]
    (dest / "qrels").mkdir(parents=True)
    (dest / "corpus.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in corpus if p["_id"] in wanted)
        + "".join(json.dumps(p) + "\n" for p in others)
    )
    (dest / "queries.jsonl").write_text(
        "".join(
            line + "\n"
            for line in (PYFAQ / "queries.jsonl").read_text().splitlines()
            if json.loads(line)["_id"] in query_ids
        )
    )
    (dest / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return dest


def small_documents(dest: Path) -> Path:
    """A document set: a PDF without an outline and an HTML page, three queries judged by page
    (the PDF) and by section (the HTML)."""
    (dest / "documents").mkdir(parents=True)
    for name in ("qdrant-hnsw-notes.pdf", "dvc-pipelines.html"):
        (dest / "documents" / name).write_bytes((MIXED / name).read_bytes())
    queries = {
        "hnsw": "What does HNSW stand for?",
        "exact": "How does search work without an index?",
        "lock": "Where does DVC record the hashes of a pipeline's outputs?",
    }
    (dest / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    (dest / "qrels").mkdir()
    (dest / "qrels/test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        "hnsw\tqdrant-hnsw-notes.pdf#page=2\t1\n"
        "exact\tqdrant-hnsw-notes.pdf#page=1\t1\n"
        "lock\tdvc-pipelines.html#The lock file\t1\n"
    )
    return dest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exported ONNX model for every scratch project of the session."""
    return tmp_path_factory.mktemp("research-models")


def scratch(tmp_path: Path, model_cache: Path, **research: Any) -> Path:
    workdir = tmp_path / "project"
    (workdir / "data/raw/research").mkdir(parents=True)
    (workdir / "data/.cache/research").mkdir(parents=True)
    (workdir / "data/.cache/research/models").symlink_to(model_cache)
    corpus = small_beir(workdir / "corpus")
    documents = small_documents(workdir / "docs")
    params = json.loads(json.dumps(DEFAULT_PARAMS))
    params["research"].update(corpus=str(corpus), documents=str(documents), **research)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return workdir


def semops(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["semops", *args],
        cwd=workdir,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def embed_stage(workdir: Path) -> subprocess.CompletedProcess[str]:
    return run_stage(workdir, "research_embed")


def eval_stage(workdir: Path) -> dict[str, Any]:
    ok(run_stage(workdir, "research_eval"))
    return json.loads((workdir / "reports/research.json").read_text())


def embedded_now(output: str) -> int:
    return int(output.split(" chunks, ", 1)[1].split(" embedded now", 1)[0])


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_stage_builds_evaluates_and_reruns_only_what_changed(
    tmp_path: Path, model_cache: Path
) -> None:
    workdir = scratch(tmp_path, model_cache)
    first = ok(embed_stage(workdir))
    metrics = eval_stage(workdir)
    assert metrics["corpus"]["queries"] == 12 and metrics["docs"]["queries"] == 3
    for name in ("corpus", "docs"):
        for method in ("dense", "bm25", "hybrid", "tfidf"):
            assert 0 <= metrics[name][method]["ndcg_at_10"] <= 1
    assert metrics["corpus"]["dense"]["recall_at_10"] >= 0.8  # 12 questions, ~50 passages
    # The documents went through Docling and the chunker; judged by page and by section.
    assert metrics["docs"]["files"] == 2 and metrics["docs"]["chunks"] >= 7
    assert metrics["docs"]["hybrid"]["success_at_10"] == 1.0
    chunks = embedded_now(first)
    assert chunks > 0
    outputs = [
        workdir / "data/research/chunks.parquet",
        workdir / "data/research/index.json",
        workdir / "reports/research.json",
    ]
    before = [p.read_bytes() for p in outputs]

    # Nothing changed: nothing embedded, byte-identical outputs.
    second = ok(embed_stage(workdir))
    assert embedded_now(second) == 0
    eval_stage(workdir)
    assert [p.read_bytes() for p in outputs] == before

    # One passage edited: only its chunk(s) are embedded; the index holds the new text only.
    corpus = workdir / "corpus/corpus.jsonl"
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    rows[-1]["text"] = "Quokkas are small marsupials found on Rottnest Island."
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    third = ok(embed_stage(workdir))
    assert embedded_now(third) == 1
    found = ok(semops(workdir, "research", "search", "marsupials on an island", "--method", "bm25"))
    assert "Quokkas" in found
    index = json.loads((workdir / "data/research/index.json").read_text())
    assert index["points"] == eval_stage(workdir)["chunks"]


def test_a_real_manual_added_is_found_by_its_sections(tmp_path: Path, model_cache: Path) -> None:
    """A PDF manual with an outline (R Data Import/Export, from Debian), added as a user adds a
    file: the default search finds the right section and page, and cites both."""
    workdir = scratch(tmp_path, model_cache)
    manual = tmp_path / "R-data.pdf"
    manual.write_bytes((REPO / "samples/research/rdocs/documents/R-data.pdf").read_bytes())
    ok(semops(workdir, "research", "add", str(manual), "--no-build"))
    ok(embed_stage(workdir))
    asked = {
        "How do I read an Excel spreadsheet into R?": "9 Reading Excel spreadsheets (p. 36)",
        "How can I read a file where each column has a fixed width?": (
            "2 Spreadsheet-like data > Fixed-width-format files (p. 15)"
        ),
        "Which packages use DBI to query a database?": (
            "4 Relational databases > R interface packages > Packages using DBI (p. 24)"
        ),
        "How do I open dBase files?": "5 Binary files > dBase files (DBF) (p. 28)",
    }
    for question, section in asked.items():
        found = ok(semops(workdir, "research", "search", question, "--top-k", "3"))
        # Each hit is two lines: the citation, then the text's start.
        cited = found.splitlines()[::2]
        assert any(
            line.endswith(f"R-data.pdf > R Data Import/Export > {section}") for line in cited
        )
    answer = ok(semops(workdir, "research", "ask", "How do I read an Excel spreadsheet into R?"))
    assert "R Data Import/Export > 9 Reading Excel spreadsheets (p. 36)" in answer


def test_added_sources_are_indexed_cited_and_removed(tmp_path: Path, model_cache: Path) -> None:
    workdir = scratch(tmp_path, model_cache)
    papers = tmp_path / "papers"
    papers.mkdir()
    for name in sorted(os.listdir(MIXED)):
        (papers / name).write_bytes((MIXED / name).read_bytes())
    (papers / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    (papers / "empty.md").write_bytes(b"")
    ok(semops(workdir, "research", "add", str(papers), "--no-build"))
    built = embed_stage(workdir)
    ok(built)
    warnings = built.stderr
    assert "skipped" in warnings and "broken.pdf" in warnings and "empty.md" in warnings
    answer = ok(semops(workdir, "research", "ask", "What does reciprocal rank fusion add up?"))
    assert "ANTHROPIC_API_KEY" in answer  # the extractive answer says why it is extractive
    assert "Sources:" in answer and "rank-fusion.md" in answer

    ok(semops(workdir, "research", "remove", str(papers), "--no-build"))
    ok(embed_stage(workdir))
    found = ok(semops(workdir, "research", "search", "reciprocal rank fusion", "--top-k", "20"))
    assert "rank-fusion.md" not in found


def test_a_second_process_gets_a_clear_message(tmp_path: Path, model_cache: Path) -> None:
    workdir = scratch(tmp_path, model_cache)
    ok(embed_stage(workdir))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from semops.research.index.store.edge import EdgeStore; "
            "s = EdgeStore('data/research/index', 384, sys.argv[1]); print('open', flush=True); "
            "time.sleep(60)",
            "{embedder}+{layout}".format_map(
                json.loads((workdir / "data/research/index.json").read_text())
            ),
        ],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = semops(workdir, "research", "search", "copy an object")
        assert result.returncode == 1
        assert "in use by another process" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_killed_mid_embedding_keeps_finished_batches(tmp_path: Path, model_cache: Path) -> None:
    workdir = scratch(tmp_path, model_cache)
    ok(embed_stage(workdir))  # exports the model once, so the kill lands in embedding
    total = eval_stage(workdir)["chunks"]
    for path in (workdir / "data/research").iterdir():
        if path.is_dir():
            subprocess.run(["rm", "-rf", str(path)], check=True)
    stage = subprocess.Popen(
        [sys.executable, str(REPO / "stages/research_embed.py")],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cache = workdir / "data/research/embeddings"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(cache.rglob("*.npy")):
        time.sleep(0.05)
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    rerun = ok(embed_stage(workdir))
    assert 0 < embedded_now(rerun) < total


def test_shared_embeddings_are_pulled_not_embedded_again(tmp_path: Path, model_cache: Path) -> None:
    """The README's sharing commands: `dvc add` the store, push to a remote; a teammate's clone
    pulls it and its research-embed embeds nothing."""
    workdir = scratch(tmp_path, model_cache)
    remote = tmp_path / "remote"

    def run(where: Path, *command: str) -> str:
        result = subprocess.run(
            command, cwd=where, env=clean_env(), capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    (workdir / ".gitignore").write_text("/data/.cache/\n")
    (workdir / "data/raw/research/.gitkeep").write_text("")
    run(workdir, "git", "init", "-q")
    run(workdir, "dvc", "init", "-q")
    run(workdir, "dvc", "remote", "add", "-d", "shared", str(remote))
    first = ok(embed_stage(workdir))
    assert embedded_now(first) > 0
    run(workdir, "dvc", "add", "data/research/embeddings")
    run(workdir, "git", "add", ".gitignore", ".dvc", "params.yaml", "corpus", "data")
    run(workdir, "git", "commit", "-q", "-m", "share embeddings")
    run(workdir, "dvc", "push")

    teammate = tmp_path / "teammate"
    run(tmp_path, "git", "clone", "-q", str(workdir), str(teammate))
    (teammate / "data/.cache/research").mkdir(parents=True)
    (teammate / "data/.cache/research/models").symlink_to(model_cache)
    run(teammate, "dvc", "pull")
    again = ok(embed_stage(teammate))
    assert embedded_now(again) == 0
    assert eval_stage(teammate) == eval_stage(workdir)
