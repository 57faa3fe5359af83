"""Local files to Documents: PDF, DOCX, HTML and Markdown through Docling, plain text as is.

Each file becomes a `Document` of sections: the text under one heading, with its heading path
and, for PDFs, the page it starts on. A file that cannot be read is reported by name with a
one-line reason and skipped; the rest of a batch converts.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from semops.config.research import PdfConfig, ResearchConfigError
from semops.errors import SemopsError
from semops.research.documents import Document, Section

if TYPE_CHECKING:
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter
    from docling_core.types.doc import DoclingDocument

log = logging.getLogger(__name__)

# Suffix -> how the file is read. Plain text is split into paragraphs here: Docling reads .txt
# as Markdown, which would turn `*`, `_`, `#` and indentation in plain prose into markup.
SUPPORTED_SUFFIXES: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
}

# Byte-order marks settle the encoding of a text file before anything else; UTF-32 LE first, as
# its mark starts with UTF-16 LE's.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Browsers read these declared labels as windows-1252 (WHATWG Encoding), and pages that declare
# them often hold its curly quotes in 0x80-0x9F.
_WINDOWS_1252_LABELS = frozenset({"iso8859-1", "ascii"})

# Native PDF text comes as one item per line: a vertical gap wider than this share of the line
# height, or a first line indented by more than a line height, starts a new paragraph. Lines set
# 1.5 apart leave a gap of about 0.6 of their height; a blank line between paragraphs, over 1.
_PARAGRAPH_GAP = 1.0

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


class IngestError(SemopsError):
    """One source could not be converted; `reason` is one line without the source's name."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class IngestFailure:
    source: str
    reason: str


class _Unreadable(Exception):
    """Why a file's bytes cannot be converted (the caller adds the file's name)."""


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


def discover(folder: Path) -> list[Path]:
    """The supported files under `folder`, recursively, sorted; hidden files and folders skipped."""
    if not folder.is_dir():
        raise SemopsError(f"{folder}: not a folder")
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found.extend(
            Path(root) / name
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES
        )
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def convert_files(
    items: Sequence[tuple[Path, str]], pdf: PdfConfig
) -> tuple[list[Document], list[IngestFailure]]:
    """Convert (path, source) pairs in order; each file that fails is reported and skipped."""
    from tqdm import tqdm

    documents: list[Document] = []
    failures: list[IngestFailure] = []
    for path, source in tqdm(items, desc="ingest", unit="file"):
        try:
            documents.append(convert_file(path, source, pdf))
        except IngestError as exc:
            failures.append(IngestFailure(exc.source, exc.reason))
    return documents, failures


