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

from semops.config.research import IngestConfig, PdfConfig
from semops.errors import ConfigError, SemopsError
from semops.research.documents import Document, Section
from semops.research.ingest import pdf_structure
from semops.research.ingest.charset import CharsetError, bom_decoded, decode_html, refuse_binary
from semops.research.ingest.limits import OverLimit, check_contents, read_bounded
from semops.research.ingest.pdf_structure import pdf_title
from semops.research.ingest.sections import Block, Box, assemble_sections, text_sections

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
    items: Sequence[tuple[Path, str]], pdf: PdfConfig, limits: IngestConfig | None = None
) -> tuple[list[Document], list[IngestFailure]]:
    """Convert (path, source) pairs in order; each file that fails, or is past one of the
    `limits` (research.ingest), is reported and skipped."""
    from tqdm import tqdm

    documents: list[Document] = []
    failures: list[IngestFailure] = []
    for path, source in tqdm(items, desc="ingest", unit="file"):
        try:
            documents.append(convert_file(path, source, pdf, limits))
        except IngestError as exc:
            failures.append(IngestFailure(exc.source, exc.reason))
    return documents, failures


def convert_file(
    path: Path, source: str, pdf: PdfConfig, limits: IngestConfig | None = None
) -> Document:
    """Convert one file; `source` is the name it is cited by. Raises IngestError, also for a
    file past one of the `limits` (research.ingest; by default its defaults)."""
    limits = limits or IngestConfig()
    kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise IngestError(
            source, f"unsupported file type {path.suffix or '(none)'!r} (supported: {supported})"
        )
    try:
        data = read_bounded(path, limits)
    except OSError as exc:
        raise IngestError(source, f"cannot read {path}: {exc.strerror or exc}") from exc
    except OverLimit as exc:
        raise IngestError(source, str(exc)) from exc
    if not data:
        raise IngestError(source, "empty file")
    try:
        check_contents(data, kind, limits)
        title, sections = _convert_bytes(data, kind, path.name, pdf)
    except (_Unreadable, CharsetError, OverLimit) as exc:
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
        data = codecs.BOM_UTF8 + decode_html(data, strict=True).encode("utf-8")
    document = _docling_convert(data, name, kind, pdf)
    title = document_title(document)
    blocks: Iterable[Block] = docling_blocks(document)
    native_lines = kind == "pdf" and pdf.pipeline == "native"
    if kind == "pdf":
        title = pdf_title(data) or title
        blocks = pdf_structure.structured_blocks(data, list(blocks), native_lines)
    return title, assemble_sections(title or Path(name).stem, blocks, native_lines=native_lines)


def decode_text(data: bytes) -> str:
    """Text file bytes as str: a byte-order mark's encoding, else strict UTF-8."""
    text = bom_decoded(data)
    if text is not None:
        return text
    refuse_binary(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from exc


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
        raise ConfigError(
            f"{key} must name a folder holding Docling's layout models when "
            "research.pdf.pipeline is 'standard' (nothing is downloaded at run time)"
        )
    if not Path(artifacts_path).is_dir():
        raise ConfigError(f"{key}: {artifacts_path!r} is not a folder")
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
        raise ConfigError(
            f"{key}: {artifacts_path!r} lacks Docling's PDF models: {_one_line(str(exc))}"
        ) from exc
    return converter
