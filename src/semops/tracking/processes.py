"""The long-lived processes the team server starts (`tracking.server`, `tracking.postgres`):
what they inherit of their starter's environment, who a recorded process id is (the boot and its
start time tell it from a later process given the same id), ending a process group."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from fnmatch import fnmatchcase
from pathlib import Path

from semops.io import wait_until

log = logging.getLogger(__name__)

# Paths and locale; not the rest: `make` exports .env's API keys, which have no place in a
# long-lived process others reach.
_KEPT = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME")


def service_environment(*kept: str) -> dict[str, str]:
    """The environment for a long-lived process: the variables _KEPT and `kept` name (exact
    names, or patterns such as `PG*`)."""
    patterns = (*_KEPT, *kept)
    return {k: v for k, v in os.environ.items() if any(fnmatchcase(k, p) for p in patterns)}


def stop_group(pgid: int, leader_ours: bool, timeout: float) -> None:
    """End the process group `pgid` (the server and its workers): SIGTERM to the server, which
    stops its workers, then SIGKILL to whatever is left after `timeout` seconds. `leader_ours`:
    the process `pgid` is the one recorded (else only its group's members left are ended)."""
    if not group_members(pgid):
        return
    if not leader_ours and start_ticks(pgid) is not None:
        log.warning("process %s is no longer the one recorded; left alone", pgid)
        return
    with contextlib.suppress(ProcessLookupError):
        if leader_ours:
            os.kill(pgid, signal.SIGTERM)
        else:  # the server is gone (killed), some of its workers are not
            os.killpg(pgid, signal.SIGTERM)
    if not wait_until(lambda: not group_members(pgid), timeout, interval=0.2):
        log.warning("process group %s still runs after SIGTERM; killing it", pgid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        wait_until(lambda: not group_members(pgid), 10.0, interval=0.1)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # our own child (a test's): reaped, not left a zombie


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (field 22 of /proc/<pid>/stat); None when
    it does not run (a zombie, ended but not yet reaped, does not)."""
    fields = stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else int(fields[19])


def running(pid: int) -> bool:
    """Whether `pid` runs: unlike io.process_alive, not while a zombie (ended, its parent yet to
    reap it, which here can take a while when the parent is init)."""
    return start_ticks(pid) is not None


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def same_process(pid: int | None, boot: str | None, ticks: int | None) -> bool:
    """Whether `pid` runs still as the process recorded with `boot` (boot_id) and `ticks`
    (start_ticks), not as one that took its id since, in this boot or after a reboot."""
    now = None if pid is None else start_ticks(pid)
    return now is not None and now == ticks and boot == boot_id()


def group_members(pgid: int) -> list[int]:
    """The running processes of process group `pgid`."""
    return _members(2, pgid)


def session_members(sid: int) -> list[int]:
    """The running processes of session `sid`."""
    return _members(3, sid)


def _members(field: int, value: int) -> list[int]:
    """The running processes (not zombies) whose stat field `field` (0: the state) is `value`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z" and fields[field] == str(value):
                members.append(int(entry.name))
    return members
