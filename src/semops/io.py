"""File I/O shared by the stages: atomic writes, canonical JSON, readable table errors."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semops.errors import SemopsError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd


# Temporary names carry their writer: `.<name>.<host>-<pid>-<random><kind>`. Another writer of
# the same target removes a temporary only when its writer is gone (same host, process ended),
# never a live writer's.
# The host is a short hash of its name (any name, no two alike after encoding). Assumed: one
# host name means one pid space (containers sharing a volume need distinct host names).
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
_WRITER = re.compile(r"(?P<host>[0-9a-f]+)-(?P<pid>[0-9]+)-[^.]*")


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{_HOST}-{os.getpid()}-"


def _writer_gone(temp: Path, target: Path, kind: str) -> bool:
    """True when the writer of `temp` (a temporary of `target` ending in `kind`) has ended."""
    middle = temp.name[len(target.name) + 2 : len(temp.name) - len(kind)]
    match = _WRITER.fullmatch(middle)
    if match is None:  # no writer in its name: older code's, or another target's (`a.b` of `a`)
        return "." not in middle
    if match["host"] != _HOST:
        return False  # another machine's (a shared folder): it cannot be checked from here
    return not process_alive(int(match["pid"]))


def process_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(target: Path, kind: str) -> list[Path]:
    """Temporaries of `target` ending in `kind` whose writers are gone."""
    found = target.parent.glob(f".{glob.escape(target.name)}.*{kind}")
    return [p for p in found if _writer_gone(p, target, kind)]


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path`, with `mode`, only if the
    block succeeds. The temporary is 0600 until then: a secret never lies readable by others.

    A reader never sees a half-written file, and a process killed mid-write leaves the
    previous version (or nothing) in place. Writers may run at once: the last rename wins, and
    each removes only the temporaries of writers that have ended.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale(target, f".tmp{target.suffix}"):
        stale.unlink(missing_ok=True)  # left by a process killed mid-write
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temp_prefix(target), suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; swap it in for `path` only if the block succeeds,
    so the folder's files are replaced together or not at all. Writers may run at once: the
    last swap wins; each cleans up only after writers that have ended."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale(target, ".tmpdir"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a process killed mid-write
    for previous in _stale(target, ".previous"):
        if not target.exists() and (previous / target.name).exists():
            with contextlib.suppress(OSError):  # killed between the two renames of _swap_in
                os.replace(previous / target.name, target)
        shutil.rmtree(previous, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmpdir", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        _swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, target: Path, attempts: int = 20) -> None:
    """Rename the folder `tmp` to `target`, moving the folder there aside first (into a
    `.previous` folder of this writer, removed at the end); another writer's swap in between
    makes it try again."""
    previous = Path(
        tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".previous", dir=target.parent)
    )
    try:
        aside = previous / target.name  # where atomic_dir looks after a kill
        for attempt in range(attempts):
            try:
                os.rename(tmp, target)
                return
            except OSError:  # target exists (ENOTEMPTY / EEXIST): move it aside
                if attempt == attempts - 1:
                    raise
            shutil.rmtree(aside, ignore_errors=True)  # superseded by another writer's swap
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue  # another writer moved it aside first
            try:
                os.rename(tmp, target)
                return
            except OSError:
                if not target.exists():
                    os.rename(aside, target)  # put the previous folder back
                    raise
    finally:
        shutil.rmtree(previous, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_path(path, mode) as tmp:
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


PARQUET_ROW_GROUP_ROWS = 1 << 20
"""pyarrow's default row group length: what `write_parquet` and `write_arrow` give."""


class ParquetStream:
    """Appends Arrow tables to a Parquet file in row groups of `PARQUET_ROW_GROUP_ROWS` rows,
    so the file is byte for byte the one `write_arrow` writes from all the rows at once, whatever
    the sizes of the tables appended; memory holds one row group. Made by `parquet_stream`."""

    def __init__(self, path: Path, schema: Any = None) -> None:
        self.path, self.schema = path, schema
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.rows = 0
        self._writer: Any = None

    def write(self, table: Any) -> None:
        """Append `table` (a pyarrow Table; the first one sets the file's schema)."""
        if self.schema is None:
            self.schema = table.schema
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.rows += table.num_rows
        while self.pending_rows >= PARQUET_ROW_GROUP_ROWS:
            self._flush(PARQUET_ROW_GROUP_ROWS)

    def _flush(self, rows: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        whole = pa.concat_tables(self.pending)
        # Contiguous columns, each with one dictionary: what a table written at once holds.
        group = whole.slice(0, rows).combine_chunks()
        rest = whole.slice(rows)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self._writer.write_table(group, row_group_size=PARQUET_ROW_GROUP_ROWS)

    def close(self) -> None:
        import pyarrow.parquet as pq

        try:
            if self.pending_rows:
                self._flush(self.pending_rows)
            if self._writer is None:  # no rows: a file with the columns alone
                if self.schema is None:
                    raise SemopsError(f"{self.path}: no rows and no columns to write")
                pq.write_table(self.schema.empty_table(), self.path, compression="zstd")
        finally:
            if self._writer is not None:  # its file handle, also when the last flush failed
                self._writer.close()


@contextlib.contextmanager
def parquet_stream(path: str | Path, schema: Any = None) -> Iterator[ParquetStream]:
    """A `ParquetStream` onto a temporary file renamed onto `path` when the block succeeds
    (`schema`: the columns of a file written without rows)."""
    with atomic_path(path) as tmp:
        stream = ParquetStream(tmp, schema)
        try:
            yield stream
        except BaseException:
            if stream._writer is not None:
                stream._writer.close()  # the file is dropped: only its handle to release
            raise
        stream.close()


class FileLockedError(SemopsError):
    """Someone holds the lock file already: `holder` is the process id written in it."""

    def __init__(self, path: Path, holder: str, waited: float | None = None) -> None:
        still = f" still, after waiting {waited:g} s" if waited is not None else ""
        super().__init__(f"{path} is locked by process {holder}{still}")
        self.holder = holder


@contextlib.contextmanager
def locked(
    path: str | Path, *, wait_message: str | None = None, timeout: float | None = None
) -> Iterator[None]:
    """An exclusive lock on the file `path` (created, with its folder, if missing) for the block,
    with this process's id written in it; the system releases it if the holder dies.

    While another process holds it: wait for it (forever with `timeout` None, else up to
    `timeout` seconds; 0 does not wait), then FileLockedError naming the holder. `wait_message`
    is logged once when a wait starts: `{holder}` in it becomes the holder's process id. OSError
    when the file cannot be created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, wait_message, timeout)
        yield
    finally:
        os.close(fd)  # closing the file releases its lock


def _acquire(fd: int, path: Path, wait_message: str | None, timeout: float | None) -> None:
    if not _try_lock(fd):
        if timeout == 0:
            raise FileLockedError(path, _holder(fd))
        if wait_message:
            log.info(wait_message.format(holder=_holder(fd)))
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        elif not wait_until(lambda: _try_lock(fd), timeout, interval=0.05):
            raise FileLockedError(path, _holder(fd), waited=timeout)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Call `predicate` every `interval` seconds until it is true (then True) or `timeout`
    seconds have passed (then False, after one last call)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
    return True


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def lock_holder(path: str | Path) -> str | None:
    """The process id written in the lock file `path` while some process holds a lock on it
    (`unknown` when it wrote none); None when the file is missing or nobody holds it. Works for
    DVC's repository lock (.dvc/tmp/lock, zc.lockfile's flock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # releases the probe's lock, if taken
    return None