def convert_file(path: Path, source: str, pdf: PdfConfig) -> Document:
    """Convert one file; `source` is the name it is cited by. Raises IngestError."""
    kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise IngestError(
            source, f"unsupported file type {path.suffix or '(none)'!r} (supported: {supported})"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(source, f"cannot read {path}: {exc.strerror or exc}") from exc
    if not data:
        raise IngestError(source, "empty file")
    try:
        title, sections = _convert_bytes(data, kind, path.name, pdf)
    except _Unreadable as exc:
        raise IngestError(source, str(exc)) from exc
    if not sections:
        hint = " (a scanned PDF needs OCR)" if kind == "pdf" else ""
        raise IngestError(source, f"no text found{hint}")
    return Document(
        source=source,
        title=title or path.stem,
        sha256=hashlib.sha256(data).hexdigest(),
        sections=tuple(sections),
    )


def _convert_bytes(
    data: bytes, kind: str, name: str, pdf: PdfConfig
) -> tuple[str | None, list[Section]]:
    if kind == "text":
        stem = Path(name).stem
        return stem, text_sections(stem, decode_text(data))
    if kind == "markdown":
        data = decode_text(data).encode("utf-8")
    elif kind == "html":
        # A UTF-8 byte-order mark outranks any <meta charset> the page declares, so Docling's
        # HTML parser reads the text exactly as decoded here.
        data = codecs.BOM_UTF8 + decode_html(data).encode("utf-8")
    document = _docling_convert(data, name, kind, pdf)
    title = document_title(document)
    native_lines = kind == "pdf" and pdf.pipeline == "native"
    return title, assemble_sections(
        title or Path(name).stem, docling_blocks(document), native_lines=native_lines
    )


def decode_text(data: bytes) -> str:
    """Text file bytes as str: a byte-order mark's encoding, else strict UTF-8."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise _Unreadable(
                    f"starts with a {encoding} byte-order mark but is not valid {encoding}"
                ) from exc
    _refuse_binary(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from exc


def decode_html(data: bytes) -> str:
    """HTML bytes as str: a byte-order mark, else the declared charset, else UTF-8.

    A page that is not valid UTF-8 and declares no charset that decodes it is refused rather
    than guessed at: a wrong guess indexes mojibake.
    """
    from bs4.dammit import EncodingDetector

    if any(data.startswith(bom) for bom, _ in _BOMS):
        return decode_text(data)
    _refuse_binary(data)
    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    if declared:
        text = _decode_declared(data, declared)
        if text is not None:
            return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        declaration = (
            f"its declared charset {declared!r} does not decode it either"
            if declared
            else "declares no charset"
        )
        raise _Unreadable(
            f"HTML is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}) and "
            f"{declaration}"
        ) from exc


def _refuse_binary(data: bytes) -> None:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _Unreadable(f"binary content: NUL byte at offset {nul}")


def _decode_declared(data: bytes, declared: str) -> str | None:
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        return None
    if codec.startswith(("utf-16", "utf-32")):  # bytes read as ASCII declared that: WHATWG
        return None  # reads such a page as UTF-8
    candidates = ["cp1252", codec] if codec in _WINDOWS_1252_LABELS else [codec]
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except UnicodeDecodeError:
            continue
    return None


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


def continues_paragraph(previous: Box, line: Box) -> bool:
    """Whether a PDF text line continues the paragraph of the line before it."""
    height = max(min(previous.top - previous.bottom, line.top - line.bottom), 1.0)
    if line.top > previous.top + height / 2:  # moved up: the next column or a new region
        return False
    if previous.bottom - line.top > _PARAGRAPH_GAP * height:
        return False
    return line.left - previous.left <= height


def document_title(document: DoclingDocument) -> str | None:
    """The first title or heading in reading order, else a title outside the body (HTML's
    <title>), else None."""
    from docling_core.types.doc import SectionHeaderItem, TitleItem

    for item, _ in document.iterate_items():
        if isinstance(item, TitleItem | SectionHeaderItem) and item.text.strip():
            return " ".join(item.text.split())
    for text_item in document.texts:
        if isinstance(text_item, TitleItem) and text_item.text.strip():
            return " ".join(text_item.text.split())
    return None


def docling_blocks(document: DoclingDocument) -> Iterator[Block]:
    """The document's paragraphs, lists, tables and code in reading order, as plain text.

    Docling's HierarchicalChunker does the walk: it tracks the enclosing headings and
    serializes list groups, inline-formatted runs and tables into one text each.
    """
    from docling_core.transforms.chunker.hierarchical_chunker import (
        ChunkingSerializerProvider,
        DocChunk,
        HierarchicalChunker,
    )
    from docling_core.transforms.serializer.plain_text import PlainTextDocSerializer

    class PlainTextProvider(ChunkingSerializerProvider):
        # Plain text for the embedder: no emphasis markers or link URLs; tables as Markdown.
        def get_serializer(self, doc: DoclingDocument) -> PlainTextDocSerializer:
            return PlainTextDocSerializer(doc=doc)

    for chunk in HierarchicalChunker(serializer_provider=PlainTextProvider()).chunk(document):
        assert isinstance(chunk, DocChunk)
        page: int | None = None
        box: Box | None = None
        for item in chunk.meta.doc_items:
            if item.prov:
                prov = item.prov[0]
                page = prov.page_no
                if page in document.pages:
                    bbox = prov.bbox.to_bottom_left_origin(
                        page_height=document.pages[page].size.height
                    )
                    box = Box(left=bbox.l, top=bbox.t, bottom=bbox.b)
                break
        yield Block(
            headings=tuple(" ".join(h.split()) for h in chunk.meta.headings or ()),
            text=chunk.text,
            page=page,
            box=box,
        )


def _docling_convert(data: bytes, name: str, kind: str, pdf: PdfConfig) -> DoclingDocument:
    from docling.datamodel.base_models import ConversionStatus, DocumentStream

    converter = _converter(pdf)
    try:
        result = converter.convert(
            DocumentStream(name=name, stream=BytesIO(data)), raises_on_error=False
        )
    except Exception as exc:  # Docling's parsers raise many kinds on malformed input
        raise _Unreadable(_why_unreadable(data, kind, exc)) from exc
    messages = [error.error_message for error in result.errors]
    if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
        detail = messages[0] if messages else f"conversion {result.status.value}"
        raise _Unreadable(_why_unreadable(data, kind, detail))
    if result.status == ConversionStatus.PARTIAL_SUCCESS:
        log.warning("%s: converted in part: %s", name, _one_line("; ".join(messages)))
    return result.document


def _why_unreadable(data: bytes, kind: str, detail: object) -> str:
    """A one-line reason: Docling's names only the file's hash, so PDF and DOCX files are
    diagnosed here first."""
    if kind == "docx":
        import zipfile

        try:
            with zipfile.ZipFile(BytesIO(data)) as archive:
                if "word/document.xml" not in archive.namelist():
                    return "not a DOCX file: the archive has no word/document.xml"
        except zipfile.BadZipFile as exc:
            return f"not a DOCX file: {exc}"
    if kind == "pdf":
        import pypdfium2

        try:
            pypdfium2.PdfDocument(data).close()
        except pypdfium2.PdfiumError as exc:
            if "password" in str(exc).lower():
                return "encrypted PDF: it needs a password to open"
            pdfium_says = re.search(r"PDFium: [^)]*", str(exc))
            return f"not a readable PDF ({pdfium_says[0] if pdfium_says else _one_line(str(exc))})"
    return _one_line(f"Docling could not convert it: {detail}")


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return " ".join(first.split())


@functools.cache
def _converter(pdf: PdfConfig) -> DocumentConverter:
    """One converter per process and PDF setting: building it loads Docling's pipelines."""
    if pdf.pipeline == "standard":
        # Nothing may be fetched from the Hugging Face hub at run time.
        os.environ["HF_HUB_OFFLINE"] = "1"
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter, PdfFormatOption

    allowed = [InputFormat.PDF, InputFormat.DOCX, InputFormat.HTML, InputFormat.MD]
    if pdf.pipeline == "native":
        from docling.datamodel.pipeline_options import NativePdfPipelineOptions
        from docling.pipeline.native_pdf_pipeline import NativePdfPipeline

        native = NativePdfPipelineOptions(generate_page_images=False, generate_picture_images=False)
        return DocumentConverter(
            allowed_formats=allowed,
            format_options={
                InputFormat.PDF: PdfFormatOption(
                    pipeline_cls=NativePdfPipeline, pipeline_options=native
                )
            },
        )
    return _standard_converter(pdf.artifacts_path, allowed)


def _standard_converter(
    artifacts_path: str | None, allowed: list[InputFormat]
) -> DocumentConverter:
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import PdfPipelineOptions
    from docling.document_converter import DocumentConverter, PdfFormatOption

    key = "research.pdf.artifacts_path"
    if artifacts_path is None:
        raise ResearchConfigError(
            f"{key} must name a folder holding Docling's layout models when "
            "research.pdf.pipeline is 'standard' (nothing is downloaded at run time)"
        )
    if not Path(artifacts_path).is_dir():
        raise ResearchConfigError(f"{key}: {artifacts_path!r} is not a folder")
    # OCR is off: its models are a separate download, and the text layer is read directly.
    options = PdfPipelineOptions(
        artifacts_path=artifacts_path, do_ocr=False, generate_page_images=False
    )
    converter = DocumentConverter(
        allowed_formats=allowed,
        format_options={InputFormat.PDF: PdfFormatOption(pipeline_options=options)},
    )
    try:
        converter.initialize_pipeline(InputFormat.PDF)
    except Exception as exc:  # Docling raises FileNotFoundError, RuntimeError, OSError here
        raise ResearchConfigError(
            f"{key}: {artifacts_path!r} lacks Docling's PDF models: {_one_line(str(exc))}"
        ) from exc
    return converter
