"""The Chromium process: started with a minimal environment, its DevTools channel on a pipe only
this process holds, every request through the checking proxy, and its sandbox wherever it can
run; stopped by its process group, however the crawl ends."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from semops.research.ingest.web.devtools import DevToolsBridge, DevToolsPipe

log = logging.getLogger(__name__)

BROWSER_START_TIMEOUT = 30.0
# Without the background-networking flags Chromium floods a closed network with connections.
CHROMIUM_FLAGS = (
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--dns-prefetch-disable",
    # Chromium's own requests (time, sign-in, search, push, hints), refused by the proxy anyway.
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-component-extensions-with-background-pages",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--no-service-autorun",
    "--metrics-recording-only",
    "--password-store=basic",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter,"
    "DialMediaRouteProvider,LensOverlay,AutofillServerCommunication,PushMessaging",
    # WebRTC sends UDP to any address it likes: only through the proxy (which has no UDP).
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--remote-debugging-pipe",
)
# All Chromium is given of our environment (an allow-list: API keys and the like stay here).
ENVIRONMENT_KEPT = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR"})


class BrowserUnavailable(Exception):
    """The browser could not start: the crawl falls back to plain HTTP."""


class _SandboxFailed(BrowserUnavailable):
    """Chromium exited at start because its sandbox cannot run here."""


@dataclass(frozen=True)
class Browser:
    pid: int
    cdp_url: str  # the DevTools WebSocket, with its token


def browser_environment(home: Path) -> dict[str, str]:
    """PATH, the locale and time zone and TMPDIR of ours; a temporary home (Chromium writes
    crash reports and a dconf cache there, whatever the profile)."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if name in ENVIRONMENT_KEPT or name.startswith("LC_")
    }
    return (
        {"PATH": os.defpath}
        | kept
        | {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
        }
    )


def sandbox_flags(euid: int) -> tuple[str, ...]:
    """Chromium refuses its sandbox as root: --no-sandbox there only."""
    return ("--no-sandbox",) if euid == 0 else ()


def proxy_flags(proxy_url: str) -> tuple[str, ...]:
    """Every request through the proxy, and no name resolved by Chromium itself (the proxy
    connects to the address the gate checked; its own address is a literal)."""
    return (
        f"--proxy-server={proxy_url}",
        # Without "<-loopback>" Chromium sends requests to loopback hosts past the proxy.
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    )


@contextlib.contextmanager
def running_chromium(executable: str, proxy_url: str) -> Iterator[Browser]:
    """Chromium, headless, with a fresh profile, sending every request through `proxy_url`."""
    if shutil.which(executable) is None:
        raise BrowserUnavailable(f"{executable}: {os.strerror(errno.ENOENT)}")
    workdir = Path(tempfile.mkdtemp(prefix="semops-chromium-"))
    try:
        with contextlib.ExitStack() as stack:
            flags = (*CHROMIUM_FLAGS, *proxy_flags(proxy_url))
            sandbox = sandbox_flags(os.geteuid())
            if sandbox:
                log.debug("web: Chromium runs without its sandbox (it cannot run as root)")
            try:
                pid, pipe = _start(executable, (*flags, *sandbox), workdir, stack)
            except _SandboxFailed as exc:
                log.info("web: Chromium's sandbox cannot start here (%s): running it without", exc)
                pid, pipe = _start(executable, (*flags, "--no-sandbox"), workdir, stack)
            bridge = DevToolsBridge(pipe)
            bridge.start()
            stack.callback(bridge.close)
            yield Browser(pid, bridge.url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start(
    executable: str, flags: tuple[str, ...], workdir: Path, outer: contextlib.ExitStack
) -> tuple[int, DevToolsPipe]:
    """Chromium started and answering on its DevTools pipe; stopped when `outer` closes."""
    with contextlib.ExitStack() as stack:
        pipe = DevToolsPipe()
        stack.callback(pipe.close)
        profile = workdir / "profile"
        shutil.rmtree(profile, ignore_errors=True)  # a failed start's
        log_path = workdir / "stderr.log"
        command = [*pipe.shell_prefix(), executable, *flags, f"--user-data-dir={profile}"]
        try:
            with open(log_path, "wb") as stderr_file:
                process = subprocess.Popen(
                    [*command, "about:blank"],
                    stdin=pipe.child_stdin,
                    stdout=pipe.child_stdout,
                    stderr=stderr_file,
                    env=browser_environment(workdir),
                    start_new_session=True,
                )
        except OSError as exc:
            raise BrowserUnavailable(f"{executable}: {exc.strerror}") from None
        pipe.close_child_ends()
        stack.callback(_stop, process, workdir)
        deadline = time.monotonic() + BROWSER_START_TIMEOUT
        if pipe.probe(deadline, lambda: process.poll() is None):
            outer.enter_context(stack.pop_all())
            return process.pid, pipe
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)  # a failed start: its exit, and all it wrote
        if process.poll() is None:
            raise BrowserUnavailable(
                f"{executable} did not answer on its DevTools pipe within "
                f"{BROWSER_START_TIMEOUT:g} s"
            )
        text = log_path.read_text(errors="replace")
        lines = text.strip().splitlines()
        last = lines[-1][:200] if lines else ""
        if "--no-sandbox" not in flags and "sandbox" in text.lower():
            raise _SandboxFailed(last)
        raise BrowserUnavailable(
            f"{executable} exited with code {process.returncode}" + (f": {last}" if last else "")
        )


def _stop(process: subprocess.Popen[bytes], workdir: Path) -> None:
    _stop_process_group(process)
    # Crashpad handlers run in sessions of their own; they name the temporary home.
    for pid in _pids_mentioning(str(workdir)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    # Renderer and zygote processes that outlived the browser's own exit.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (none where there is no /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids
