"""File I/O shared by the stages: atomic writes, canonical JSON, readable table errors."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semops.errors import SemopsError

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A reader never sees a half-written file, and a process killed mid-write leaves the
    previous version (or nothing) in place.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp{target.suffix}"):
        stale.unlink(missing_ok=True)  # left by a process killed mid-write
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; swap it in for `path` only if the block succeeds,
    so the folder's files are replaced together or not at all."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmpdir"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a process killed mid-write
    for previous in target.parent.glob(f".{target.name}.*.previous"):
        if not target.exists() and (previous / target.name).exists():
            os.replace(previous / target.name, target)  # killed between the two renames below
        shutil.rmtree(previous, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmpdir", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        if not target.exists():
            os.replace(tmp, target)
            return
        previous = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".previous", dir=target.parent)
        )
        os.replace(target, previous / target.name)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(previous / target.name, target)
            raise
        shutil.rmtree(previous)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def dump_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, fixed indentation, trailing newline (byte-stable)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    write_bytes(path, dump_json(obj).encode())


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise SemopsError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise SemopsError(f"{path}: not valid JSON ({exc})") from exc


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV file, naming the file when it is neither."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    if not path.exists():
        raise SemopsError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in {".csv", ".txt"}:
            return pd.read_csv(path)
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        kind = "Parquet" if suffix == ".parquet" else "CSV"
        raise SemopsError(f"{path}: not a valid {kind} file ({exc})") from exc
    raise SemopsError(f"{path}: unsupported file type {suffix!r}; expected .parquet or .csv")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by write_csv, as header -> text mappings."""
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: str | Path, columns: dict[str, list[Any]]) -> None:
    """Write equal-length columns as CSV (floats in shortest round-trip form)."""
    import csv
    from io import StringIO

    buffer = StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))
    write_bytes(path, buffer.getvalue().encode())


def write_arrow(path: str | Path, table: Any) -> None:
    """Write a pyarrow Table as Parquet."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


class FileLockedError(SemopsError):
    """Someone holds the lock file already: `holder` is the process id written in it."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by process {holder}")
        self.holder = holder


def hold_lock(path: str | Path) -> int:
    """An exclusive lock on the file `path` (created, with its folder, if missing), held until
    release_lock or the end of the process, with this process's id written in it for the message
    the next one to try gets. FileLockedError when another holds it, OSError when the file
    cannot be created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FileLockedError(path, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
