"""The README's two commands: `make run`, then `make test`, which installs what its tests need
(Debian's Chromium, for the web tests, and PostgreSQL, for the team server's) itself, and says
so, before any test runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from projectkit import REPO

MISSING = "/nonexistent/semops-test/chromium"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile and what its setup target depends on, set up already (.venv stamped)."""
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()
    return tmp_path


def make(checkout: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path or "/usr/bin:/bin", "HOME": str(checkout)}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_quickstart_is_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [
        line.split("#")[0].strip()
        for line in quickstart.splitlines()
        if line.startswith("    make ")  # the first code block's commands, before the sweep's
    ]
    assert commands[:2] == ["make run", "make test"]
    assert "make browser" not in commands


@pytest.mark.parametrize("target", ["test", "reliability"])
def test_make_test_installs_chromium_before_any_test_runs(checkout: Path, target: str) -> None:
    result = make(checkout, "-n", target, f"CHROMIUM={MISSING}")  # -n: print, run nothing
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    install = next(i for i, line in enumerate(lines) if "install -y -q chromium" in line)
    postgres = next(i for i, line in enumerate(lines) if "install -y -q postgresql" in line)
    tests = next(i for i, line in enumerate(lines) if "/pytest" in line)
    assert install < tests and postgres < tests
    assert "DEBIAN_FRONTEND=noninteractive apt-get" in "\n".join(lines[:tests])
    assert "installing Debian's chromium" in "\n".join(lines[:tests])  # and says so


def test_make_browser_says_it_installs_chromium_and_does(checkout: Path) -> None:
    stubs = checkout / "stubs"
    stubs.mkdir()
    log = checkout / "apt-get.log"
    (stubs / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (stubs / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    result = make(checkout, "browser", f"CHROMIUM={MISSING}", path=f"{stubs}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert "browser: installing Debian's chromium with apt-get" in result.stdout
    assert log.read_text().splitlines() == ["install -y -q chromium"]


def test_make_browser_installs_nothing_when_chromium_is_there(checkout: Path) -> None:
    fake = checkout / "chromium"
    fake.write_text("#!/bin/sh\necho Chromium 140.0\n")
    fake.chmod(0o755)
    result = make(checkout, "browser", f"CHROMIUM={fake}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "browser: Chromium 140.0"
