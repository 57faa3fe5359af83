"""Sources added with `semops research add`: local files and folders are copied, web pages are
crawled, into data/raw/research/. Each added origin is one snapshot folder, replaced whole when
the origin is added again and never edited, so the research-embed stage reads only local files
and DVC sees every change."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from semops import paths
from semops.errors import SemopsError
from semops.io import (
    FileLockedError,
    atomic_dir,
    dump_json,
    lock_holder,
    locked,
    process_alive,
    wait_until,
    write_bytes,
)

log = logging.getLogger(__name__)

MANIFEST = "sources.json"
KINDS = ("file", "folder", "web")
# How long `research add`/`remove` wait (by default) for a running pipeline and the sources'
# lock, and the research-embed stage for the lock.
WAIT_S = 900.0


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


def lock_path(root: Path) -> Path:
    """The lock every writer of `root` (and the research-embed stage, while it reads it) holds:
    beside the folder, not in it, so DVC's hash of the folder never sees it."""
    return root.parent / f".{root.name}.lock"


@contextlib.contextmanager
def locked_sources(root: Path, who: str, wait: float = WAIT_S) -> Iterator[None]:
    """Hold the sources' lock, waiting (with a message) up to `wait` seconds for its holder."""
    message = f"{who}: waiting for process {{holder}}, which is changing or indexing {root}"
    with locked(lock_path(root), wait_message=message, timeout=wait):
        yield


@contextlib.contextmanager
def writing_sources(root: Path, who: str, wait: float = WAIT_S) -> Iterator[None]:
    """Hold the sources' lock for a writer while no pipeline runs, all within `wait` seconds.

    The pipeline is checked with the lock held: a `dvc repro` started after an earlier check
    holds the lock in research-embed and lets it go when the stage's Python ends, before DVC
    hashes the stage's inputs; a change written then would be recorded as indexed. So when one
    runs, the lock is let go, the pipeline waited for, and the lock taken again."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(locked_sources(root, who, max(deadline - time.monotonic(), 0)))
            except FileLockedError as exc:
                raise SourceError(
                    f"{who}: {lock_path(root)} is locked by process {exc.holder} still, after "
                    f"waiting {wait:g} s; nothing was changed. Run the command again when it "
                    "has finished, or wait longer with --wait SECONDS"
                ) from None
            if running_pipeline() is None:
                yield
                return
        wait_for_pipeline(who, max(deadline - time.monotonic(), 0.0), total=wait)


def wait_for_pipeline(command: str, timeout: float, *, total: float | None = None) -> None:
    """Wait, saying so, up to `timeout` seconds while a dvc command (`dvc repro`) runs: sources
    changed under a running research-embed would fail it, and a second `dvc repro` would fail on
    DVC's locks. SemopsError after that (naming `total`, the whole wait, when given)."""
    holder = running_pipeline()
    if holder is None:
        return
    log.info("%s: waiting for the running pipeline (dvc, process %s) to finish...", command, holder)
    if not wait_until(lambda: running_pipeline() is None, timeout, interval=0.2):
        raise SemopsError(
            f"{command}: the pipeline (dvc, process {running_pipeline() or holder}) is still "
            f"running after {total if total is not None else timeout:g} s; nothing was changed. "
            "Run the command again when it has finished, or wait longer with --wait SECONDS"
        )


def running_pipeline() -> str | None:
    """The id of a dvc process holding the repository's lock (between stages), or running a
    stage that reads or writes the research data (its entries in DVC's rwlock); None if none."""
    holder = lock_holder(paths.DVC_LOCK)
    if holder is not None:
        return holder
    for _ in range(3):
        try:
            rwlock = json.loads(paths.DVC_RWLOCK.read_text() or "{}")
            break
        except FileNotFoundError:
            return None
        except ValueError:  # DVC is rewriting it
            time.sleep(0.05)
    else:
        return None
    research = [(Path.cwd() / p).resolve() for p in (paths.RESEARCH_SOURCES, paths.RESEARCH)]
    entries = [*rwlock.get("write", {}).items()]
    entries += [(path, info) for path, infos in rwlock.get("read", {}).items() for info in infos]
    for path, info in entries:
        if any(Path(path).resolve().is_relative_to(r) for r in research):
            pid = info.get("pid") if isinstance(info, dict) else None
            if isinstance(pid, int) and process_alive(pid):
                return str(pid)
    return None


