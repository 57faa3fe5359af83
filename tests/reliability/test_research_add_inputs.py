"""What `semops research add` and `remove` accept (issue 9, cases 7 and 9): URLs with credentials
are refused before anything is written, links out of an added folder are not followed, and a
tampered sources.json cannot make `remove` delete outside the sources folder. Each runs the real
command in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from projectkit import REPO

SECRETS = ("s3cret", "tok123")


def semops(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semops.cli.main", *args],
        cwd=workdir,
        env={**os.environ, "NO_COLOR": "1"},  # PYTHONPATH kept: it may name another checkout
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "data/raw/research").mkdir(parents=True)
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return project


def everything_under(folder: Path) -> str:
    """The names and contents of every file under `folder`."""
    parts = []
    for path in sorted(folder.rglob("*")):
        parts.append(str(path))
        if path.is_file():
            parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://user:s3cret@example.invalid/?access_token=tok123", "access_token"),
        ("http://example.invalid/docs#access_token=tok123&state=1", "access_token"),
        ("https://example.invalid/f.pdf?X-Amz-Signature=tok123", "X-Amz-Signature"),
        ("http://user:s3cret@example.invalid/docs", "user:password@"),
        ("http://example.invalid/docs?t%6Fken=tok123", "'token'"),
        ("http://example.invalid/docs?page=1;api_key=tok123", "'api_key'"),
        ("http://example.invalid/cb#state=1;id_token=tok123", "'id_token'"),
    ],
)
def test_a_url_with_credentials_is_refused_before_anything_is_written(
    workdir: Path, tmp_path: Path, url: str, named: str
) -> None:
    note = tmp_path / "note.md"
    note.write_text("# A note\n\nAdded in the same command, before the URL.\n")
    result = semops(workdir, "research", "add", str(note), url, "--no-build")
    assert result.returncode == 1
    assert named in result.stderr and "nothing was added" in result.stderr
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr + everything_under(workdir / "data")
    assert not any(secret in output for secret in SECRETS), output
    assert list((workdir / "data/raw/research").iterdir()) == []  # not even the note


def test_links_out_of_an_added_folder_are_skipped_and_reported(
    workdir: Path, tmp_path: Path
) -> None:
    papers = tmp_path / "papers"
    (papers / "sub").mkdir(parents=True)
    (papers / "a.md").write_text("# A\n\nInside.\n")
    (papers / "sub/b.md").write_text("# B\n\nInside too.\n")
    credentials = tmp_path / "credentials.md"
    credentials.write_text("OPENAI_API_KEY=s3cret\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/c.md").write_text("# C\n\ntok123\n")
    (papers / "same-as-a.md").symlink_to("a.md")  # inside the tree: copied as a file
    (papers / "sub/keys.md").symlink_to(credentials)
    (papers / "gone.md").symlink_to(tmp_path / "missing.md")
    (papers / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    result = semops(workdir, "research", "add", str(papers), "--no-build")
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line for line in result.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 3, result.stdout
    for name, reason in (("sub/keys.md", "outside"), ("gone.md", "broken"), ("more", "folder")):
        assert any(f"{papers / name}:" in line and reason in line for line in skipped), skipped
    snapshot = next((workdir / "data/raw/research/files").iterdir())
    copied = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert copied == ["a.md", "same-as-a.md", "sub/b.md"]
    assert not any(s in everything_under(workdir / "data") for s in SECRETS)


@pytest.mark.parametrize("snapshot", ["../../../victim", "files/../../../../victim", "VICTIM"])
def test_a_tampered_snapshot_path_deletes_nothing_outside(
    workdir: Path, tmp_path: Path, snapshot: str
) -> None:
    note = tmp_path / "note.md"
    note.write_text("# A note\n\nText.\n")
    assert semops(workdir, "research", "add", str(note), "--no-build").returncode == 0
    victim = workdir / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("must survive")
    manifest = workdir / "data/raw/research/sources.json"
    rows = json.loads(manifest.read_text())
    snapshot = str(victim) if snapshot == "VICTIM" else snapshot  # an absolute path
    rows["sources"][0]["snapshot"] = snapshot
    manifest.write_text(json.dumps(rows))

    result = semops(workdir, "research", "remove", str(note), "--no-build")
    assert result.returncode == 1
    assert "sources.json" in result.stderr and repr(snapshot) in result.stderr
    assert "Traceback" not in result.stderr
    assert (victim / "keep.txt").read_text() == "must survive"
    assert json.loads(manifest.read_text()) == rows  # the manifest left as it was


def test_wait_bounds_the_wait_for_the_sources_lock(workdir: Path, tmp_path: Path) -> None:
    """`--wait` bounds the wait for the sources' lock too, not only for a running pipeline."""
    import time

    holding = "import sys, time\nfrom semops.io import locked\n"
    holding += "with locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
    lock = workdir / "data/raw/.research.lock"  # sources.lock_path of data/raw/research
    holder = subprocess.Popen(
        [sys.executable, "-c", holding, str(lock)], stdout=subprocess.PIPE, text=True
    )
    note = tmp_path / "note.md"
    note.write_text("# A note\n\nAdded while another process held the lock.\n")
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        result = semops(workdir, "research", "add", str(note), "--no-build", "--wait", "1")
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1 and elapsed < 60, result.stderr
    assert f"locked by process {holder.pid} still, after waiting 1 s;" in result.stderr
    assert "--wait SECONDS" in result.stderr
    assert "Traceback" not in result.stderr
    assert list((workdir / "data/raw/research").iterdir()) == []
