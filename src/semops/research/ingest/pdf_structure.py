"""A PDF's heading structure, offline: from its outline (bookmarks with page destinations) where
it has one, else from the text's own cues (font size, bold numbered lines); and its table-of-
contents lines, which are navigation rather than content.

Docling's native pipeline returns text lines with their boxes but no headings. The outline is
what the author's tool wrote (LaTeX, Texinfo, Word exports), so it is trusted first; a line
belongs to the last outline entry whose destination lies at or above it in reading order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from semops.research.ingest.sections import Block

if TYPE_CHECKING:
    import pypdfium2

# A destination's `top` is where a viewer scrolls to, a little above the heading's own box.
_DESTINATION_SLACK = 4.0
# "2.3 Title . . . . . 17": a table-of-contents or index line ends in dot leaders and a page.
_CONTENTS_LINE = re.compile(r"(?:\.\s?){4,}\s*[0-9ivxlc]+\s*$", re.IGNORECASE)
# A page number standing alone, arabic or roman.
_PAGE_NUMBER = re.compile(r"[0-9]+|[ivxlc]+", re.IGNORECASE)
# Running heads and feet: a page's first or last line at a height shared by at least this many
# pages and this share of them.
_RECURRING_PAGES = 3
_RUNNING_SHARE = 0.3
# "2", "2.3", "2.3.1." and then the heading's text.
_NUMBERED_HEADING = re.compile(r"^((?:\d+\.)*\d+)\.?\s+\S")
# A heading's font is at least this much larger than the body's (points).
_LARGER_FONT = 1.0
_MAX_HEADING_WORDS = 16
# A document-information title that only names the file it was made from.
_FILE_NAME_TITLE = re.compile(
    r"^Microsoft Word - |\.(?:docx?|odt|rtf|tex|dvi|pdf|pptx?|indd)$", re.IGNORECASE
)


@dataclass(frozen=True)
class OutlineEntry:
    """A bookmark: its depth (0 = top), title and destination (1-based page, top in points from
    the page's bottom; None: the top of the page)."""

    level: int
    title: str
    page: int
    top: float | None


@dataclass(frozen=True)
class LineFont:
    """A text line's font size in points and whether it is bold."""

    size: float
    bold: bool


def read_outline(pdf: pypdfium2.PdfDocument) -> list[OutlineEntry]:
    """The outline's entries with a destination in this file, in outline order."""
    entries: list[OutlineEntry] = []
    for bookmark in pdf.get_toc(max_depth=32):
        destination = bookmark.get_dest()
        title = " ".join(bookmark.get_title().split())
        if destination is None or not title:
            continue
        index = destination.get_index()
        if index is None or not 0 <= index < len(pdf):
            continue
        entries.append(OutlineEntry(bookmark.level, title, index + 1, _view_top(destination)))
    return entries


def _view_top(destination: pypdfium2.PdfDest) -> float | None:
    """The top a destination scrolls to (PDF 32000-1, 12.3.2.2), None for the page's top: XYZ
    may leave it unset (null), FitH and FitBH name it first, FitR last; the other views show the
    whole page."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    mode, params = destination.get_view()
    if mode == pdfium_c.PDFDEST_VIEW_XYZ:
        has = [ctypes.c_int() for _ in range(3)]
        where = [ctypes.c_float() for _ in range(3)]
        found = pdfium_c.FPDFDest_GetLocationInPage(
            destination.raw, *map(ctypes.byref, has), *map(ctypes.byref, where)
        )
        return float(where[1].value) if found and has[1].value else None
    fitted = {
        pdfium_c.PDFDEST_VIEW_FITH: 0,
        pdfium_c.PDFDEST_VIEW_FITBH: 0,
        pdfium_c.PDFDEST_VIEW_FITR: 3,
    }
    position = fitted.get(mode)
    return None if position is None or position >= len(params) else float(params[position])


def headings_from_outline(blocks: Sequence[Block], outline: Sequence[OutlineEntry]) -> list[Block]:
    """Each block under the outline entries that enclose it: the last entry at or above it in
    reading order, and that entry's ancestors. Blocks before the first entry have no heading."""
    ordered = sorted(
        outline, key=lambda e: (e.page, -(e.top if e.top is not None else float("inf")))
    )
    result: list[Block] = []
    stack: list[OutlineEntry] = []
    position = 0
    for block in blocks:
        while position < len(ordered) and _reached(ordered[position], block):
            entry = ordered[position]
            stack = [e for e in stack if e.level < entry.level] + [entry]
            position += 1
        result.append(replace(block, headings=tuple(e.title for e in stack)))
    return result


def _reached(entry: OutlineEntry, block: Block) -> bool:
    if block.page is None:
        return False
    if block.page != entry.page:
        return block.page > entry.page
    if entry.top is None or block.box is None:
        return True
    return block.box.top <= entry.top + _DESTINATION_SLACK


def line_fonts(pdf: pypdfium2.PdfDocument, blocks: Sequence[Block]) -> list[LineFont | None]:
    """The font of each line's first character (None where the text layer has no character
    there)."""
    import pypdfium2.raw as pdfium_c

    fonts: list[LineFont | None] = []
    textpages: dict[int, object] = {}
    for block in blocks:
        if block.page is None or block.box is None or not 1 <= block.page <= len(pdf):
            fonts.append(None)
            continue
        if block.page not in textpages:
            textpages[block.page] = pdf[block.page - 1].get_textpage()
        raw = textpages[block.page].raw  # type: ignore[attr-defined]
        height = block.box.top - block.box.bottom
        middle = (block.box.top + block.box.bottom) / 2
        index = pdfium_c.FPDFText_GetCharIndexAtPos(
            raw, block.box.left + height / 4, middle, height / 2, height / 2
        )
        if index < 0:
            fonts.append(None)
            continue
        name = _font_name(raw, index)
        weight = pdfium_c.FPDFText_GetFontWeight(raw, index)
        fonts.append(
            LineFont(
                size=round(pdfium_c.FPDFText_GetFontSize(raw, index), 1),
                bold=weight >= 600 or "bold" in name.lower(),
            )
        )
    return fonts


def _font_name(raw: object, index: int) -> str:
    import ctypes

    import pypdfium2.raw as pdfium_c

    buffer = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    length = pdfium_c.FPDFText_GetFontInfo(raw, index, buffer, 128, ctypes.byref(flags))
    return buffer.value.decode("utf-8", "replace") if length else ""


def headings_from_fonts(blocks: Sequence[Block], fonts: Sequence[LineFont | None]) -> list[Block]:
    """Headings from the text's own cues, for a PDF without an outline: a short line set larger
    than the body text, or a bold numbered line ("2.3 Title"). Levels: a numbered heading's depth
    of numbering, else its size's rank among the heading sizes (larger is higher). A heading's
    line stays in the text, where it stands; consecutive heading lines of one size are one
    heading (a title wrapped over two lines)."""
    sizes: Counter[float] = Counter()
    for block, font in zip(blocks, fonts, strict=True):
        if font is not None:
            sizes[font.size] += len(block.text)
    if not sizes:
        return list(blocks)
    body = sizes.most_common(1)[0][0]
    heading = [
        font is not None and _is_heading(block.text, font, body)
        for block, font in zip(blocks, fonts, strict=True)
    ]
    ranks = sorted(
        {font.size for font, is_heading in zip(fonts, heading, strict=True) if is_heading and font},
        reverse=True,
    )
    result: list[Block] = []
    stack: list[tuple[int, str]] = []
    previous_size: float | None = None
    for block, font, is_heading in zip(blocks, fonts, heading, strict=True):
        if is_heading and font is not None:
            title = " ".join(block.text.split())
            if previous_size == font.size and stack:
                level, earlier = stack[-1]
                stack[-1] = (level, f"{earlier} {title}")
            else:
                numbered = _NUMBERED_HEADING.match(title)
                level = numbered[1].count(".") + 1 if numbered else ranks.index(font.size)
                stack = [(lvl, text) for lvl, text in stack if lvl < level] + [(level, title)]
            previous_size = font.size
        else:
            previous_size = None
        result.append(replace(block, headings=tuple(text for _, text in stack)))
    return result


def _is_heading(text: str, font: LineFont, body: float) -> bool:
    words = text.split()
    if not words or len(words) > _MAX_HEADING_WORDS or text.rstrip().endswith((".", ",", ";")):
        return False
    if not any(character.isalpha() for character in text):
        return False
    if font.size >= body + _LARGER_FONT:
        return True
    return font.bold and font.size >= body and _NUMBERED_HEADING.match(text.strip()) is not None


def content_lines(lines: Sequence[Block]) -> list[Block]:
    """PDF text lines without what is navigation or page furniture: table-of-contents and index
    entries (a page where they are half the lines goes whole, wrapped entries included), page
    numbers standing alone, and running headers and footers."""
    contents = [is_contents_line(line.text) for line in lines]
    per_page: Counter[int | None] = Counter(line.page for line in lines)
    contents_per_page: Counter[int | None] = Counter(
        line.page for line, is_contents in zip(lines, contents, strict=True) if is_contents
    )
    index_pages = {page for page, n in contents_per_page.items() if 2 * n >= per_page[page]}
    furniture = _running_lines(lines)
    return [
        line
        for position, (line, is_contents) in enumerate(zip(lines, contents, strict=True))
        if not is_contents
        and line.page not in index_pages
        and not _PAGE_NUMBER.fullmatch(line.text.strip())
        and position not in furniture
    ]


def _running_lines(lines: Sequence[Block]) -> set[int]:
    """Positions of running headers and footers: a page's first or last line, short, at a height
    where such lines stand on a good share of the pages."""
    edges: dict[int | None, list[int]] = {}
    for position, line in enumerate(lines):
        edges.setdefault(line.page, []).append(position)
    candidates = [
        position
        for positions in edges.values()
        for position in {positions[0], positions[-1]}
        if lines[position].box is not None
        and len(lines[position].text.split()) <= _MAX_HEADING_WORDS
    ]
    heights: Counter[int] = Counter(round(lines[p].box.top) for p in candidates)  # type: ignore[union-attr]
    needed = max(_RECURRING_PAGES, _RUNNING_SHARE * len(edges))
    return {p for p in candidates if heights[round(lines[p].box.top)] >= needed}  # type: ignore[union-attr]


def is_contents_line(text: str) -> bool:
    """Whether a line is a table-of-contents or index entry (dot leaders, then a page number)."""
    return _CONTENTS_LINE.search(text) is not None


def structured_blocks(data: bytes, blocks: Sequence[Block], native_lines: bool) -> list[Block]:
    """A PDF's blocks under the headings of its outline, where it has one. The native
    pipeline's lines (`native_lines`) otherwise get headings from their fonts, and lose their
    table-of-contents lines; Docling's layout models find the headings of the others."""
    import pypdfium2

    lines = content_lines(blocks) if native_lines else list(blocks)
    pdf = pypdfium2.PdfDocument(data)
    try:
        outline = read_outline(pdf)
        if outline:
            return headings_from_outline(lines, outline)
        return headings_from_fonts(lines, line_fonts(pdf, lines)) if native_lines else lines
    finally:
        pdf.close()


def pdf_title(data: bytes) -> str | None:
    """The title in the PDF's document information unless it is a file's name (as some word
    processors write it), else the line set in the largest font on its first page where that
    font is larger than the page's body text, else None."""
    import pypdfium2

    pdf = pypdfium2.PdfDocument(data)
    try:
        title = " ".join(pdf.get_metadata_dict().get("Title", "").split())
        if title and not _FILE_NAME_TITLE.search(title):
            return title
        return _largest_text(pdf[0]) if len(pdf) else None
    finally:
        pdf.close()


def _largest_text(page: pypdfium2.PdfPage) -> str | None:
    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    sizes = [
        round(pdfium_c.FPDFText_GetFontSize(textpage.raw, i), 1)
        for i in range(textpage.count_chars())
    ]
    text = textpage.get_text_range()
    if not sizes or len(text) != len(sizes):
        return None
    body = Counter(
        size for size, character in zip(sizes, text, strict=True) if not character.isspace()
    )
    if not body or max(sizes) < body.most_common(1)[0][0] + _LARGER_FONT:
        return None  # nothing stands out from the body text
    # The whole line of the largest character: a title set in small capitals mixes two sizes.
    at = sizes.index(max(sizes))
    start = max(text.rfind("\n", 0, at), text.rfind("\r", 0, at)) + 1
    ends = [end for end in (text.find("\r", at), text.find("\n", at)) if end >= 0]
    title = " ".join(text[start : min(ends, default=len(text))].split())
    return title if 0 < len(title.split()) <= _MAX_HEADING_WORDS else None
