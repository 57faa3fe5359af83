"""Heading-aware chunks bounded in tokens of the embedder's own tokenizer, and their Parquet file.

A chunk never spans two sections. A section longer than the bound is cut at the coarsest
boundary that fits - paragraphs, then lines, sentences, words, and characters of a word longer
than the bound - and adjacent pieces are packed greedily back up to the bound. The bound holds
for what the embedder reads, `embedding_input(title_path, text)`, as its tokenizer counts it,
special tokens included; the heading path stays beside a chunk (its citation and its id).

Tokens are counted in batches with the embedder's tokenizer, each distinct text once: pieces
are sized by summing their counts, and every chunk is then counted whole, as a tokenizer need
not be additive across the text that joins pieces; a chunk over the bound is cut again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from semops.errors import SemopsError
from semops.io import write_arrow
from semops.research.documents import Chunk, Document, embedding_input, sha256_text

if TYPE_CHECKING:
    import pyarrow as pa

TokenCounter = Callable[[list[str]], list[int]]

# The levels of cutting - paragraph, line, sentence, word, then halves of a word (every further
# level) - and what separates two pieces cut at each.
_JOINERS = ("\n\n", "\n", " ", " ", "")
_CHARACTER_LEVEL = len(_JOINERS) - 1
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# After ., ! or ?, optionally closed by a quote or bracket.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u2019\u201d)\]])\s+")


class _Piece(NamedTuple):
    """A piece of a section's text, cut at `level`; `joiner` separated it from the piece before."""

    text: str
    level: int
    joiner: str


class _TokenCounts:
    """Token counts of texts, each distinct text counted once, in batches."""

    def __init__(self, count_tokens: TokenCounter) -> None:
        self._count_tokens = count_tokens
        self._counts: dict[str, int] = {}

    def add(self, texts: Sequence[str]) -> None:
        missing = list(dict.fromkeys(text for text in texts if text not in self._counts))
        if not missing:
            return
        counts = self._count_tokens(missing)
        if len(counts) != len(missing):
            raise SemopsError(
                f"the embedder's token counter returned {len(counts)} counts for "
                f"{len(missing)} texts"
            )
        self._counts.update(zip(missing, map(int, counts), strict=True))

    def __getitem__(self, text: str) -> int:
        return self._counts[text]


@dataclass(frozen=True)
class _Part:
    """A section, or consecutive sections merged, on its way to chunks."""

    doc_index: int
    title_path: tuple[str, ...]
    page: int | None
    paragraphs: tuple[str, ...]
    # Tokens of the paragraphs, summed: the tokenizer's special tokens not included.
    cost: int


def chunk_document(
    doc: Document, count_tokens: TokenCounter, max_tokens: int, min_tokens: int
) -> list[Chunk]:
    """The chunks of one document (see chunk_documents)."""
    return chunk_documents([doc], count_tokens, max_tokens, min_tokens)


def chunk_documents(
    docs: Sequence[Document], count_tokens: TokenCounter, max_tokens: int, min_tokens: int
) -> list[Chunk]:
    """Chunks of every document, in order, each at most `max_tokens` tokens as embedded.

    `count_tokens` counts the tokens of each text in a list, special tokens included, with the
    embedder's tokenizer. A section with fewer than `min_tokens` tokens of text is merged into
    the section that follows it when that one lies under the same heading path (the same
    section continued on the next page, or one of its subsections, whose headings are then kept
    as lines of the text) and the two fit one chunk together.
    """
    counts = _TokenCounts(count_tokens)
    counts.add([""])
    specials = counts[""]  # what the tokenizer adds to any text, e.g. [CLS] and [SEP]
    budget = max_tokens - specials  # for the text of a chunk, its pieces summed

    def cost(text: str) -> int:
        return counts[text] - specials

    sections = [[s for s in doc.sections if s.text.strip()] for doc in docs]
    paragraphs = [[_split(s.text, 0) for s in doc_sections] for doc_sections in sections]
    counts.add(
        [text for doc_paragraphs in paragraphs for texts in doc_paragraphs for text in texts]
        + [heading for doc_sections in sections for s in doc_sections for heading in s.title_path]
    )

    parts: list[_Part] = []
    for doc_index, doc_sections in enumerate(sections):
        doc_parts = [
            _Part(
                doc_index=doc_index,
                title_path=section.title_path,
                page=section.page,
                paragraphs=tuple(texts),
                cost=sum(cost(text) for text in texts),
            )
            for section, texts in zip(doc_sections, paragraphs[doc_index], strict=True)
        ]
        parts.extend(_merge_short(doc_parts, cost, budget, min_tokens))

    pieces = _pieces_within_budget(parts, counts, cost, budget, max_tokens)
    groups: list[tuple[tuple[int, ...], list[_Piece]]] = [
        ((part_index, group_index), group)
        for part_index, part_pieces in enumerate(pieces)
        for group_index, group in enumerate(_pack(part_pieces, cost, budget))
    ]
    return _identified(docs, parts, _bounded(groups, parts, counts, cost, budget, max_tokens))


