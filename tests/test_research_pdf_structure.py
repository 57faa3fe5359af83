"""A PDF's structure, offline: headings from the outline or from font cues, contents lines and
page furniture left out, the title; on small hand-made cases and on real manuals from Debian
(samples/research/rdocs, read by the same Docling ingest as `semops research add`)."""

from __future__ import annotations

import re
from pathlib import Path

import pypdfium2
import pytest
from test_research_ingest import _pdf_file

from semops.config.research import PdfConfig
from semops.research.documents import Document
from semops.research.ingest.files import _docling_convert, convert_file, docling_blocks
from semops.research.ingest.pdf_structure import (
    LineFont,
    OutlineEntry,
    content_lines,
    headings_from_fonts,
    headings_from_outline,
    is_contents_line,
    line_fonts,
    pdf_title,
    read_outline,
)
from semops.research.ingest.sections import Block, Box

RDOCS = Path(__file__).resolve().parents[1] / "samples/research/rdocs/documents"


def line(text: str, page: int, top: float, left: float = 72.0) -> Block:
    return Block(headings=(), text=text, page=page, box=Box(left=left, top=top, bottom=top - 10))


# ----------------------------------------------------------------------------- the outline


def test_each_line_goes_under_the_last_entry_at_or_above_it() -> None:
    lines = [
        line("Title page", 1, 700),
        line("1 Intro", 2, 720),
        line("intro text", 2, 700),
        line("1.1 Detail", 2, 400),
        line("detail text", 2, 380),
        line("more detail", 3, 700),
        line("2 Next", 3, 300),
    ]
    outline = [
        OutlineEntry(0, "1 Intro", 2, 722.0),
        OutlineEntry(1, "Detail", 2, 402.0),
        OutlineEntry(0, "2 Next", 3, None),  # no top: the page's top
    ]
    assert [b.headings for b in headings_from_outline(lines, outline)] == [
        (),
        ("1 Intro",),
        ("1 Intro",),
        ("1 Intro", "Detail"),
        ("1 Intro", "Detail"),
        ("2 Next",),  # page 3's top: "2 Next" starts there, whatever the heading line's height
        ("2 Next",),
    ]


def test_an_outline_in_another_order_than_the_pages_is_followed_in_reading_order() -> None:
    lines = [line("a", 1, 700), line("b", 2, 700)]
    outline = [OutlineEntry(0, "Second", 2, 710.0), OutlineEntry(0, "First", 1, 710.0)]
    assert [b.headings for b in headings_from_outline(lines, outline)] == [("First",), ("Second",)]


def test_real_outlines_have_their_entries_and_page_destinations() -> None:
    pdf = pypdfium2.PdfDocument(RDOCS / "R-FAQ.pdf")
    try:
        outline = read_outline(pdf)
    finally:
        pdf.close()
    assert len(outline) == 104
    assert sum(entry.title.endswith("?") for entry in outline) == 75
    what_is_r = next(entry for entry in outline if entry.title == "What is R?")
    assert (what_is_r.level, what_is_r.page) == (1, 7)
    assert what_is_r.top == pytest.approx(658.449, abs=0.01)
    assert {entry.level for entry in outline} == {0, 1, 2}


def outlined_pdf(destinations: list[tuple[str, str]], title: str | None = None) -> bytes:
    """A one-page PDF (612 x 792 pt) whose outline has one entry per (title, view) pair, each
    pointing at page 1 with that view, e.g. "/XYZ null null null" or "/FitH 500"; `title` goes
    into its document information."""
    first_item = 5
    items = []
    for n, (entry, view) in enumerate(destinations):
        links = f" /Prev {first_item + n - 1} 0 R" if n else ""
        links += f" /Next {first_item + n + 1} 0 R" if n + 1 < len(destinations) else ""
        items.append(f"<< /Title ({entry}) /Parent 4 0 R /Dest [3 0 R {view}]{links} >>".encode())
    last = first_item + len(destinations) - 1
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Outlines 4 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        f"<< /Type /Outlines /First {first_item} 0 R /Last {last} 0 R "
        f"/Count {len(destinations)} >>".encode(),
        *items,
    ]
    if title is None:
        return _pdf_file(objects, b"")
    objects.append(f"<< /Title ({title}) >>".encode())
    return _pdf_file(objects, b" /Info %d 0 R" % len(objects))