def read_manifest(root: Path) -> list[SourceEntry]:
    path = root / MANIFEST
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())["sources"]
        entries = [SourceEntry(r["origin"], r["kind"], r["snapshot"]) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{path}: not a sources manifest ({exc})") from exc
    for entry in entries:
        _check_entry(path, entry)
    return entries


def _check_entry(path: Path, entry: SourceEntry) -> None:
    """A snapshot read back must name a folder inside the sources folder (a tampered `../..`
    must make no command read or delete outside it)."""
    snapshot = PurePosixPath(str(entry.snapshot))
    if (
        entry.kind not in KINDS
        or snapshot.is_absolute()
        or len(snapshot.parts) != 2
        or snapshot.parts[0] not in ("files", "web")
        or any(part in ("", ".", "..") for part in snapshot.parts)
        or "\\" in str(entry.snapshot)
    ):
        raise SourceError(
            f"{path}: the entry for {entry.origin!r} has snapshot {entry.snapshot!r} and kind "
            f"{entry.kind!r}; expected files/<name> or web/<name> inside {path.parent}, and a "
            f"kind among {', '.join(KINDS)} (edited by hand? add the source again)"
        )


def write_manifest(root: Path, entries: list[SourceEntry]) -> None:
    rows = [e.__dict__ for e in sorted(entries, key=lambda e: e.origin)]
    write_bytes(root / MANIFEST, dump_json({"sources": rows}).encode())


def _replace_entry(root: Path, entry: SourceEntry) -> None:
    entries = [e for e in read_manifest(root) if e.origin != entry.origin]
    write_manifest(root, [*entries, entry])


def add_local(path: Path, root: Path, wait: float = WAIT_S) -> tuple[SourceEntry, int, list[str]]:
    """Copy a file, or a folder's supported files, into a snapshot; return it, the file count
    and one line per symbolic link skipped. In a folder, a link to a file inside it is copied as
    that file; a link out of it, a broken one and a link to a folder are skipped."""
    from semops.research.ingest.files import discover

    origin = path.expanduser().resolve()
    if not origin.exists():
        raise SourceError(f"{path}: no such file or folder")
    files, skipped = _inside(origin, discover(origin)) if origin.is_dir() else ([origin], [])
    if not files:
        raise SourceError(f"{path}: holds no file of a supported type (PDF, DOCX, HTML, MD, TXT)")
    kind: Literal["file", "folder"] = "folder" if origin.is_dir() else "file"
    entry = SourceEntry(str(origin), kind, snapshot_name(kind, str(origin)))
    with writing_sources(root, "research add", wait):
        with atomic_dir(root / entry.snapshot) as tmp:
            for file in files:
                target = tmp / (file.relative_to(origin) if origin.is_dir() else file.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
        _replace_entry(root, entry)
    return entry, len(files), skipped


def _inside(origin: Path, files: list[Path]) -> tuple[list[Path], list[str]]:
    """The files of `origin` that are not links out of it, and a line per link skipped."""
    kept, skipped = [], []
    for file in files:
        if file.is_symlink():
            real = file.resolve()
            if not real.is_file():
                skipped.append(f"{file}: a broken link (to {os.readlink(file)})")
                continue
            if not real.is_relative_to(origin):
                skipped.append(f"{file}: a link to {real}, outside {origin}")
                continue
        kept.append(file)
    for top, dirs, _ in os.walk(origin):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in dirs:
            if (Path(top) / name).is_symlink():
                where = (Path(top) / name).resolve()
                skipped.append(f"{Path(top) / name}: a link to the folder {where}, not followed")
    return kept, skipped


def add_web(
    url: str, root: Path, crawl_into: Callable[[Path], int], wait: float = WAIT_S
) -> tuple[SourceEntry, int]:
    """Crawl from `url` into a fresh snapshot (`crawl_into(folder)` returns the pages saved); the
    previous snapshot of the same URL stays when nothing could be fetched."""
    entry = SourceEntry(url, "web", snapshot_name("web", url))
    with writing_sources(root, "research add", wait):
        with atomic_dir(root / entry.snapshot) as tmp:
            pages = crawl_into(tmp)
            if pages == 0:
                raise SourceError(f"{url}: no page could be fetched; nothing added")
        _replace_entry(root, entry)
    return entry, pages


def remove(origin: str, root: Path, wait: float = WAIT_S) -> SourceEntry:
    with writing_sources(root, "research remove", wait):
        entries = read_manifest(root)
        wanted = origin if "://" in origin else str(Path(origin).expanduser().resolve())
        matches = [e for e in entries if e.origin in (origin, wanted)]
        if not matches:
            known = ", ".join(e.origin for e in entries) or "none"
            raise SourceError(f"{origin}: not a research source (sources: {known})")
        folder = root / matches[0].snapshot
        if not folder.resolve().is_relative_to(root.resolve()) or folder.is_symlink():
            raise SourceError(
                f"{root / MANIFEST}: the snapshot {matches[0].snapshot!r} of {origin!r} is not "
                f"a folder inside {root}; nothing removed"
            )
        write_manifest(root, [e for e in entries if e not in matches])
        shutil.rmtree(folder, ignore_errors=True)
    return matches[0]


@contextlib.contextmanager
def held_unchanged(root: Path, stage: str, inputs: Sequence[Path]) -> Iterator[None]:
    """Hold the sources' lock at `root` for the block (`research add` and `remove` wait for it),
    and fail when one of the stage's `inputs` (files or folders: the sources, the document set,
    the corpus) changed all the same (a copy by hand, a checkout): DVC hashes its dependencies
    when the stage ends, so it would record as indexed what the stage never read."""
    with locked_sources(root, stage):
        before = _listings(inputs)
        yield
        after = _listings(inputs)
    if after != before:
        changes = []
        for word, names in (
            ("added", sorted(after.keys() - before.keys())),
            ("removed", sorted(before.keys() - after.keys())),
            ("changed", sorted(n for n in before.keys() & after.keys() if before[n] != after[n])),
        ):
            if names:
                more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                changes.append(f"{word} {', '.join(names[:3])}{more}")
        raise SourceError(
            f"{', '.join(map(str, inputs))} changed while {stage} ran ({'; '.join(changes)}): "
            "the index does not hold those changes, so no output is recorded; run `dvc repro` "
            "again"
        )


def _listings(inputs: Sequence[Path]) -> dict[str, tuple[int, int, int]]:
    """Every file of `inputs` (each a file or a folder; links not followed): its path, size,
    modification time and inode (a file replaced by a rename is a new inode)."""
    found: dict[str, tuple[int, int, int]] = {}
    for top_input in inputs:
        walked = [(str(top_input.parent), [top_input.name])] if top_input.is_file() else []
        walked += [(top, names) for top, _, names in os.walk(top_input)]
        for top, names in walked:
            for name in names:
                path = Path(top) / name
                with contextlib.suppress(FileNotFoundError):
                    stat = path.lstat()
                    found[path.as_posix()] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return found


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