def _identified(
    docs: Sequence[Document], parts: Sequence[_Part], chunked: list[tuple[int, str, int]]
) -> list[Chunk]:
    """The chunks of (part index, text, tokens as embedded), each with its id and text hash."""
    chunks: list[Chunk] = []
    # Keyed by heading path too: the same text in another section must not shift this one's id.
    occurrences: dict[tuple[int, tuple[str, ...], str], int] = {}
    sections_seen: set[tuple[int, tuple[str, ...]]] = set()
    for part_index, text, n_tokens in chunked:
        part = parts[part_index]
        source = docs[part.doc_index].source
        text_sha256 = sha256_text(embedding_input(part.title_path, text))
        key = (part.doc_index, part.title_path, text_sha256)
        occurrence = occurrences.get(key, 0)
        occurrences[key] = occurrence + 1
        opens = (part.doc_index, part.title_path) not in sections_seen
        sections_seen.add((part.doc_index, part.title_path))
        chunks.append(
            Chunk(
                chunk_id=chunk_id(source, part.title_path, text_sha256, occurrence, opens),
                source=source,
                title_path=part.title_path,
                page=part.page,
                opens_section=opens,
                text=text,
                n_tokens=n_tokens,
                text_sha256=text_sha256,
            )
        )
    return chunks