def test_each_kind_of_destination_gives_its_top_or_the_page_top() -> None:
    data = outlined_pdf(
        [
            ("xyz", "/XYZ 72 500 0"),
            ("xyz unset", "/XYZ null null null"),
            ("fith", "/FitH 400"),
            ("fitr", "/FitR 72 100 300 300"),
            ("fit", "/Fit"),
        ]
    )
    pdf = pypdfium2.PdfDocument(data)
    try:
        tops = {entry.title: entry.top for entry in read_outline(pdf)}
    finally:
        pdf.close()
    assert tops == {"xyz": 500.0, "xyz unset": None, "fith": 400.0, "fitr": 300.0, "fit": None}


# ----------------------------------------------------------------------------- navigation


def test_contents_and_index_entries_are_recognised() -> None:
    assert is_contents_line("2.3 How can R be obtained? . . . . . . . . . . . 7")
    assert is_contents_line("read.table . . . . . . . . xii")
    assert not is_contents_line("See Section 2.3, page 7.")
    assert not is_contents_line("x <- c(1, 2, 3) ... 4")


def test_contents_pages_numbers_and_running_heads_are_left_out() -> None:
    lines = [line("Table of Contents", 1, 700)]
    lines += [
        line(f"{n} Chapter {n} . . . . . . . . {n + 4}", 1, 680 - 12 * n) for n in range(1, 5)
    ]
    lines += [line("7.18 Why does the output from anova() depend on the", 1, 600)]  # wrapped entry
    for page in range(2, 6):
        lines += [
            line(f"Chapter {page}: Something", page, 760),  # a running head
            line(f"Body text of page {page}.", page, 700),
            line(str(page), page, 40),  # a page number
        ]
    kept = [(b.page, b.text) for b in content_lines(lines)]
    assert kept == [(page, f"Body text of page {page}.") for page in range(2, 6)]


# ----------------------------------------------------------------------------- font cues


def test_font_cues_give_headings_and_their_levels() -> None:
    body, big, bigger = LineFont(10.0, False), LineFont(14.0, False), LineFont(17.0, True)
    lines = [
        ("A Manual", bigger),
        ("Some body text that is long enough to be the body.", body),
        ("1 Introduction", big),
        ("Body text of the introduction, several words long.", body),
        ("1.1 Bold numbered", LineFont(10.0, True)),
        ("Text under the subsection with many words in it.", body),
        ("A bold sentence that ends with a period.", LineFont(10.0, True)),
        ("Wrapped heading", big),
        ("over two lines", big),
        ("Closing text of the manual with enough words.", body),
    ]
    blocks = [line(text, 1, 700 - 20 * i) for i, (text, _) in enumerate(lines)]
    result = headings_from_fonts(blocks, [font for _, font in lines])
    assert [b.headings for b in result] == [
        ("A Manual",),
        ("A Manual",),
        ("A Manual", "1 Introduction"),
        ("A Manual", "1 Introduction"),
        ("A Manual", "1 Introduction", "1.1 Bold numbered"),
        ("A Manual", "1 Introduction", "1.1 Bold numbered"),
        ("A Manual", "1 Introduction", "1.1 Bold numbered"),
        ("A Manual", "Wrapped heading"),
        ("A Manual", "Wrapped heading over two lines"),
        ("A Manual", "Wrapped heading over two lines"),
    ]


def _number_free(title: str) -> str:
    return re.sub(r"^(?:Appendix )?[A-Z0-9]+(?:\.\d+)*\s+", "", title)


