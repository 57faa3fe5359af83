"""Pages rendered in Chromium (started in `browser`), with Crawl4AI connected to it over its
DevTools channel, and every request it makes checked by the proxy (`proxy`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from semops.config.research import WebConfig
from semops.research.ingest.web.browser import BrowserUnavailable, running_chromium
from semops.research.ingest.web.fetched import (
    Fetched,
    FetchedWith,
    PageFailure,
    is_html_content_type,
)
from semops.research.ingest.web.gate import HostGate
from semops.research.ingest.web.plain_http import web_limits
from semops.research.ingest.web.proxy import ERROR_HEADER, CheckingProxy, Refusal

log = logging.getLogger(__name__)


def _import_crawl4ai() -> Any:
    # Crawl4AI creates its folders at import time, under this variable or else in ~.
    os.environ.setdefault(
        "CRAWL4_AI_BASE_DIRECTORY",
        str(Path(tempfile.gettempdir()) / f"semops-crawl4ai-{os.getuid()}"),
    )
    os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")
    import crawl4ai

    return crawl4ai


class _PageWatch:
    """What one page's tab did: the last response to a main-frame navigation (its final URL,
    status and content type, also when the navigation itself failed: Chromium's 404 with no
    body), the URLs its main frame navigated to (the page and each redirect hop), and the URLs
    of all its requests (WebSockets included)."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.status = 0
        self.content_type: str | None = None
        self.proxy_error: str | None = None
        self.navigations: list[str] = []
        self.requested: list[str] = []

    async def watch(self, page: Any, **_: Any) -> Any:
        def is_navigation(request: Any) -> bool:
            with contextlib.suppress(Exception):  # a service worker's request has no frame
                return bool(request.frame == page.main_frame and request.is_navigation_request())
            return False

        def on_response(response: Any) -> None:
            if is_navigation(response.request):
                self.url = response.url
                self.status = response.status
                self.content_type = response.headers.get("content-type")
                self.proxy_error = response.headers.get(ERROR_HEADER.lower())

        def on_request(request: Any) -> None:
            self.requested.append(request.url)
            if is_navigation(request):
                self.navigations.append(request.url)

        page.on("response", on_response)
        page.on("request", on_request)
        page.on("websocket", lambda websocket: self.requested.append(websocket.url))
        return page


class ChromiumFetcher:
    fetched_with: FetchedWith = "chromium"

    def __init__(
        self,
        crawler: Any,
        run_config: Any,
        runner: asyncio.Runner,
        cfg: WebConfig,
        proxy: CheckingProxy,
    ) -> None:
        self._crawler = crawler
        self._run_config = run_config
        self._runner = runner
        self._proxy = proxy
        self._timeout = cfg.timeout
        self._limits = web_limits(cfg)
        # Navigation is bounded by the page timeout; this also bounds what comes after it.
        self._watchdog = cfg.timeout + cfg.settle + 10.0
        self._last = ("", _PageWatch())

    def fetch(self, url: str) -> Fetched:
        return self._runner.run(self._render(url))

    async def _render(self, url: str) -> Fetched:
        report_refusals(self._proxy.take_refusals(), *self._last)  # late ones of a page before
        landed = _PageWatch()
        self._last = (url, landed)
        self._crawler.crawler_strategy.set_hook("before_goto", landed.watch)
        try:
            result = await asyncio.wait_for(
                self._crawler.arun(url, config=self._run_config), self._watchdog
            )
        except TimeoutError:
            report_refusals(self._proxy.take_refusals(), url, landed)
            raise PageFailure(f"timed out after {self._timeout:g} s") from None
        if refused := report_refusals(self._proxy.take_refusals(), url, landed):
            raise PageFailure(refused)
        if landed.proxy_error is not None:  # the proxy could not connect
            raise PageFailure(landed.proxy_error)
        if landed.url is not None and landed.status >= 400:
            raise PageFailure(f"HTTP {landed.status}")
        if not is_html_content_type(landed.content_type):
            raise PageFailure(f"not an HTML page (content type {landed.content_type})")
        # Crawl4AI's anti-bot heuristic marks short pages unsuccessful: the HTML decides here.
        if landed.url is None or not result.html:
            raise PageFailure(browser_error_reason(result.error_message, self._timeout))
        # The proxy caps each response; what scripts built from them is capped here.
        if len(result.html.encode()) > self._limits.max_bytes:
            raise PageFailure(self._limits.too_large(url).reason)
        return Fetched(landed.url, landed.status, result.html)


def report_refusals(refusals: list[Refusal], url: str, page: _PageWatch) -> str | None:
    """Logs each request of `page` the proxy refused, by URL and reason; returns the page's
    failure reason when its own navigation (or a redirect hop) was refused.

    A tunnel (https, ws, wss) is refused by host:port: it is reported by the URLs of the page's
    requests to that host:port. A tunnel that matches none is Chromium's own (sign-in, search:
    it asks for those whatever the flags) or a preconnect: a debug line.
    """
    failure = None
    for refusal in dict.fromkeys(refusals):  # a tunnel refused once per request sent through it
        targets = _urls_of(refusal.target, page.requested)
        if not targets:
            log.debug(
                "web: refused Chromium's own request to %s: %s", refusal.target, refusal.reason
            )
        for target in targets:
            if target in page.navigations:
                if failure is None:
                    failure = refusal.reason
                    if target != url:
                        failure = f"redirected to {target}: {failure}"
            else:
                log.info("web: refused %s: %s", target, refusal.reason)
    return failure


def _urls_of(target: str, urls: list[str]) -> list[str]:
    """The URLs among `urls` that a refused URL or host:port (a tunnel) stands for."""
    if "://" in target:
        return [target]
    return [url for url in dict.fromkeys(urls) if _tunnel_of(url) == target]


def _tunnel_of(url: str) -> str | None:
    """The host:port Chromium asks the proxy to CONNECT to for `url` (https, wss, and ws: a
    WebSocket goes through a tunnel too); None for plain http."""
    parts = urlsplit(url)
    default_port = {"https": 443, "wss": 443, "ws": 80}.get(parts.scheme)
    if default_port is None or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    with contextlib.suppress(ValueError):
        return f"{host}:{parts.port or default_port}"
    return None


@contextlib.contextmanager
def chromium_fetcher(cfg: WebConfig, gate: HostGate) -> Iterator[ChromiumFetcher]:
    """Chromium and Crawl4AI, each request of the browser checked by `gate`'s address check (the
    crawl's: its scope is the crawl's to keep) and within research.web.max_bytes."""
    proxy = CheckingProxy(gate, web_limits(cfg))
    with proxy.serving(), running_chromium(cfg.browser, proxy.url) as browser:
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
                yield ChromiumFetcher(crawler, run_config, runner, cfg, proxy)
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
    "ERR_TUNNEL_CONNECTION_FAILED": "connection failed (https, through the crawl's proxy)",
    "ERR_CONNECTION_RESET": "connection reset",
    "ERR_CONNECTION_TIMED_OUT": "connection timed out",
    "ERR_TIMED_OUT": "timed out",
    "ERR_EMPTY_RESPONSE": "empty response",
    "ERR_ABORTED": "navigation aborted (a download?)",
    "ERR_UNSAFE_PORT": "port refused by Chromium as unsafe",
    "ERR_CERT_AUTHORITY_INVALID": "TLS certificate not trusted",
}