def chunk_id(
    source: str, title_path: tuple[str, ...], text_sha256: str, occurrence: int, opens: bool
) -> str:
    """32 hex digits naming a chunk by its source, place and text; `occurrence` tells apart the
    same text repeated in one section, `opens` whether it opens its section (so that a chunk
    which comes to open or to continue its section is a new point, its payload never stale)."""
    key = json.dumps([source, list(title_path), text_sha256, occurrence, opens], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _split(text: str, level: int) -> list[str]:
    """`text` cut at one level: paragraphs, lines, sentences, words, or two halves."""
    if level == 0:
        return [part.strip() for part in _PARAGRAPH_BREAK.split(text) if part.strip()]
    if level == 1:
        return [line.rstrip() for line in text.split("\n") if line.strip()]
    if level == 2:
        return [part.strip() for part in _SENTENCE_BREAK.split(text) if part.strip()]
    if level == 3:
        return text.split()
    half = len(text) // 2
    return [text[:half], text[half:]] if half else [text]


def _refine(piece: _Piece, max_tokens: int) -> list[_Piece]:
    """A piece cut at the next level that splits it."""
    level = piece.level + 1
    while True:
        cut = min(level, _CHARACTER_LEVEL)
        parts = _split(piece.text, cut)
        if len(parts) > 1:
            return [
                _Piece(part, level, piece.joiner if index == 0 else _JOINERS[cut])
                for index, part in enumerate(parts)
            ]
        if level >= _CHARACTER_LEVEL:
            raise SemopsError(
                f"research.chunk.max_tokens={max_tokens} is too small: the character "
                f"{piece.text!r} alone does not fit"
            )
        level += 1


def _join(pieces: Sequence[_Piece]) -> str:
    return pieces[0].text + "".join(piece.joiner + piece.text for piece in pieces[1:])


def _merge_short(
    parts: Sequence[_Part], cost: Callable[[str], int], budget: int, min_tokens: int
) -> list[_Part]:
    merged: list[_Part] = []
    for part in parts:
        if merged:
            short = merged[-1]
            depth = len(short.title_path)
            if short.cost < min_tokens and part.title_path[:depth] == short.title_path:
                headings = part.title_path[depth:]
                total = short.cost + sum(cost(heading) for heading in headings) + part.cost
                if total <= budget:
                    merged[-1] = _Part(
                        doc_index=short.doc_index,
                        title_path=short.title_path,
                        page=short.page,
                        paragraphs=(*short.paragraphs, *headings, *part.paragraphs),
                        cost=total,
                    )
                    continue
        merged.append(part)
    return merged


def _pieces_within_budget(
    parts: Sequence[_Part],
    counts: _TokenCounts,
    cost: Callable[[str], int],
    budget: int,
    max_tokens: int,
) -> list[list[_Piece]]:
    """Each part's paragraphs, those over the budget cut finer until every piece fits; one
    batch of counts per round of cutting."""
    pieces = [[_Piece(text, 0, _JOINERS[0]) for text in part.paragraphs] for part in parts]
    unsettled = list(range(len(parts)))  # parts that may still hold a piece over budget
    while unsettled:
        cut_parts: dict[int, list[list[_Piece]]] = {}
        for part_index in unsettled:
            cuts = [
                _refine(piece, max_tokens) if cost(piece.text) > budget else [piece]
                for piece in pieces[part_index]
            ]
            if any(len(cut) > 1 for cut in cuts):
                cut_parts[part_index] = cuts
        counts.add([piece.text for cuts in cut_parts.values() for cut in cuts for piece in cut])
        for part_index, cuts in cut_parts.items():
            pieces[part_index] = [piece for cut in cuts for piece in cut]
        unsettled = list(cut_parts)
    return pieces


def _pack(pieces: Sequence[_Piece], cost: Callable[[str], int], budget: int) -> list[list[_Piece]]:
    """Adjacent pieces grouped greedily while their summed tokens stay within the budget."""
    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    total = 0
    for piece in pieces:
        piece_tokens = cost(piece.text)
        if current and total + piece_tokens > budget:
            groups.append(current)
            current, total = [], 0
        current.append(piece)
        total += piece_tokens
    if current:
        groups.append(current)
    return groups


def _bounded(
    groups: list[tuple[tuple[int, ...], list[_Piece]]],
    parts: Sequence[_Part],
    counts: _TokenCounts,
    cost: Callable[[str], int],
    budget: int,
    max_tokens: int,
) -> list[tuple[int, str, int]]:
    """(part index, text, tokens as embedded) of each group, in order; a group whose whole
    embedding input is over the bound is halved, or a single piece cut finer, and counted again."""
    accepted: dict[tuple[int, ...], tuple[int, str, int]] = {}
    while groups:
        texts = [_join(pieces) for _, pieces in groups]
        inputs = [
            embedding_input(parts[key[0]].title_path, text)
            for (key, _), text in zip(groups, texts, strict=True)
        ]
        counts.add(inputs)
        over: list[tuple[tuple[int, ...], list[_Piece]]] = []
        for (key, pieces), text, embedded in zip(groups, texts, inputs, strict=True):
            if counts[embedded] <= max_tokens:
                accepted[key] = (key[0], text, counts[embedded])
            else:
                over.append((key, pieces))
        singles = {key: _refine(pieces[0], max_tokens) for key, pieces in over if len(pieces) == 1}
        counts.add([piece.text for children in singles.values() for piece in children])
        groups = []
        for key, pieces in over:
            if len(pieces) > 1:
                middle = len(pieces) // 2
                groups += [((*key, 0), pieces[:middle]), ((*key, 1), pieces[middle:])]
            else:
                repacked = _pack(singles[key], cost, budget)
                groups += [((*key, index), group) for index, group in enumerate(repacked)]
    return [accepted[key] for key in sorted(accepted)]


def write_chunks(path: str | Path, chunks: Sequence[Chunk]) -> None:
    """Chunks as Parquet, written atomically; the same chunks give the same bytes."""
    import pyarrow as pa

    columns = {
        "chunk_id": [c.chunk_id for c in chunks],
        "source": [c.source for c in chunks],
        "title_path": [list(c.title_path) for c in chunks],
        "page": [c.page for c in chunks],
        "opens_section": [c.opens_section for c in chunks],
        "text": [c.text for c in chunks],
        "n_tokens": [c.n_tokens for c in chunks],
        "text_sha256": [c.text_sha256 for c in chunks],
    }
    write_arrow(path, pa.Table.from_pydict(columns, schema=_chunk_schema()))


def _chunk_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("source", pa.string()),
            ("title_path", pa.list_(pa.string())),
            ("page", pa.int32()),
            ("opens_section", pa.bool_()),
            ("text", pa.string()),
            ("n_tokens", pa.int32()),
            ("text_sha256", pa.string()),
        ]
    )


def read_chunks(path: str | Path) -> list[Chunk]:
    """The chunks of a file written by write_chunks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError as exc:
        raise SemopsError(f"{path}: file not found") from exc
    except (pa.ArrowException, OSError) as exc:
        raise SemopsError(f"{path}: not a valid Parquet file ({exc})") from exc
    found = {field.name: field.type for field in table.schema}
    wrong = [
        f"{field.name} ({found.get(field.name, 'missing')}, expected {field.type})"
        for field in _chunk_schema()
        if found.get(field.name) != field.type
    ]
    if wrong:
        raise SemopsError(f"{path}: not a chunks file: columns {', '.join(wrong)}")
    return [
        Chunk(
            chunk_id=row["chunk_id"],
            source=row["source"],
            title_path=tuple(row["title_path"]),
            page=row["page"],
            opens_section=row["opens_section"],
            text=row["text"],
            n_tokens=row["n_tokens"],
            text_sha256=row["text_sha256"],
        )
        for row in table.to_pylist()
    ]
