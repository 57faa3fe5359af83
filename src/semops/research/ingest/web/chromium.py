"""Pages rendered in Chromium: the browser process, started and stopped here, and Crawl4AI
connected to it over CDP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semops.config.research import WebConfig
from semops.research.ingest.web.fetched import (
    Fetched,
    FetchedWith,
    PageFailure,
    is_html_content_type,
)

log = logging.getLogger(__name__)

BROWSER_START_TIMEOUT = 30.0
# Without the background-networking flags Chromium floods a closed network with connections.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


class BrowserUnavailable(Exception):
    """The browser could not start: the crawl falls back to plain HTTP."""


@dataclass(frozen=True)
class _Browser:
    pid: int
    cdp_url: str


@contextlib.contextmanager
def _chromium(executable: str) -> Iterator[_Browser]:
    """Chromium, headless, with a fresh profile and a DevTools (CDP) endpoint on 127.0.0.1.

    It is stopped by its process group (the browser outlives any CDP client) and its folder
    removed, however the block ends.
    """
    workdir = Path(tempfile.mkdtemp(prefix="semops-chromium-"))
    try:
        profile = workdir / "profile"
        log_path = workdir / "stderr.log"
        # Chromium writes crash reports and a dconf cache under the home folder, whatever the
        # profile: a temporary home keeps ~ untouched.
        env = os.environ | {
            "HOME": str(workdir),
            "XDG_CONFIG_HOME": str(workdir / ".config"),
            "XDG_CACHE_HOME": str(workdir / ".cache"),
        }
        command = [
            executable,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            # 0: Chromium picks a free port and writes it to DevToolsActivePort (no race).
            "--remote-debugging-port=0",
            "about:blank",
        ]
        try:
            with open(log_path, "wb") as stderr_file:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr_file,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise BrowserUnavailable(f"{executable}: {exc.strerror}") from None
        try:
            yield _Browser(process.pid, _wait_for_cdp(process, profile, log_path, executable))
        finally:
            _stop_process_group(process)
            # Crashpad handlers run in sessions of their own; they name the temporary home.
            for pid in _pids_mentioning(str(workdir)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_cdp(
    process: subprocess.Popen[bytes], profile: Path, log_path: Path, executable: str
) -> str:
    deadline = time.monotonic() + BROWSER_START_TIMEOUT
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            last = f": {lines[-1][:200]}" if lines else ""
            raise BrowserUnavailable(f"{executable} exited with code {process.returncode}{last}")
        port = port_file.read_text().split("\n", 1)[0].strip() if port_file.exists() else ""
        if port.isdigit():
            cdp_url = f"http://127.0.0.1:{port}"
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(f"{cdp_url}/json/version", timeout=2) as response,
            ):
                if "webSocketDebuggerUrl" in json.loads(response.read()):
                    return cdp_url
        time.sleep(0.05)
    raise BrowserUnavailable(
        f"{executable} opened no DevTools endpoint within {BROWSER_START_TIMEOUT:g} s"
    )


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


def _import_crawl4ai() -> Any:
    # Crawl4AI creates its folders at import time, under this variable or else in ~.
    os.environ.setdefault(
        "CRAWL4_AI_BASE_DIRECTORY",
        str(Path(tempfile.gettempdir()) / f"semops-crawl4ai-{os.getuid()}"),
    )
    os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")
    import crawl4ai

    return crawl4ai


class _MainFrameResponse:
    """The last response to a main-frame navigation of one page: its final URL, status and
    content type, also when the navigation itself failed (Chromium's 404 with no body)."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.status = 0
        self.content_type: str | None = None

    async def watch(self, page: Any, **_: Any) -> Any:
        def record(response: Any) -> None:
            if response.frame == page.main_frame and response.request.is_navigation_request():
                self.url = response.url
                self.status = response.status
                self.content_type = response.headers.get("content-type")

        page.on("response", record)
        return page


class ChromiumFetcher:
    fetched_with: FetchedWith = "chromium"

    def __init__(
        self, crawler: Any, run_config: Any, runner: asyncio.Runner, cfg: WebConfig
    ) -> None:
        self._crawler = crawler
        self._run_config = run_config
        self._runner = runner
        self._timeout = cfg.timeout
        # Navigation is bounded by the page timeout; this also bounds what comes after it.
        self._watchdog = cfg.timeout + cfg.settle + 10.0

    def fetch(self, url: str) -> Fetched:
        return self._runner.run(self._render(url))

    async def _render(self, url: str) -> Fetched:
        landed = _MainFrameResponse()
        self._crawler.crawler_strategy.set_hook("before_goto", landed.watch)
        try:
            result = await asyncio.wait_for(
                self._crawler.arun(url, config=self._run_config), self._watchdog
            )
        except TimeoutError:
            raise PageFailure(f"timed out after {self._timeout:g} s") from None
        if landed.url is not None and landed.status >= 400:
            raise PageFailure(f"HTTP {landed.status}")
        if not is_html_content_type(landed.content_type):
            raise PageFailure(f"not an HTML page (content type {landed.content_type})")
        # Crawl4AI's anti-bot heuristic marks short pages unsuccessful: the HTML decides here.
        if landed.url is None or not result.html:
            raise PageFailure(browser_error_reason(result.error_message, self._timeout))
        return Fetched(landed.url, landed.status, result.html)


@contextlib.contextmanager
def chromium_fetcher(cfg: WebConfig) -> Iterator[ChromiumFetcher]:
    with _chromium(cfg.browser) as browser:
        try:
            crawl4ai = _import_crawl4ai()
        except ImportError as exc:
            raise BrowserUnavailable(f"crawl4ai is not installed ({exc})") from None
        log.info("web: rendering pages in %s (pid %d)", cfg.browser, browser.pid)
        browser_config = crawl4ai.BrowserConfig(
            browser_mode="cdp",
            cdp_url=browser.cdp_url,
            verbose=False,
            # A new page in a context of its own for each URL; otherwise Crawl4AI reuses
            # Chromium's first tab, where a failed page's error navigation breaks the next one.
            create_isolated_context=True,
            # Stops Playwright's driver process on close (the browser is stopped by its pid).
            cdp_cleanup_on_close=True,
            cdp_close_delay=0,
        )
        run_config = crawl4ai.CrawlerRunConfig(
            cache_mode=crawl4ai.CacheMode.BYPASS,
            page_timeout=int(cfg.timeout * 1000),
            wait_until="load",
            # Content that scripts insert after the load event.
            delay_before_return_html=cfg.settle,
            # Only the HTML is kept: skip Crawl4AI's scraping and Markdown.
            prefetch=True,
            verbose=False,
        )
        with asyncio.Runner() as runner:
            crawler = crawl4ai.AsyncWebCrawler(config=browser_config)
            try:
                runner.run(crawler.start())
            except Exception as exc:  # Playwright could not attach to the browser
                raise BrowserUnavailable(f"Crawl4AI could not connect to it: {exc}") from None
            try:
                yield ChromiumFetcher(crawler, run_config, runner, cfg)
            finally:
                # A browser that died mid-crawl fails this too; it is stopped by its pid next.
                with contextlib.suppress(Exception):
                    runner.run(crawler.close())


def browser_error_reason(message: str | None, timeout: float) -> str:
    """A one-line reason from Crawl4AI's multi-line navigation error."""
    text = message or "no content returned"
    if re.search(r"Timeout \d+ms exceeded", text):
        return f"timed out after {timeout:g} s (the page never finished loading)"
    if code := re.search(r"net::(ERR_[A-Z_]+)", text):
        return _CHROMIUM_NET_ERRORS.get(code.group(1), code.group(1))
    # Crawl4AI wraps Playwright's one line ("Page.goto: ...") in context and source code.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("Page.")), lines[0])[:200]


_CHROMIUM_NET_ERRORS = {
    "ERR_NAME_NOT_RESOLVED": "DNS lookup failed",
    "ERR_CONNECTION_REFUSED": "connection refused",
    "ERR_CONNECTION_RESET": "connection reset",
    "ERR_CONNECTION_TIMED_OUT": "connection timed out",
    "ERR_TIMED_OUT": "timed out",
    "ERR_EMPTY_RESPONSE": "empty response",
    "ERR_ABORTED": "navigation aborted (a download?)",
    "ERR_UNSAFE_PORT": "port refused by Chromium as unsafe",
    "ERR_CERT_AUTHORITY_INVALID": "TLS certificate not trusted",
}
