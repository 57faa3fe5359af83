"""Sources added with `semops research add`: local files and folders are copied, web pages are
crawled, into data/raw/research/. Each added origin is one snapshot folder, replaced whole when
the origin is added again and never edited, so the research-embed stage reads only local files
and DVC sees every change."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from semops.errors import SemopsError
from semops.io import atomic_dir, dump_json, write_bytes

MANIFEST = "sources.json"


class SourceError(SemopsError):
    """A source that cannot be added or removed."""


@dataclass(frozen=True)
class SourceEntry:
    origin: str  # the absolute path or the start URL the user gave
    kind: Literal["file", "folder", "web"]
    snapshot: str  # folder relative to the sources root


def snapshot_name(kind: str, origin: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", origin.rsplit("/", 1)[-1] or origin).strip("-")[:40]
    digest = hashlib.sha256(origin.encode()).hexdigest()[:10]
    return f"{'web' if kind == 'web' else 'files'}/{slug or 'source'}-{digest}"


def read_manifest(root: Path) -> list[SourceEntry]:
    path = root / MANIFEST
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())["sources"]
        return [SourceEntry(r["origin"], r["kind"], r["snapshot"]) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{path}: not a sources manifest ({exc})") from exc


def write_manifest(root: Path, entries: list[SourceEntry]) -> None:
    rows = [e.__dict__ for e in sorted(entries, key=lambda e: e.origin)]
    write_bytes(root / MANIFEST, dump_json({"sources": rows}).encode())


def _replace_entry(root: Path, entry: SourceEntry) -> None:
    entries = [e for e in read_manifest(root) if e.origin != entry.origin]
    write_manifest(root, [*entries, entry])


def add_local(path: Path, root: Path) -> tuple[SourceEntry, int]:
    """Copy a file, or a folder's supported files, into a snapshot; return it and the file count."""
    from semops.research.ingest.files import discover

    origin = path.expanduser().resolve()
    if not origin.exists():
        raise SourceError(f"{path}: no such file or folder")
    files = discover(origin) if origin.is_dir() else [origin]
    if not files:
        raise SourceError(f"{path}: holds no file of a supported type (PDF, DOCX, HTML, MD, TXT)")
    kind: Literal["file", "folder"] = "folder" if origin.is_dir() else "file"
    entry = SourceEntry(str(origin), kind, snapshot_name(kind, str(origin)))
    with atomic_dir(root / entry.snapshot) as tmp:
        for file in files:
            target = tmp / (file.relative_to(origin) if origin.is_dir() else file.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    _replace_entry(root, entry)
    return entry, len(files)


def add_web(url: str, root: Path, crawl_into: Callable[[Path], int]) -> tuple[SourceEntry, int]:
    """Crawl from `url` into a fresh snapshot (`crawl_into(folder)` returns the pages saved); the
    previous snapshot of the same URL stays when nothing could be fetched."""
    entry = SourceEntry(url, "web", snapshot_name("web", url))
    with atomic_dir(root / entry.snapshot) as tmp:
        pages = crawl_into(tmp)
        if pages == 0:
            raise SourceError(f"{url}: no page could be fetched; nothing added")
    _replace_entry(root, entry)
    return entry, pages


def remove(origin: str, root: Path) -> SourceEntry:
    entries = read_manifest(root)
    wanted = origin if "://" in origin else str(Path(origin).expanduser().resolve())
    matches = [e for e in entries if e.origin in (origin, wanted)]
    if not matches:
        known = ", ".join(e.origin for e in entries) or "none"
        raise SourceError(f"{origin}: not a research source (sources: {known})")
    write_manifest(root, [e for e in entries if e not in matches])
    shutil.rmtree(root / matches[0].snapshot, ignore_errors=True)
    return matches[0]


def snapshot_files(root: Path) -> list[tuple[Path, str]]:
    """Every snapshot file with the name it is cited by: the original path, or the page's URL."""
    items = []
    for entry in read_manifest(root):
        folder = root / entry.snapshot
        if entry.kind == "web":
            for meta_path in sorted(folder.rglob("*.json")):
                meta = json.loads(meta_path.read_text())
                for suffix in (".html", ".pdf"):
                    page = meta_path.with_suffix(suffix)
                    if page.exists():
                        items.append((page, str(meta.get("final_url") or meta["url"])))
        elif entry.kind == "folder":
            items += [(f, str(Path(entry.origin) / f.relative_to(folder))) for f in _files(folder)]
        else:
            items += [(f, entry.origin) for f in _files(folder)]
    return items


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())
