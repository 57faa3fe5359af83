"""research.ingest: PDF, DOCX, HTML, Markdown and text files through Docling into sections; each
bad file reported by name and skipped."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from semops.config.research import PdfConfig
from semops.errors import SemopsError
from semops.research.documents import Section
from semops.research.ingest.files import (
    IngestError,
    IngestFailure,
    convert_file,
    convert_files,
    discover,
)
from semops.research.ingest.sections import Block, Box, assemble_sections

NATIVE = PdfConfig()

# ---------------------------------------------------------------- file makers


def pdf_bytes(pages: list[list[str]]) -> bytes:
    """A minimal PDF with a text layer: one Helvetica 12 pt line per string, 14 pt apart (an
    empty string leaves a blank line)."""
    n_pages = len(pages)
    font = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode(),
    ]
    for i, lines in enumerate(pages):
        shown = " ".join(f"({_pdf_escape(line)}) Tj T*" for line in lines)
        content = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(_stream(content))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf_file(objects, b"")


def encrypted_pdf_bytes(text: str, user_password: bytes) -> bytes:
    """A one-page PDF encrypted with the standard security handler (RC4, 40-bit, revision 2)
    that opens only with `user_password` (PDF 32000-1:2008, 7.6.3, algorithms 2, 3 and 4)."""
    padding = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
    file_id = hashlib.md5(b"semops test").digest()
    permissions = -44

    def padded(password: bytes) -> bytes:
        return (password + padding)[:32]

    owner_entry = _rc4(hashlib.md5(padded(b"owner")).digest()[:5], padded(user_password))
    key = hashlib.md5(
        padded(user_password) + owner_entry + struct.pack("<i", permissions) + file_id
    ).digest()[:5]
    user_entry = _rc4(key, padding)
    content = f"BT /F1 12 Tf 72 720 Td ({_pdf_escape(text)}) Tj ET".encode()
    content_key = hashlib.md5(key + struct.pack("<i", 4)[:3] + b"\0\0").digest()[:10]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        _stream(_rc4(content_key, content)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (owner_entry.hex().encode(), user_entry.hex().encode(), permissions),
    ]
    trailer = b" /Encrypt 6 0 R /ID [<%s> <%s>]" % (file_id.hex().encode(), file_id.hex().encode())
    return _pdf_file(objects, trailer)


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _stream(content: bytes) -> bytes:
    return b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"


def _pdf_file(objects: list[bytes], trailer_extra: bytes) -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        trailer_extra,
        xref,
    )
    return bytes(out)


def write_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Field Guide", level=0)
    document.add_paragraph("Why this guide exists.")
    document.add_heading("Setup", level=1)
    document.add_paragraph("Install the tools first.")
    document.add_paragraph("a virtual environment", style="List Bullet")
    document.add_heading("On Linux", level=2)
    document.add_paragraph("Use the package manager.")
    table = document.add_table(rows=2, cols=2)
    for row, cells in enumerate([("tool", "version"), ("dvc", "3.67")]):
        for column, text in enumerate(cells):
            table.cell(row, column).text = text
    document.add_heading("Usage", level=1)
    document.add_paragraph("Run the pipeline.")
    document.save(str(path))


# ---------------------------------------------------------------- formats


@pytest.fixture(scope="module")
def two_page_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pdf") / "notes.pdf"
    path.write_bytes(
        pdf_bytes(
            [
                ["Vectors live in collections,", "each with a fixed size.", "", "Points have ids."],
                ["The second page talks about", "the HNSW graph."],
            ]
        )
    )
    return path


def test_pdf_sections_carry_their_page_and_lines_join_into_paragraphs(two_page_pdf: Path) -> None:
    doc = convert_file(two_page_pdf, "papers/notes.pdf", NATIVE)

    assert doc.source == "papers/notes.pdf"
    assert doc.title == "notes"  # no outline, no metadata title, one font: the file's stem
    assert doc.sha256 == hashlib.sha256(two_page_pdf.read_bytes()).hexdigest()
    assert doc.sections == (
        Section(
            title_path=("notes",),
            text="Vectors live in collections, each with a fixed size.\n\nPoints have ids.",
            page=1,
        ),
        Section(title_path=("notes",), text="The second page talks about the HNSW graph.", page=2),
    )


def test_conversion_is_deterministic(two_page_pdf: Path, tmp_path: Path) -> None:
    write_docx(tmp_path / "guide.docx")
    for path in (two_page_pdf, tmp_path / "guide.docx"):
        assert convert_file(path, "x", NATIVE) == convert_file(path, "x", NATIVE)


def test_docx_headings_become_title_paths(tmp_path: Path) -> None:
    write_docx(tmp_path / "guide.docx")

    doc = convert_file(tmp_path / "guide.docx", "guide.docx", NATIVE)

    assert doc.title == "Field Guide"
    assert [(s.title_path, s.page) for s in doc.sections] == [
        (("Field Guide",), None),
        (("Field Guide", "Setup"), None),
        (("Field Guide", "Setup", "On Linux"), None),
        (("Field Guide", "Usage"), None),
    ]
    assert doc.sections[1].text == "Install the tools first.\n\n- a virtual environment"
    assert doc.sections[2].text == (  # the table as Markdown
        "Use the package manager.\n\n"
        "| tool   |   version |\n|--------|-----------|\n| dvc    |      3.67 |"
    )


def test_markdown_nesting_inline_markup_and_code(tmp_path: Path) -> None:
    path = tmp_path / "fusion.md"
    path.write_text(
        "# Rank fusion\n\nFusion merges *ranked* lists, see [RRF](https://example.org).\n\n"
        "## Formula\n\nEach list adds 1 / (k + rank).\n\n```python\nscore = 1 / (k + rank)\n```\n\n"
        "### Choosing k\n\n- k = 60 is common\n- smaller k favours the top\n\n"
        "## Pitfalls\n\nA weak ranker pulls good results down.\n"
    )

    doc = convert_file(path, "fusion.md", NATIVE)

    assert doc.title == "Rank fusion"
    assert [(s.title_path, s.text) for s in doc.sections] == [
        (("Rank fusion",), "Fusion merges ranked lists, see RRF ."),
        (
            ("Rank fusion", "Formula"),
            "Each list adds 1 / (k + rank).\n\nscore = 1 / (k + rank)",
        ),
        (
            ("Rank fusion", "Formula", "Choosing k"),
            "- k = 60 is common\n- smaller k favours the top",
        ),
        (("Rank fusion", "Pitfalls"), "A weak ranker pulls good results down."),
    ]


SUGAR = "\u0421\u0430\u0445\u0430\u0440"  # "sugar" in Russian: KOI8-R, not Latin


def test_html_utf8_and_declared_charsets(tmp_path: Path) -> None:
    page = "<html><head>{meta}<title>Site - Desserts</title></head><body><h1>Crème brûlée</h1>"
    page += f"<p>A custard, 5 €.</p><h2>{SUGAR}</h2><p>Caramelised on top.</p></body>"
    (tmp_path / "utf8.html").write_text(page.format(meta=""), encoding="utf-8")
    (tmp_path / "latin.htm").write_bytes(
        # Browsers read iso-8859-1 as windows-1252, whose 0x80 is the euro sign.
        page.format(meta='<meta charset="iso-8859-1">').replace(SUGAR, "Sugar").encode("cp1252")
    )
    (tmp_path / "koi8.html").write_bytes(
        page.format(meta='<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">')
        .replace("Crème brûlée", "Crem brulee")
        .replace("€", "EUR")
        .encode("koi8-r")
    )

    utf8 = convert_file(tmp_path / "utf8.html", "utf8.html", NATIVE)
    latin = convert_file(tmp_path / "latin.htm", "latin.htm", NATIVE)
    koi8 = convert_file(tmp_path / "koi8.html", "koi8.html", NATIVE)

    assert utf8.title == "Crème brûlée"
    assert [(s.title_path, s.text) for s in utf8.sections] == [
        (("Crème brûlée",), "A custard, 5 €."),
        (("Crème brûlée", SUGAR), "Caramelised on top."),
    ]
    assert [(s.title_path, s.text) for s in latin.sections] == [
        (("Crème brûlée",), "A custard, 5 €."),
        (("Crème brûlée", "Sugar"), "Caramelised on top."),
    ]
    assert koi8.sections[1].title_path == ("Crem brulee", SUGAR)

    # A UTF-16 label on bytes read as ASCII is a mistake; browsers read such a page as UTF-8.
    (tmp_path / "utf16.html").write_bytes(b'<meta charset="utf-16"><h1>Plain</h1><p>Text.</p>')
    utf16 = convert_file(tmp_path / "utf16.html", "utf16.html", NATIVE)
    assert utf16.sections == (Section(("Plain",), "Text."),)


def test_html_title_tag_is_the_title_when_the_body_has_no_heading(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text("<html><head><title>Release notes</title></head><body><p>Fixed.</p></body>")

    doc = convert_file(path, "page.html", NATIVE)

    assert doc.title == "Release notes"
    assert doc.sections == (Section(title_path=("Release notes",), text="Fixed."),)


def test_plain_text_keeps_its_characters_and_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "metrics.txt"
    path.write_bytes(
        b"\xef\xbb\xbfRecall@10\r\n=========\r\n\r\nShare of *relevant* items\r\nin the top_10.  "
        b"\r\n\r\n\r\n# not a heading\r\n"
    )

    doc = convert_file(path, "metrics.txt", NATIVE)

    assert doc.title == "metrics"
    assert doc.sections == (
        Section(
            title_path=("metrics",),
            text="Recall@10\n=========\n\nShare of *relevant* items\nin the top_10."
            "\n\n# not a heading",
        ),
    )


def test_discover_lists_supported_files_sorted_without_hidden_ones(tmp_path: Path) -> None:
    for name in ["b.md", "a/z.PDF", "a/y.htm", "c.txt", "d.csv", ".hidden.md", ".git/x.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")

    found = discover(tmp_path)

    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/y.htm",
        "a/z.PDF",
        "b.md",
        "c.txt",
    ]
    with pytest.raises(SemopsError, match="not a folder"):
        discover(tmp_path / "b.md")


# ---------------------------------------------------------------- bad input


def test_a_batch_reports_each_bad_file_by_name_and_converts_the_rest(
    tmp_path: Path, two_page_pdf: Path
) -> None:
    files: dict[str, bytes] = {
        "good.md": b"# Good\n\nKept.\n",
        "corrupt.pdf": pdf_bytes([["cut short"]])[:200],
        "encrypted.pdf": encrypted_pdf_bytes("Top secret.", user_password=b"secret"),
        "scanned.pdf": pdf_bytes([[]]),
        "empty.docx": b"",
        "broken.docx": b"PK\x03\x04 not really a zip archive",
        "binary.md": b"# Title\n\x00\x01\x02\x00",
        "latin1.txt": "Café".encode("latin-1"),
        "no-charset.html": "<p>Café</p>".encode("latin-1"),
        "wrong-charset.html": b'<meta charset="utf-8"><p>Caf\xe9</p>',
        "blank.md": b"  \n\n \n",
        "notes.xyz": b"text",
        "also-good.txt": b"Still converted.",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    items = [(tmp_path / name, f"in/{name}") for name in files]
    items.insert(1, (two_page_pdf, "in/notes.pdf"))

    docs, failures = convert_files(items, NATIVE)

    assert [d.source for d in docs] == ["in/good.md", "in/notes.pdf", "in/also-good.txt"]
    reasons = {failure.source: failure.reason for failure in failures}
    assert list(reasons) == [
        source
        for _, source in items
        if source not in {"in/good.md", "in/notes.pdf", "in/also-good.txt"}
    ]
    assert reasons["in/corrupt.pdf"].startswith("not a readable PDF (PDFium: ")
    assert reasons["in/encrypted.pdf"] == "encrypted PDF: it needs a password to open"
    assert reasons["in/scanned.pdf"] == "no text found (a scanned PDF needs OCR)"
    assert reasons["in/empty.docx"] == "empty file"
    assert reasons["in/broken.docx"] == "not a DOCX file: File is not a zip file"
    assert reasons["in/binary.md"] == "binary content: NUL byte at offset 8"
    assert reasons["in/latin1.txt"] == "not UTF-8 text: byte 0xe9 at offset 3"
    assert reasons["in/no-charset.html"] == (
        "HTML is not UTF-8 (byte 0xe9 at offset 6) and declares no charset"
    )
    assert reasons["in/wrong-charset.html"] == (
        "HTML is not UTF-8 (byte 0xe9 at offset 28) and its declared charset 'utf-8' does not "
        "decode it either"
    )
    assert reasons["in/blank.md"] == "no text found"
    assert reasons["in/notes.xyz"].startswith("unsupported file type '.xyz' (supported: .docx,")
    assert all("\n" not in reason for reason in reasons.values())


def test_the_encrypted_pdf_is_a_real_one_that_opens_with_its_password() -> None:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(encrypted_pdf_bytes("Top secret.", b"secret"), password="secret")
    assert pdf[0].get_textpage().get_text_range() == "Top secret."


def test_convert_file_raises_an_error_naming_the_source(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_bytes(b"\xff\xfe\x00")  # a UTF-16 mark, then half a character

    with pytest.raises(IngestError, match=r"^notes/x\.md: starts with a utf-16 byte") as caught:
        convert_file(tmp_path / "x.md", "notes/x.md", NATIVE)
    assert (caught.value.source, caught.value.reason) == (
        "notes/x.md",
        "starts with a utf-16 byte-order mark but is not valid utf-16",
    )


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    docs, failures = convert_files([(tmp_path / "gone.pdf", "gone.pdf")], NATIVE)
    assert docs == []
    assert failures == [
        IngestFailure("gone.pdf", f"cannot read {tmp_path / 'gone.pdf'}: No such file or directory")
    ]


# ---------------------------------------------------------------- the standard pipeline


def test_standard_pipeline_needs_local_models(
    tmp_path: Path, two_page_pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored after the test
    items = [(two_page_pdf, "notes.pdf")]
    with pytest.raises(SemopsError, match=r"^research\.pdf\.artifacts_path must name a folder"):
        convert_files(items, PdfConfig(pipeline="standard"))
    with pytest.raises(SemopsError, match=r"^research\.pdf\.artifacts_path: '.*nowhere' is not a"):
        convert_files(
            items, PdfConfig(pipeline="standard", artifacts_path=str(tmp_path / "nowhere"))
        )
    with pytest.raises(
        SemopsError,
        match=r"^research\.pdf\.artifacts_path: '.*' lacks Docling's PDF models: Model "
        r"'docling-project/docling-layout-heron' not found",
    ):
        convert_files(items, PdfConfig("standard", artifacts_path=str(tmp_path)))
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # nothing was to be fetched from the hub


# ---------------------------------------------------------------- sections from blocks


def test_native_pdf_lines_group_into_paragraphs_by_their_boxes() -> None:
    def line(text: str, top: float, left: float = 72.0, page: int = 1) -> Block:
        return Block(headings=(), text=text, page=page, box=Box(left, top, top - 10))

    blocks = [
        line("First line", 700),
        line("continues here.", 686),  # 4 pt apart: the same paragraph
        line("After a blank line.", 658),  # 18 pt apart
        line("Indented first line", 644, left=96),
        line("Top of the next column", 700, left=320),
        line("Next page", 700, page=2),
    ]

    assert assemble_sections("T", blocks, native_lines=True) == [
        Section(
            ("T",),
            "First line continues here.\n\nAfter a blank line.\n\nIndented first line\n\n"
            "Top of the next column",
            page=1,
        ),
        Section(("T",), "Next page", page=2),
    ]
    # Blocks from a layout-aware pipeline are paragraphs already.
    assert assemble_sections("T", blocks[:2]) == [
        Section(("T",), "First line\n\ncontinues here.", page=1)
    ]


def test_sections_split_at_headings_skip_empty_text_and_do_not_repeat_the_title() -> None:
    blocks = [
        Block(headings=("Guide",), text="intro"),
        Block(headings=("Guide", "Setup"), text="  "),
        Block(headings=("Guide", "Setup", "Linux"), text="apt"),
        Block(headings=("Guide", "Setup", "Linux"), text="dnf"),
        Block(headings=("Appendix",), text="more"),
    ]

    assert assemble_sections("Guide", blocks) == [
        Section(("Guide",), "intro"),
        Section(("Guide", "Setup", "Linux"), "apt\n\ndnf"),
        Section(("Guide", "Appendix"), "more"),
    ]
