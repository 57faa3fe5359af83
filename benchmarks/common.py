"""Shared helpers: throwaway project repos, timed subprocesses with peak memory, machine info."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
PYTHON = str(BIN / "python")
GIB = 1 << 30

STAGES = ("download", "clean", "featurize", "train", "evaluate", "track")
# Modules the stages import, loaded once before anything is timed, so that the first timed
# command does not also pay for reading them from disk into the page cache.
WARM_IMPORTS = (
    "import torch, sklearn.linear_model, sklearn.metrics, mlflow, pandas, pyarrow.parquet, "
    "dvc.repo, matplotlib.pyplot"
)
# Commits in the throwaway repos need an identity, whatever the user's git config holds.
GIT_IDENTITY = {
    f"GIT_{role}_{field}": value
    for role in ("AUTHOR", "COMMITTER")
    for field, value in (("NAME", "semops-bench"), ("EMAIL", "bench@example.invalid"))
}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without MLflow, DVC or PYTHONPATH settings, the venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "DVC_")) and k != "PYTHONPATH"
    }
    # The committed dvc.lock is the CPU result; a GPU trains other (bf16) weights.
    env.update(
        GIT_IDENTITY, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", CUDA_VISIBLE_DEVICES=""
    )
    return {**env, **extra}


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """Environment for a command in a project copy: it imports that copy's src/, the code DVC
    hashed there, not the editable install's (REPO/src, which may change while we run)."""
    if (project / "src" / "semops").is_dir():
        extra = {"PYTHONPATH": str(project / "src"), **extra}
    return clean_env(**extra)


def helper_env(project: Path) -> dict[str, str]:
    """Environment for `python -m benchmarks.<helper>` run in a project copy."""
    return clean_env(PYTHONPATH=os.pathsep.join([str(project / "src"), str(REPO)]))


def snapshot_project(dest: Path) -> Path:
    """The working tree's files as a clone with the uncommitted changes would hold them: git's
    tracked files and the untracked ones it does not ignore (never data, caches or the venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.is_file():  # deleted or moved since it was staged
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


def make_project(snapshot: Path, dest: Path, cache: Path) -> Path:
    """A fresh git repo of `snapshot`'s files, the venv symlinked, an empty DVC cache `cache`
    and a private DVC site cache beside it."""
    shutil.copytree(snapshot, dest, symlinks=True)
    (dest / ".venv").symlink_to(REPO / ".venv")
    site_cache = cache.parent / f"{cache.name}-site"
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "project"],
        ["dvc", "cache", "dir", "--local", str(cache)],
        ["dvc", "config", "--local", "core.site_cache_dir", str(site_cache)],
    ):
        subprocess.run(cmd, cwd=dest, env=clean_env(), check=True, capture_output=True)
    return dest


def ran_stages(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


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

    def last_json(self) -> Any:
        """The JSON document a helper printed as its last line."""
        return json.loads(self.stdout.strip().splitlines()[-1])


@dataclass
class _Waited:
    status: int
    usage: Any  # resource.struct_rusage
    polled_rss: int
    killed: str | None


def _vm_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _wait(pid: int, start: float, timeout: float, rss_limit: int | None) -> _Waited:
    """Poll the child until it exits, killing its process group (SIGKILL) once it passes the
    time or memory limit, before the kernel's OOM killer has to pick a victim."""
    killed = None
    polled = 0
    interval = 0.005
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return _Waited(status, usage, polled, killed)
        polled = max(polled, _vm_rss(pid))
        if killed is None:
            if rss_limit is not None and polled > rss_limit:
                killed = f"resident memory above the {rss_limit / GIB:.1f} GiB limit"
            elif time.perf_counter() - start > timeout:
                killed = f"still running after the {timeout:.0f} s limit"
            if killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        time.sleep(interval)
        interval = min(interval * 1.5, 0.1)  # fine timing for short runs, cheap for long


def timed(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    rss_limit: int | None = None,
    check: bool = True,
) -> Timed:
    """Run `cmd`, returning its wall time, output and peak RSS (os.wait4's rusage); with
    `rss_limit` the child is killed as soon as its resident memory exceeds the limit."""
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
        waited = _wait(proc.pid, start, timeout, rss_limit)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(waited.status)
        out.seek(0)
        err.seek(0)
        result = Timed(
            list(cmd),
            seconds,
            proc.returncode,
            out.read(),
            err.read(),
            waited.usage.ru_maxrss * 1024,
            waited.usage.ru_utime + waited.usage.ru_stime,
            waited.polled_rss,
            waited.killed,
        )
    if check and not result.ok:
        why = result.killed or f"exit code {result.returncode}"
        raise CommandError(f"{' '.join(cmd)} failed in {cwd} ({why}):\n{result.tail()}")
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


class Context:
    """The temporary folder and the project built once from scratch, shared by benchmarks."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self._built: Path | None = None
        self.build_info: dict[str, Any] = {}
        self._count = 0
        # The project files as they are now: every repo of this run is made from this copy.
        self._snapshot = snapshot_project(root / "snapshot")

    def fresh_project(self, label: str) -> Path:
        """A new project repo from the snapshot taken at the start: every benchmark of a run
        sees the same code, even if the working tree changes meanwhile."""
        self._count += 1
        base = self.root / f"{self._count:02d}-{label}"
        return make_project(self._snapshot, base / "project", base / "dvc-cache")

    def cold_repro(self, label: str) -> tuple[Path, dict[str, Any]]:
        """A fresh project, then `make repro`'s two commands (compose, dvc repro), each timed."""
        project = self.fresh_project(label)
        cache = project.parent / "dvc-cache"
        info: dict[str, Any] = {
            "empty_cache": not cache.exists() or not any(cache.iterdir()),
            "empty_mlruns": [p.name for p in (project / "mlruns").iterdir()] == [".gitkeep"],
        }
        compose = timed(["semops", "compose"], project)
        repro = timed(["dvc", "repro"], project)
        (project / "first-repro.log").write_text(repro.stdout + repro.stderr)
        info.update(
            compose_seconds=compose.seconds,
            repro_seconds=repro.seconds,
            repro_cpu_seconds=repro.cpu_seconds,
            repro_peak_rss=repro.max_rss_bytes,
            stages_ran=ran_stages(repro.stdout),
        )
        return project, info

    def built_project(self) -> Path:
        """The project after `make repro` from scratch: the first cold run, shared."""
        if self._built is None:
            warm = timed([PYTHON, "-c", WARM_IMPORTS], REPO)
            self._built, self.build_info = self.cold_repro("built")
            self.build_info["warm_imports_seconds"] = warm.seconds
        return self._built


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
