"""Unbounded inputs to the ingest: a file past one of research.ingest's limits (bytes on disk,
PDF pages, what a DOCX's zip expands to, its member count) is skipped by name with the key it
exceeds, before Docling opens it; the other files of the batch are indexed."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from projectkit import REPO

from semops.config.research import ResearchConfig
from semops.config.validation import build
from semops.research.ingest.files import SUPPORTED_SUFFIXES
from semops.research.pipeline import load_documents

SAMPLES = REPO / "samples" / "research"


def research(**ingest: Any) -> ResearchConfig:
    """The research section as params.yaml gives it, with research.ingest keys set."""
    raw: dict[str, Any] = {"corpus": str(SAMPLES / "pyfaq"), "documents": "docset"}
    return build(ResearchConfig, {**raw, "ingest": ingest} if ingest else raw, "research")


@pytest.fixture
def docset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty document set in a scratch project (its conversion cache under data/.cache)."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "docset" / "documents"
    folder.mkdir(parents=True)
    (folder / "notes.md").write_text("# Notes\n\nA small document that is always indexed.\n")
    return folder


def write_docx(path: Path, padding_mib: int = 0, members: int = 0) -> Path:
    """A real DOCX, with a member of `padding_mib` MiB of zeros (compressed ~200:1) and
    `members` extra empty members added to its archive."""
    import docx

    document = docx.Document()
    document.add_heading("Bomb", 1)
    document.add_paragraph("Harmless looking text.")
    document.save(str(path))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        if padding_mib:
            with archive.open("word/media/padding.bin", "w", force_zip64=True) as member:
                for _ in range(padding_mib):
                    member.write(bytes(1 << 20))
        for index in range(members):
            archive.writestr(f"word/extra/part{index}.xml", b"")
    return path


def write_pdf(path: Path, pages: int) -> Path:
    import pypdfium2

    pdf = pypdfium2.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(200, 200)
    buffer = io.BytesIO()
    pdf.save(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def skipped(cfg: ResearchConfig) -> tuple[dict[str, str], set[str]]:
    """Run the research-embed stage's ingest: the skipped files with why, the indexed ones."""
    documents, failures = load_documents(cfg)
    return {f.source: f.reason for f in failures}, {d.source for d in documents}


def test_a_zip_bomb_docx_is_skipped_at_the_default_limit(docset: Path) -> None:
    write_docx(docset / "bomb.docx", padding_mib=600)  # 3 MB on disk, 600 MB expanded
    assert (docset / "bomb.docx").stat().st_size < 5_000_000
    failures, indexed = skipped(research())
    assert "research.ingest.max_expanded_bytes" in failures["docset:bomb.docx"]
    assert "docset:notes.md" in indexed


def test_a_docx_of_too_many_members_is_skipped(docset: Path) -> None:
    write_docx(docset / "many.docx", members=60)
    failures, indexed = skipped(research(max_zip_members=50))
    assert "research.ingest.max_zip_members (50)" in failures["docset:many.docx"]
    assert "docset:notes.md" in indexed


def test_a_pdf_of_too_many_pages_is_skipped_before_docling(docset: Path) -> None:
    write_pdf(docset / "huge.pdf", pages=2001)
    failures, indexed = skipped(research())
    assert failures["docset:huge.pdf"].startswith("2001 pages, over research.ingest.max_pdf_pages")
    assert "docset:notes.md" in indexed


def test_a_file_past_max_file_bytes_is_skipped_unread(docset: Path) -> None:
    (docset / "big.txt").write_text("word " * 400)
    failures, indexed = skipped(research(max_file_bytes=1000))
    assert failures["docset:big.txt"] == "2000 bytes, over research.ingest.max_file_bytes (1000)"
    assert "docset:notes.md" in indexed


def test_a_huge_file_is_skipped_before_it_is_hashed(docset: Path) -> None:
    """64 GiB on paper (a sparse file, no disk used): refused by its size, never read, not even
    to look its conversion up in the cache (hashing it would take minutes)."""
    import os
    import time

    with (docset / "huge.txt").open("wb") as handle:
        os.truncate(handle.fileno(), 64 << 30)
    started = time.monotonic()
    failures, indexed = skipped(research())
    assert time.monotonic() - started < 30
    assert "over research.ingest.max_file_bytes" in failures["docset:huge.txt"]
    assert "docset:notes.md" in indexed


def test_a_cached_conversion_is_not_reused_past_a_lower_limit(docset: Path) -> None:
    write_docx(docset / "guide.docx", members=60)
    failures, indexed = skipped(research())
    assert not failures and "docset:guide.docx" in indexed  # converted, and cached
    failures, indexed = skipped(research(max_zip_members=50))
    assert "research.ingest.max_zip_members" in failures["docset:guide.docx"]
    assert "docset:guide.docx" not in indexed


def test_the_bundled_documents_pass_the_default_limits() -> None:
    from semops.research.ingest.limits import check_contents, read_bounded

    limits = research().ingest
    for folder in (SAMPLES / "rdocs" / "documents", SAMPLES / "mixed"):
        for path in sorted(folder.iterdir()):
            data = read_bounded(path, limits)
            check_contents(data, SUPPORTED_SUFFIXES[path.suffix], limits)
