"""The crawl: start URLs and the pages they link to, breadth first, into snapshots on disk."""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from semops.config.research import WebConfig
from semops.research.ingest.web.browser import BrowserUnavailable
from semops.research.ingest.web.chromium import chromium_fetcher
from semops.research.ingest.web.fetched import Fetched, FetchedWith, Fetcher, PageFailure
from semops.research.ingest.web.gate import HostGate, Pacer
from semops.research.ingest.web.page import extract_links
from semops.research.ingest.web.plain_http import HttpFetcher, web_limits
from semops.research.ingest.web.robots import Robots
from semops.research.ingest.web.snapshot import save_snapshot
from semops.research.ingest.web.urls import host_of, is_followable, normalize_url, site_of

# Progress and failures are information: the CLI shows them on stderr, as lines of its report.
log = logging.getLogger(__name__)

ROBOTS_TIMEOUT = 10.0


@dataclass(frozen=True)
class SavedPage:
    url: str
    html_path: Path


@dataclass(frozen=True)
class FailedPage:
    url: str
    reason: str


@dataclass(frozen=True)
class CrawlReport:
    """What a crawl saved and what it could not; `fetched_with` is None when nothing was fetched."""

    pages: tuple[SavedPage, ...]
    failures: tuple[FailedPage, ...]
    fetched_with: FetchedWith | None


def crawl(urls: Sequence[str], cfg: WebConfig, out_dir: Path) -> CrawlReport:
    """Fetch `urls` and the pages they link to, breadth first, into snapshots under `out_dir`.

    Limits: cfg.max_depth link hops, cfg.max_pages fetches in all; hosts of `urls` and
    cfg.allow_hosts only (with cfg.same_site, links keep to the start page's site); robots.txt;
    cfg.delay between requests to a host; private addresses refused unless cfg.allow_private.
    A page that fails is reported with its reason and the crawl goes on.
    """
    failures: list[FailedPage] = []
    starts: list[str] = []
    for raw in urls:
        url = normalize_url(raw)
        if url is None:
            failures.append(_fail(raw, "not an http(s) URL"))
        elif url not in starts:
            starts.append(url)
    run = _CrawlRun(starts, cfg, out_dir, failures)
    with contextlib.ExitStack() as stack:
        run.visit_all(stack)
    if run.queue:
        log.info(
            "web: stopped at research.web.max_pages = %d; %d linked page(s) not fetched",
            cfg.max_pages,
            len(run.queue),
        )
    return run.report()


@dataclass(frozen=True)
class _Visit:
    url: str
    depth: int
    # Site the crawl keeps to (same_site); None for a start URL: the site it lands on.
    site: str | None


class _CrawlRun:
    """One crawl's state: the queue, what was seen and saved, and the fetcher once started."""

    def __init__(
        self, starts: list[str], cfg: WebConfig, out_dir: Path, failures: list[FailedPage]
    ) -> None:
        self._cfg = cfg
        self._out_dir = out_dir
        self._failures = failures
        allowed_hosts = {host_of(u) for u in starts} | {h.lower() for h in cfg.allow_hosts}
        self._gate = HostGate(allowed_hosts, cfg.allow_private, tuple(cfg.allow_networks))
        self._pacer = Pacer(cfg.delay)
        robots_limits = web_limits(cfg, ROBOTS_TIMEOUT)
        self._robots = (
            Robots(self._gate, self._pacer, robots_limits) if cfg.respect_robots else None
        )
        self.queue = deque(_Visit(url, 0, None) for url in starts)
        self._seen = set(starts)
        self._saved_by_final_url: dict[str, str] = {}
        self._pages: list[SavedPage] = []
        self._fetches = 0
        self._fetcher: Fetcher | None = None

    def visit_all(self, stack: contextlib.ExitStack) -> None:
        """Visit the queue until it is empty or cfg.max_pages fetches were made; a browser
        started is stopped by `stack`."""
        while self.queue and self._fetches < self._cfg.max_pages:
            visit = self.queue.popleft()
            try:
                fetched, final_url, fetched_with = self._fetch(visit, stack)
            except PageFailure as exc:
                self._failures.append(_fail(visit.url, str(exc)))
                continue
            self._seen.add(final_url)
            if final_url in self._saved_by_final_url:
                log.info("web: %s is the page %s", visit.url, self._saved_by_final_url[final_url])
                continue
            html_path = save_snapshot(self._out_dir, visit.url, fetched, fetched_with)
            self._saved_by_final_url[final_url] = visit.url
            self._pages.append(SavedPage(visit.url, html_path))
            log.info("web: saved %s -> %s", visit.url, html_path)
            if visit.depth < self._cfg.max_depth:
                self._queue_links(visit, fetched.html, final_url)

    def _fetch(
        self, visit: _Visit, stack: contextlib.ExitStack
    ) -> tuple[Fetched, str, FetchedWith]:
        """The page, the normalized URL it landed on and what fetched it; raises PageFailure."""
        self._gate.check(visit.url)
        if self._robots is not None:
            self._robots.check(visit.url)
        if self._fetcher is None:  # started only once a page is to be fetched
            self._fetcher = _start_fetcher(self._cfg, self._gate, stack)
        self._pacer.wait(visit.url)
        self._fetches += 1
        fetched = self._fetcher.fetch(visit.url)
        final_url = normalize_url(fetched.final_url) or visit.url
        if final_url != visit.url and self._fetcher.fetched_with == "chromium":
            # The crawl's scope: the browser's proxy checks each hop's address but not its host
            # (it cannot tell a main-frame redirect from another host's script), so a page that
            # was redirected off the allowed hosts fails here. Plain HTTP checked each hop
            # before following it (_GuardedRedirects).
            self._gate.check_redirect(final_url)
        return fetched, final_url, self._fetcher.fetched_with

    def _queue_links(self, visit: _Visit, html: str, final_url: str) -> None:
        site = visit.site or site_of(final_url)
        for link in extract_links(html, final_url):
            if self._cfg.same_site:
                in_scope = site_of(link) == site
            else:
                in_scope = self._gate.allows_host(link)
            if link not in self._seen and in_scope and is_followable(link):
                self._seen.add(link)
                self.queue.append(_Visit(link, visit.depth + 1, site))

    def report(self) -> CrawlReport:
        fetched_with = self._fetcher.fetched_with if self._fetcher is not None else None
        return CrawlReport(tuple(self._pages), tuple(self._failures), fetched_with)


def _start_fetcher(cfg: WebConfig, gate: HostGate, stack: contextlib.ExitStack) -> Fetcher:
    try:
        return stack.enter_context(chromium_fetcher(cfg, gate))
    except BrowserUnavailable as exc:
        log.info("note: no browser available (%s): pages fetched without running JavaScript", exc)
        return HttpFetcher(gate, web_limits(cfg))


def _fail(url: str, reason: str) -> FailedPage:
    log.info("web: failed %s: %s", url, reason)
    return FailedPage(url, reason)
