"""A BEIR-layout corpus (corpus.jsonl, queries.jsonl, qrels/test.tsv): the default research
corpus, whose passages become documents, and the retrieval evaluation set."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semops.errors import SemopsError
from semops.research.documents import Document, Section, sha256_text


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
