"""Shared helpers: throwaway project repos, timed subprocesses with peak memory, machine info."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

# The tests' project-copy helpers; tests/ holds top-level modules, as pytest imports them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from projectkit import BIN, REPO, clean_env, copy_project_files, make_project  # noqa: F401

PYTHON = str(BIN / "python")
GIB = 1 << 30

STAGES = ("download", "clean", "featurize", "train", "evaluate", "track")


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """Environment for a command in a project copy: it imports that copy's src/, the code DVC
    hashed there, not the editable install's (REPO/src, which may change while we run)."""
    if (project / "src" / "semops").is_dir():
        extra = {"PYTHONPATH": str(project / "src"), **extra}
    return clean_env(**extra)


def helper_env(project: Path) -> dict[str, str]:
    """Environment for `python -m benchmarks.<helper>` run in a project copy."""
    return clean_env(PYTHONPATH=os.pathsep.join([str(project / "src"), str(REPO)]))


class CommandError(RuntimeError):
    pass


@dataclass
class Timed:
    cmd: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    max_rss_bytes: int  # ru_maxrss of the child (and the descendants it waited for)
    cpu_seconds: float  # user + system CPU time of the child and its waited-for descendants
    polled_rss_bytes: int  # highest VmRSS of the direct child seen by polling
    killed: str | None = None  # why the child was killed, if it was

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed is None

    def tail(self, n: int = 2000) -> str:
        return (self.stdout[-n:] + "\n" + self.stderr[-n:]).strip()


def _vm_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    rss_limit: int | None = None,
    check: bool = True,
) -> Timed:
    """Run `cmd`, returning its wall time, output and peak RSS (os.wait4's rusage).

    With `rss_limit` the child is killed (SIGKILL, its whole process group) as soon as its
    resident memory exceeds the limit, before the kernel's OOM killer has to pick a victim.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env or project_env(cwd),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        killed = None
        polled = 0
        interval = 0.005
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.perf_counter() - start
            polled = max(polled, _vm_rss(proc.pid))
            if killed is None:
                if rss_limit is not None and polled > rss_limit:
                    killed = f"resident memory above the {rss_limit / GIB:.1f} GiB limit"
                elif elapsed > timeout:
                    killed = f"still running after the {timeout:.0f} s limit"
                if killed:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(interval)
            interval = min(interval * 1.5, 0.1)  # fine timing for short runs, cheap for long
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Timed(
            list(cmd),
            seconds,
            proc.returncode,
            out.read(),
            err.read(),
            usage.ru_maxrss * 1024,
            usage.ru_utime + usage.ru_stime,
            polled,
            killed,
        )
    if check and not result.ok:
        why = result.killed or f"exit code {result.returncode}"
        raise CommandError(f"{' '.join(cmd)} failed in {cwd} ({why}):\n{result.tail()}")
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total() -> int:
    return _meminfo("MemTotal")


def mem_available() -> int:
    return _meminfo("MemAvailable")


def _meminfo(key: str) -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    return 0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def machine_info() -> dict[str, Any]:
    # Versions from package metadata: importing torch here would cost seconds and threads.
    versions = {
        d: _version(d)
        for d in ("torch", "dvc", "pandas", "pyarrow", "numpy", "scikit-learn", "mlflow")
    }
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem_total() / GIB, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": _git("rev-parse", "--short", "HEAD")
        + (" (uncommitted changes)" if dirty else ""),
    }