def test_font_cues_recover_a_real_manuals_outline(rdata_lines: list[Block]) -> None:
    """R-data.pdf with its outline ignored: the headings found from its fonts are the outline's."""
    pdf = pypdfium2.PdfDocument(RDOCS / "R-data.pdf")
    try:
        outline = read_outline(pdf)
        found = headings_from_fonts(rdata_lines, line_fonts(pdf, rdata_lines))
    finally:
        pdf.close()
    headings = {_number_free(b.headings[-1]) for b in found if b.headings}
    titles = {_number_free(entry.title) for entry in outline}
    recovered = titles & headings
    assert len(recovered) >= 0.9 * len(titles), sorted(titles - headings)


@pytest.fixture(scope="module")
def rdata_lines() -> list[Block]:
    data = (RDOCS / "R-data.pdf").read_bytes()
    return content_lines(
        list(docling_blocks(_docling_convert(data, "R-data.pdf", "pdf", PdfConfig())))
    )


# ----------------------------------------------------------------------------- whole files


@pytest.fixture(scope="module")
def rdata() -> Document:
    return convert_file(RDOCS / "R-data.pdf", "R-data.pdf", PdfConfig())


def test_a_real_pdf_converts_to_sections_under_its_outline_with_pages(rdata: Document) -> None:
    assert rdata.title == "R Data Import/Export"
    by_heading = {s.title_path[-1]: s for s in reversed(rdata.sections)}
    excel = by_heading["9 Reading Excel spreadsheets"]
    assert excel.page == 36 and excel.text.startswith("9 Reading Excel spreadsheets\n\n")
    fixed = by_heading["Fixed-width-format files"]
    assert fixed.title_path == (
        "R Data Import/Export",
        "2 Spreadsheet-like data",
        "Fixed-width-format files",
    )
    assert fixed.page == 15
    assert all(section.page is not None for section in rdata.sections)
    text = "\n".join(section.text for section in rdata.sections)
    assert not any(is_contents_line(paragraph) for paragraph in text.split("\n"))
    assert "read.table . . ." not in text  # the index pages
    assert "Chapter 2: Spreadsheet-like data" not in text  # no running heads


def test_a_pdf_without_an_outline_gets_headings_from_its_fonts() -> None:
    mixed = Path(__file__).resolve().parents[1] / "samples/research/mixed"
    document = convert_file(mixed / "qdrant-hnsw-notes.pdf", "notes.pdf", PdfConfig())
    assert [s.title_path[1:] for s in document.sections][1:] == [
        ("Collections and points",),
        ("Exact search",),
        ("The HNSW graph",),
        ("Build parameters",),
        ("Measuring recall",),
        ("Running without a server",),
    ]
    assert [s.page for s in document.sections][1:] == [1, 1, 2, 2, 3, 3]


def test_a_real_html_manual_keeps_its_headings() -> None:
    document = convert_file(RDOCS / "R-lang.html", "R-lang.html", PdfConfig())
    assert document.title == "R Language Definition"
    paths = {s.title_path for s in document.sections}
    assert (
        "R Language Definition",
        "4 Functions",
        "4.3 Evaluation",
        "4.3.3 Argument evaluation",
    ) in paths
    assert all(s.page is None for s in document.sections)


def test_a_metadata_title_that_names_a_file_is_not_taken() -> None:
    assert pdf_title(outlined_pdf([("x", "/Fit")], title="Field notes")) == "Field notes"
    assert pdf_title(outlined_pdf([("x", "/Fit")], title="Microsoft Word - notes.docx")) is None


def test_the_title_comes_from_the_metadata_or_the_title_page() -> None:
    assert pdf_title((RDOCS / "R-FAQ.pdf").read_bytes()) == "R FAQ"  # small capitals, one line
    mixed = Path(__file__).resolve().parents[1] / "samples/research/mixed"
    notes = (mixed / "qdrant-hnsw-notes.pdf").read_bytes()
    assert pdf_title(notes) == "Vector search with Qdrant: notes on the HNSW index"
