"""Text blocks in reading order into sections: the text under one heading, with its heading
path and the page it starts on; PDF text lines joined into paragraphs by their boxes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from semops.research.documents import Section

# Native PDF text comes as one item per line: a vertical gap wider than this share of the line
# height, or a first line indented by more than a line height, starts a new paragraph. Lines set
# 1.5 apart leave a gap of about 0.6 of their height; a blank line between paragraphs, over 1.
_PARAGRAPH_GAP = 1.0

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Box:
    """A text line's box on its page, in points from the page's bottom-left corner."""

    left: float
    top: float
    bottom: float


@dataclass(frozen=True)
class Block:
    """A piece of text in reading order with the headings it sits under."""

    headings: tuple[str, ...]
    text: str
    page: int | None = None
    box: Box | None = None


def text_sections(title: str, text: str) -> list[Section]:
    """Plain text: one section of its paragraphs (blank-line separated, lines kept)."""
    paragraphs = [
        "\n".join(line.rstrip() for line in block.strip("\n").splitlines())
        for block in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n").replace("\r", "\n"))
        if block.strip()
    ]
    if not paragraphs:
        return []
    return [Section(title_path=(title,), text="\n\n".join(paragraphs))]


def title_path(title: str, headings: Sequence[str]) -> tuple[str, ...]:
    """(document title, enclosing headings ..., own heading), the title not repeated."""
    path = (title, *(heading for heading in headings if heading))
    if len(path) > 1 and path[1] == title:
        return path[:1] + path[2:]
    return path


def assemble_sections(
    title: str, blocks: Iterable[Block], native_lines: bool = False
) -> list[Section]:
    """Group blocks into sections: a new one at each heading path change, and for paged
    formats at each page, so that every section's page is where its text is.

    `native_lines`: the blocks are PDF text lines (Docling's native pipeline), joined here into
    paragraphs by their boxes; otherwise each block is a paragraph.
    """
    sections: list[Section] = []
    key: tuple[tuple[str, ...], int | None] | None = None
    paragraphs: list[str] = []
    previous_box: Box | None = None

    def flush() -> None:
        if key is not None and paragraphs:
            sections.append(Section(title_path=key[0], text="\n\n".join(paragraphs), page=key[1]))

    for block in blocks:
        text = block.text.strip()
        if not text:
            continue
        path = title_path(title, block.headings)
        page = block.page if block.page is not None or key is None else key[1]
        if (path, page) != key:
            flush()
            key, paragraphs, previous_box = (path, page), [], None
        if (
            native_lines
            and paragraphs
            and not (len(paragraphs) == 1 and _is_own_heading(paragraphs[0], path))
            and previous_box is not None
            and block.box is not None
            and continues_paragraph(previous_box, block.box)
        ):
            paragraphs[-1] += " " + " ".join(text.split())
        else:
            paragraphs.append(" ".join(text.split()) if native_lines else text)
        previous_box = block.box
    flush()
    return sections


def _is_own_heading(line: str, path: tuple[str, ...]) -> bool:
    """Whether a section's first line is its heading ("1.2 Legalese" under "Legalese"): the
    heading stands as a paragraph of its own."""
    return len(path) > 1 and line.casefold().endswith(" ".join(path[-1].split()).casefold())


def continues_paragraph(previous: Box, line: Box) -> bool:
    """Whether a PDF text line continues the paragraph of the line before it."""
    height = max(min(previous.top - previous.bottom, line.top - line.bottom), 1.0)
    if line.top > previous.top + height / 2:  # moved up: the next column or a new region
        return False
    if previous.bottom - line.top > _PARAGRAPH_GAP * height:
        return False
    return line.left - previous.left <= height
