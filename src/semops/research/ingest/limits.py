"""Bounds on one file before the ingest reads or converts it (research.ingest): its size on
disk, a PDF's page count, what a DOCX's zip archive holds and expands to. A file past one is
refused with the key it exceeds; the caller skips it by name and converts the others."""

from __future__ import annotations

import zipfile
from io import BytesIO
from pathlib import Path

from semops.config.research import IngestConfig


class OverLimit(Exception):
    """A file past one of the bounds; the message names the key, the bound and the value."""


def _past(key: str, limit: int, found: str) -> OverLimit:
    return OverLimit(f"{found}, over research.ingest.{key} ({limit})")


def check_size(path: Path, limits: IngestConfig) -> int:
    """The file's size on disk; OverLimit when it is larger than max_file_bytes (checked before
    the file is read or hashed)."""
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise _past("max_file_bytes", limits.max_file_bytes, f"{size} bytes")
    return size


def read_bounded(path: Path, limits: IngestConfig) -> bytes:
    """The file's bytes; a file larger than max_file_bytes is refused before it is read (and
    one that grew meanwhile, without reading more than one byte past the bound)."""
    check_size(path, limits)
    with path.open("rb") as handle:
        data = handle.read(limits.max_file_bytes + 1)
    if len(data) <= limits.max_file_bytes:
        return data
    raise _past("max_file_bytes", limits.max_file_bytes, f"{len(data)} bytes")


def check_contents(data: bytes, kind: str, limits: IngestConfig) -> None:
    """Refuse a PDF of too many pages, or a DOCX whose archive has too many members or
    expands past max_expanded_bytes, before Docling opens it. A file that cannot even be opened
    here passes: the conversion then says why it is unreadable."""
    if kind == "pdf":
        pages = _pdf_pages(data)
        if pages is not None and pages > limits.max_pdf_pages:
            raise _past("max_pdf_pages", limits.max_pdf_pages, f"{pages} pages")
    elif kind == "docx":
        try:
            with zipfile.ZipFile(BytesIO(data)) as archive:
                members = archive.infolist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return
        if len(members) > limits.max_zip_members:
            raise _past("max_zip_members", limits.max_zip_members, f"{len(members)} zip members")
        # The sizes the archive's directory declares bound what is decompressed: Python's
        # zipfile, which python-docx (Docling's DOCX reader) reads through, stops a member at its
        # declared size and then fails its CRC, so a member that lies cannot expand further.
        expanded = sum(member.file_size for member in members)
        if expanded > limits.max_expanded_bytes:
            raise _past(
                "max_expanded_bytes", limits.max_expanded_bytes, f"expands to {expanded} bytes"
            )


def _pdf_pages(data: bytes) -> int | None:
    """The page count from the PDF's page tree (no page is parsed); None when it cannot be
    opened (encrypted, damaged)."""
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError:
        return None
    try:
        return len(pdf)
    finally:
        pdf.close()
