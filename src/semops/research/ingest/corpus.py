"""The bundled research collections, each indexed and, where it has queries and qrels, an
evaluation set: a BEIR-layout corpus (corpus.jsonl, queries.jsonl, qrels/test.tsv), whose
passages become documents, and a document set (files under documents/, read by the same ingest
as `semops research add`, beside the same queries.jsonl and qrels/test.tsv)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semops.errors import SemopsError
from semops.research.documents import Document, Section, sha256_text
from semops.research.ingest.files import discover

DOCUMENTS_FOLDER = "documents"


class CorpusError(SemopsError):
    """A BEIR file that is missing or malformed."""


@dataclass(frozen=True)
class BeirPassage:
    passage_id: str
    title_path: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class BeirSet:
    name: str
    passages: list[BeirPassage]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _json_lines(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise CorpusError(f"{path}: not found") from exc
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("_id"), str):
            raise CorpusError(f"{path}:{number}: expected an object with a string '_id'")
        rows.append(row)
    return rows


def _title_path(row: dict[str, Any]) -> tuple[str, ...]:
    path = (row.get("metadata") or {}).get("title_path")
    if isinstance(path, list) and all(isinstance(p, str) for p in path):
        return tuple(path)
    title = row.get("title") or ""
    return (title,) if title else ()


def read_beir(folder: Path, with_queries: bool = True) -> BeirSet:
    passages = []
    for row in _json_lines(folder / "corpus.jsonl"):
        if not isinstance(row.get("text"), str):
            raise CorpusError(f"{folder / 'corpus.jsonl'}: passage {row['_id']!r} has no text")
        passages.append(BeirPassage(row["_id"], _title_path(row), row["text"]))
    ids = [p.passage_id for p in passages]
    if len(set(ids)) != len(ids):
        raise CorpusError(f"{folder / 'corpus.jsonl'}: duplicate passage ids")
    if not with_queries:
        return BeirSet(folder.name, passages, {}, {})
    queries = {
        row["_id"]: str(row.get("text", "")) for row in _json_lines(folder / "queries.jsonl")
    }
    return BeirSet(folder.name, passages, queries, read_qrels(folder / "qrels" / "test.tsv"))


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise CorpusError(f"{path}: not found") from exc
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if number == 1 and fields[0] == "query-id":
            continue
        if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
            raise CorpusError(f"{path}:{number}: expected query-id<TAB>corpus-id<TAB>score")
        qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    return qrels


def passage_source(corpus: str, passage_id: str) -> str:
    return f"{corpus}:{passage_id}"


def passage_of_source(corpus: str, source: str) -> str | None:
    prefix = f"{corpus}:"
    return source[len(prefix) :] if source.startswith(prefix) else None


def beir_documents(beir: BeirSet) -> list[Document]:
    """One document per passage: its source names the corpus and passage, for citations and for
    mapping retrieved chunks back to passages in the evaluation."""
    return [
        Document(
            source=passage_source(beir.name, p.passage_id),
            title=p.title_path[0] if p.title_path else p.passage_id,
            sha256=sha256_text(json.dumps([p.title_path, p.text])),
            sections=(Section(p.title_path, p.text),),
        )
        for p in beir.passages
    ]


@dataclass(frozen=True)
class DocumentSet:
    """Files to ingest, as (path, the source they are cited by), and the set's queries.

    Relevance is judged per unit: "<file>#page=<n>" for a page of a paged document, else
    "<file>#<heading>", the section's own heading; <file> is relative to documents/. `kinds`
    tells queries apart by how they were written (e.g. "heading", "user") where the set says so.
    """

    name: str
    files: list[tuple[Path, str]]
    queries: dict[str, str]
    kinds: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def unit(self, source: str, title_path: tuple[str, ...], page: int | None) -> str | None:
        """The unit a chunk of `source` is judged by, None for a source outside this set."""
        prefix = f"{self.name}:"
        if not source.startswith(prefix):
            return None
        name = source[len(prefix) :]
        return f"{name}#page={page}" if page is not None else f"{name}#{title_path[-1]}"


def read_document_set(folder: Path) -> DocumentSet:
    """A document set: documents/ is required; queries.jsonl and qrels/test.tsv make it an
    evaluation set, both or neither."""
    documents = folder / DOCUMENTS_FOLDER
    if not documents.is_dir():
        raise CorpusError(f"{documents}: not a folder (a document set keeps its files there)")
    name = folder.name
    files = [(p, f"{name}:{p.relative_to(documents).as_posix()}") for p in discover(documents)]
    queries_path, qrels_path = folder / "queries.jsonl", folder / "qrels" / "test.tsv"
    if not queries_path.exists() and not qrels_path.exists():
        return DocumentSet(name, files, {}, {}, {})
    rows = _json_lines(queries_path)
    kinds = {
        row["_id"]: str(kind)
        for row in rows
        if (kind := (row.get("metadata") or {}).get("kind")) is not None
    }
    queries = {row["_id"]: str(row.get("text", "")) for row in rows}
    return DocumentSet(name, files, queries, kinds, read_qrels(qrels_path))
