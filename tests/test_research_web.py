"""Web ingest: a small site on 127.0.0.1 crawled in real Chromium and with the plain-HTTP
fallback; the pure URL, address and HTML helpers on tables."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from semops.config.research import WebConfig
from semops.config.validation import build
from semops.errors import ConfigError
from semops.research.documents import sha256_text
from semops.research.ingest.charset import declare_utf8, decode_html
from semops.research.ingest.web.chromium import browser_error_reason
from semops.research.ingest.web.crawl import CrawlReport, crawl
from semops.research.ingest.web.gate import non_public_kind
from semops.research.ingest.web.page import extract_links, extract_title
from semops.research.ingest.web.snapshot import snapshot_path
from semops.research.ingest.web.urls import normalize_url

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = f"Chromium must run at {CHROMIUM} for these tests: apt-get install chromium"
JS_TEXT = "Inserted by JavaScript after load"
TIMEOUT = 3.0

# ------------------------------------------------------------------- the site


def _page(title: str, body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"


def _site_pages(port: int) -> dict[str, str]:
    offsite = f"http://localhost:{port}/offsite.html"
    return {
        "/": _page(
            "Index",
            '<a href="a.html">A</a> <a href="/a.html#part">A again</a>'
            ' <a href="/private/secret.html">secret</a> <a href="/missing.html">missing</a>'
            ' <a href="/gone.html">gone</a>'
            ' <a href="/js.html">JS</a> <a href="/latin1.html">latin-1</a>'
            ' <a href="/hang.html">hangs</a> <a href="/data">data</a>'
            ' <a href="/away">away</a> <a href="/old">old</a>'
            f' <a href="{offsite}">other host</a> <a href="/picture.png">picture</a>'
            ' <a href="mailto:someone@example.org">mail</a> <a href="javascript:void(0)">js</a>',
        ),
        "/a.html": _page("Page A", '<p>Alpha text.</p><a href="/deep.html">deeper</a>'),
        "/deep.html": _page("Deep", '<p>Two hops away.</p><a href="/deeper.html">more</a>'),
        "/deeper.html": _page("Deeper", "<p>Three hops away.</p>"),
        "/hub.html": _page("Hub", f'<a href="{offsite}">other host</a> <a href="/away">away</a>'),
        "/private/secret.html": _page("Secret", "<p>robots.txt says no.</p>"),
        "/offsite.html": _page("Offsite", "<p>Another host.</p>"),
        "/js.html": _page(
            "Rendered",
            '<div id="main">Loading</div><script>'
            "addEventListener('load', () => fetch('/content.json').then(r => r.json())"
            ".then(d => { document.getElementById('main').textContent = d.text; }));"
            "</script>",
        ),
    }


LATIN1_PAGE = (
    '<html><head><meta charset="iso-8859-1"><title>Caf\xe9</title></head>'
    "<body><p>Un caf\xe9 cr\xe8me.</p></body></html>"
).encode("latin-1")


@dataclass(frozen=True)
class Request:
    path: str
    host: str
    at: float


class Site:
    """The test site, and every request it received."""

    def __init__(
        self, robots_status: int = 200, robots: bytes = b"User-agent: *\nDisallow: /private/\n"
    ) -> None:
        self.robots_status = robots_status
        self.robots = robots
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.pages = _site_pages(self.port)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends the requests held open by /hang.html
        self.server.site = self  # type: ignore[attr-defined]

    def request_count(self) -> int:
        with self.lock:
            return len(self.requests)

    def requests_since(self, start: int) -> list[Request]:
        with self.lock:
            return self.requests[start:]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        site: Site = self.server.site  # type: ignore[attr-defined]
        with site.lock:
            site.requests.append(Request(self.path, self.headers["Host"], time.monotonic()))
        if self.path == "/hang.html":
            site.release.wait(60)
            return
        if self.path == "/robots.txt":
            self._send(site.robots_status, "text/plain", site.robots)
        elif self.path == "/content.json":
            self._send(200, "application/json", json.dumps({"text": JS_TEXT}).encode())
        elif self.path == "/data":
            self._send(200, "application/json", b'{"not": "a page"}')
        elif self.path == "/latin1.html":
            self._send(200, "text/html; charset=iso-8859-1", LATIN1_PAGE)
        elif self.path == "/gone.html":  # no body: Chromium shows an error page of its own
            self._send(410, "text/html", b"")
        elif self.path == "/away":
            self._redirect(f"http://localhost:{site.port}/a.html")
        elif self.path == "/old":
            self._redirect("/a.html")
        elif self.path in site.pages:
            self._send(200, "text/html; charset=utf-8", site.pages[self.path].encode())
        else:
            self._send(404, "text/html", b"<h1>Not found</h1>")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(site: Site) -> Iterator[Site]:
    thread = threading.Thread(target=site.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release.set()
        site.server.shutdown()
        site.server.server_close()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with _serving(Site()) as site:
        yield site


def _config(**overrides: object) -> WebConfig:
    fields: dict[str, object] = {
        "allow_private": True,
        "delay": 0.0,
        "timeout": TIMEOUT,
        "max_pages": 50,
        "browser": CHROMIUM,
    }
    return WebConfig(**(fields | overrides))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Crawled:
    report: CrawlReport
    out_dir: Path
    stdout: str
    stderr: str
    # What the site received during the crawl.
    requests: list[Request]

    def paths(self, host: str) -> list[str]:
        return [request.path for request in self.requests if request.host == host]


@contextlib.contextmanager
def _web_log_to(stream: io.StringIO) -> Iterator[None]:
    """The crawl's log lines written to `stream`, one a line, as the CLI shows them."""
    web_log = logging.getLogger("semops.research.ingest.web")
    handler = logging.StreamHandler(stream)
    level = web_log.level
    web_log.addHandler(handler)
    web_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        web_log.removeHandler(handler)
        web_log.setLevel(level)


def _crawl(site: Site, urls: list[str], cfg: WebConfig, out_dir: Path) -> Crawled:
    stdout, stderr = io.StringIO(), io.StringIO()
    start = site.request_count()
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        _web_log_to(stdout),
    ):
        report = crawl(urls, cfg, out_dir)
    return Crawled(
        report, out_dir, stdout.getvalue(), stderr.getvalue(), site.requests_since(start)
    )


def _saved(crawled: Crawled) -> dict[str, Path]:
    return {page.url: page.html_path for page in crawled.report.pages}


def _failures(crawled: Crawled) -> dict[str, str]:
    return {failure.url: failure.reason for failure in crawled.report.failures}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _live_processes(group: int | None = None, mentioning: str | None = None) -> list[int]:
    """Running processes (not zombies) of a process group, or whose command line mentions a
    text."""
    live = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            state, _ppid, pgid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            if state != "Z" and (
                int(pgid) == group or (mentioning is not None and mentioning in cmdline)
            ):
                live.append(int(proc.name))
    return live


def _browser_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("semops-chromium-*")}


# Where Chromium (crash reports, dconf) and Crawl4AI write when left to their defaults.
HOME_PATHS = (".config/chromium", ".cache/dconf", ".crawl4ai")


def _home_state() -> set[tuple[str, int]]:
    state = set()
    for name in HOME_PATHS:
        for path in [Path.home() / name, *(Path.home() / name).rglob("*")]:
            with contextlib.suppress(OSError):
                state.add((str(path), path.stat().st_mtime_ns))
    return state


# ------------------------------------------------------------------- Chromium


@pytest.fixture(scope="module")
def chromium_crawl(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Crawled:
    assert Path(CHROMIUM).exists(), INSTALL_HINT
    browser_dirs, home = _browser_dirs(), _home_state()
    crawled = _crawl(site, [site.url + "/"], _config(), tmp_path_factory.mktemp("chromium"))
    assert crawled.report.fetched_with == "chromium", f"{INSTALL_HINT}\n{crawled.stdout}"
    assert _browser_dirs() == browser_dirs, "the browser's temporary folder was left behind"
    assert _home_state() == home, "the crawl wrote under the home folder"
    return crawled


def test_chromium_saves_the_pages_it_may_fetch(chromium_crawl: Crawled, site: Site) -> None:
    saved = _saved(chromium_crawl)
    base = site.url
    assert sorted(saved) == [f"{base}/", f"{base}/a.html", f"{base}/js.html", f"{base}/latin1.html"]
    for url, html_path in saved.items():
        assert html_path == snapshot_path(chromium_crawl.out_dir, url)
        assert html_path.parent.name == f"127.0.0.1_{site.port}"
        metadata = json.loads(html_path.with_suffix(".json").read_text())
        assert metadata == {
            "url": url,
            "final_url": url,
            "title": metadata["title"],
            "status": 200,
            "fetched_with": "chromium",
            "javascript": True,
            "sha256": sha256_text(html_path.read_text(encoding="utf-8")),
        }
    assert json.loads(saved[f"{base}/a.html"].with_suffix(".json").read_text())["title"] == "Page A"
    # Crawl4AI's own logging stays quiet: one line per page, ours.
    assert chromium_crawl.stderr == ""
    assert f"web: saved {base}/a.html -> {saved[f'{base}/a.html']}" in chromium_crawl.stdout


def test_chromium_runs_the_pages_javascript(chromium_crawl: Crawled, site: Site) -> None:
    html = _saved(chromium_crawl)[site.url + "/js.html"].read_text()
    assert JS_TEXT in html
    assert "/content.json" in chromium_crawl.paths(f"127.0.0.1:{site.port}")


def test_chromium_snapshot_is_utf8_and_says_so(chromium_crawl: Crawled, site: Site) -> None:
    raw = _saved(chromium_crawl)[site.url + "/latin1.html"].read_bytes()
    assert "Un café crème." in raw.decode("utf-8")
    assert b'<meta charset="utf-8">' in raw
    assert b"iso-8859-1" not in raw


def test_chromium_reports_each_failure_and_goes_on(chromium_crawl: Crawled, site: Site) -> None:
    base = site.url
    assert _failures(chromium_crawl) == {
        f"{base}/private/secret.html": f"disallowed by {base}/robots.txt",
        f"{base}/missing.html": "HTTP 404",
        f"{base}/gone.html": "HTTP 410",
        f"{base}/hang.html": "timed out after 3 s (the page never finished loading)",
        f"{base}/data": "not an HTML page (content type application/json)",
        f"{base}/away": (
            f"redirected to http://localhost:{site.port}/a.html: host localhost is not allowed: "
            "add it to research.web.allow_hosts to crawl it"
        ),
    }
    for url, reason in _failures(chromium_crawl).items():
        assert f"web: failed {url}: {reason}\n" in chromium_crawl.stdout
    # A redirect onto a page already saved is that page, neither saved twice nor a failure.
    assert f"web: {base}/old is the page {base}/a.html" in chromium_crawl.stdout


def test_chromium_keeps_to_the_limits(chromium_crawl: Crawled, site: Site) -> None:
    requested = chromium_crawl.paths(f"127.0.0.1:{site.port}")
    assert not [path for path in requested if path.startswith("/private/")]  # robots.txt
    assert requested.count("/robots.txt") == 1
    assert "/deep.html" not in requested  # two hops from the start, max_depth 1
    assert "/picture.png" not in requested
    # Another host (same_site), not allowed: its page is never visited. The browser's requests
    # are held to addresses (loopback is allowed here), not hosts: the redirect from /away went
    # there, and the page failed for the crawl's scope.
    assert "/a.html" in chromium_crawl.paths(f"localhost:{site.port}")
    assert "/offsite.html" not in chromium_crawl.paths(f"localhost:{site.port}")


def test_chromium_is_stopped_after_the_crawl(chromium_crawl: Crawled) -> None:
    found = re.search(r"web: rendering pages in \S+ \(pid (\d+)\)", chromium_crawl.stdout)
    assert found, chromium_crawl.stdout
    pid = int(found.group(1))
    assert _live_processes(group=pid) == []
    # Nor Chromium's crashpad handlers, which leave the group: they name its temporary home.
    assert _live_processes(mentioning="semops-chromium-") == []
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_chromium_reports_a_page_it_cannot_connect_to(site: Site, tmp_path: Path) -> None:
    # Through the crawl's proxy as directly: the reason is the connection's.
    url = f"http://127.0.0.1:{_free_port()}/"
    crawled = _crawl(site, [url], _config(respect_robots=False), tmp_path)
    assert crawled.report.fetched_with == "chromium", crawled.stdout
    assert _failures(crawled) == {url: "connection refused"}


CRAWL_UNTIL_INTERRUPTED = """
import signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # also where the shell ignores it
from semops.config.research import WebConfig
from semops.errors import ConfigError
from semops import log
from semops.research.ingest.web.crawl import crawl
log.configure()  # as the CLI does: the crawl's lines on stderr
cfg = WebConfig(allow_private=True, delay=0, timeout=60, browser=sys.argv[2])
crawl([sys.argv[1]], cfg, Path(sys.argv[3]))
"""


def test_chromium_is_stopped_on_keyboard_interrupt(site: Site, tmp_path: Path) -> None:
    browser_dirs = _browser_dirs()
    start = site.request_count()
    command = [sys.executable, "-c", CRAWL_UNTIL_INTERRUPTED, site.url + "/hang.html"]
    with subprocess.Popen(
        [*command, CHROMIUM, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stderr is not None
        found = re.search(r"\(pid (\d+)\)", child.stderr.readline())
        assert found, INSTALL_HINT
        deadline = time.monotonic() + 30
        while "/hang.html" not in [r.path for r in site.requests_since(start)]:
            assert time.monotonic() < deadline, "Chromium never asked for the page"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)  # while Chromium waits for the page
        _, stderr = child.communicate(timeout=30)
    assert "KeyboardInterrupt" in stderr
    assert _live_processes(group=int(found.group(1))) == []
    assert _live_processes(mentioning="semops-chromium-") == []
    assert _browser_dirs() == browser_dirs


def test_chromium_snapshots_are_byte_identical_on_a_second_crawl(
    chromium_crawl: Crawled, site: Site, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    shutil.copytree(chromium_crawl.out_dir, again)
    second = _crawl(site, sorted(_saved(chromium_crawl)), _config(max_depth=0), again)
    assert sorted(_saved(second)) == sorted(_saved(chromium_crawl))
    # Each page's snapshot was replaced, with the same bytes, and nothing else was written.
    assert _files(again) == _files(chromium_crawl.out_dir)


# ------------------------------------------------------------------- plain-HTTP fallback


@pytest.fixture(scope="module")
def http_crawl(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Crawled:
    closed_port = _free_port()
    urls = [site.url + "/", f"http://127.0.0.1:{closed_port}/"]
    cfg = _config(browser="/nonexistent/chromium")
    return _crawl(site, urls, cfg, tmp_path_factory.mktemp("http"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fallback_notes_once_that_javascript_was_not_run(http_crawl: Crawled) -> None:
    note = (
        "note: no browser available (/nonexistent/chromium: No such file or directory): "
        "pages fetched without running JavaScript"
    )
    assert http_crawl.stdout.count("note: ") == 1
    assert note in http_crawl.stdout
    assert http_crawl.report.fetched_with == "http"


def test_fallback_snapshots_are_the_html_as_served(http_crawl: Crawled, site: Site) -> None:
    saved = _saved(http_crawl)
    assert sorted(saved) == sorted(
        site.url + path for path in ("/", "/a.html", "/js.html", "/latin1.html")
    )
    js_html = saved[site.url + "/js.html"].read_text()
    assert JS_TEXT not in js_html
    assert '<div id="main">Loading</div>' in js_html
    assert js_html == declare_utf8(site.pages["/js.html"])
    latin1 = saved[site.url + "/latin1.html"].read_bytes()
    assert latin1 == LATIN1_PAGE.decode("latin-1").replace("iso-8859-1", "utf-8").encode()
    metadata = json.loads(saved[site.url + "/js.html"].with_suffix(".json").read_text())
    assert metadata["fetched_with"] == "http"
    assert metadata["javascript"] is False
    assert metadata["title"] == "Rendered"


def test_fallback_reports_each_failure_and_goes_on(http_crawl: Crawled, site: Site) -> None:
    failures = _failures(http_crawl)
    base = site.url
    closed = next(url for url in failures if not url.startswith(base))
    assert failures.pop(closed) == f"connection refused (fetching {closed}robots.txt)"
    assert failures == {
        f"{base}/private/secret.html": f"disallowed by {base}/robots.txt",
        f"{base}/missing.html": "HTTP 404",
        f"{base}/gone.html": "HTTP 410",
        f"{base}/hang.html": "timed out after 3 s (research.web.timeout)",
        f"{base}/data": "not an HTML page (content type application/json)",
        f"{base}/away": (
            f"redirected to http://localhost:{site.port}/a.html: host localhost is not allowed: "
            "add it to research.web.allow_hosts to crawl it"
        ),
    }
    # The redirect to a host that is not allowed was refused before connecting to it.
    assert "/away" in http_crawl.paths(f"127.0.0.1:{site.port}")
    assert http_crawl.paths(f"localhost:{site.port}") == []


# ------------------------------------------------------------------- limits, pace, addresses


def test_max_depth_and_max_pages(site: Site, tmp_path: Path) -> None:
    cfg = _config(browser="/nonexistent/chromium", max_depth=1)
    deep = _crawl(site, [site.url + "/a.html"], cfg, tmp_path / "depth")
    assert sorted(_saved(deep)) == [site.url + "/a.html", site.url + "/deep.html"]

    limited = _crawl(site, [site.url + "/"], replace(cfg, max_pages=2), tmp_path / "pages")
    assert sorted(_saved(limited)) == [site.url + "/", site.url + "/a.html"]
    assert "web: stopped at research.web.max_pages = 2;" in limited.stdout


def test_allow_hosts_lets_the_crawl_leave_the_site(site: Site, tmp_path: Path) -> None:
    cfg = _config(browser="/nonexistent/chromium", same_site=False, allow_hosts=["LocalHost"])
    crawled = _crawl(site, [site.url + "/hub.html"], cfg, tmp_path)
    other = f"http://localhost:{site.port}"
    assert set(_saved(crawled)) == {
        f"{other}/offsite.html",
        site.url + "/away",
        site.url + "/hub.html",
    }
    away = json.loads(_saved(crawled)[site.url + "/away"].with_suffix(".json").read_text())
    assert away["final_url"] == f"{other}/a.html"
    assert away["title"] == "Page A"
    assert crawled.report.failures == ()


@pytest.mark.parametrize(
    ("robots_status", "reason"),
    [
        (404, None),  # no robots.txt: everything allowed
        (403, None),  # RFC 9309: any 4xx counts as no robots.txt
        (503, "/robots.txt answered HTTP 503: the site counts as disallowed"),
    ],
)
def test_robots_txt_that_is_missing_or_failing(
    tmp_path: Path, robots_status: int, reason: str | None
) -> None:
    with _serving(Site(robots_status)) as site:
        secret = site.url + "/private/secret.html"
        crawled = _crawl(site, [secret], _config(browser="/nonexistent/chromium"), tmp_path)
    if reason is None:
        assert list(_saved(crawled)) == [secret]
    else:
        assert _failures(crawled) == {secret: site.url + reason}
        assert [r.path for r in crawled.requests] == ["/robots.txt"]


def test_robots_txt_wildcards(tmp_path: Path) -> None:
    # The standard library's parser reads `*` and `$` literally and would allow both pages.
    robots = b"User-agent: *\nDisallow: /dee*\nDisallow: /*/secret.html$\n"
    with _serving(Site(robots=robots)) as site:
        urls = [site.url + path for path in ("/a.html", "/deep.html", "/private/secret.html")]
        crawled = _crawl(
            site, urls, _config(browser="/nonexistent/chromium", max_depth=0), tmp_path
        )
    assert list(_saved(crawled)) == [site.url + "/a.html"]
    assert _failures(crawled) == {url: f"disallowed by {site.url}/robots.txt" for url in urls[1:]}


def test_requests_to_a_host_are_spaced_by_the_delay(site: Site, tmp_path: Path) -> None:
    cfg = _config(browser="/nonexistent/chromium", max_depth=2, delay=0.4)
    crawled = _crawl(site, [site.url + "/a.html"], cfg, tmp_path)
    assert len(crawled.report.pages) == 3
    times = [request.at for request in crawled.requests]
    assert len(times) == 4  # robots.txt and three pages
    # Spaced when sent; the server sees them a few ms later or earlier.
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.38


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("localhost", "localhost resolves to "),
    ],
)
def test_private_addresses_are_refused_unless_allowed(
    site: Site, tmp_path: Path, host: str, reason: str
) -> None:
    url = f"http://{host}:{site.port}/"
    crawled = _crawl(site, [url], _config(allow_private=False), tmp_path)
    [failure] = crawled.report.failures
    assert failure.url == url
    assert failure.reason.startswith(reason)
    assert failure.reason.endswith(
        ": set research.web.allow_private to true"
        " (or list its network in research.web.allow_networks) to crawl it"
    )
    assert f"web: failed {url}: {failure.reason}" in crawled.stdout
    assert crawled.requests == []  # not even robots.txt was asked for
    assert crawled.report.fetched_with is None  # nor a browser started
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_unresolvable_host_and_non_http_url_are_reported(site: Site, tmp_path: Path) -> None:
    crawled = _crawl(
        site,
        ["http://no-such-host.invalid/", "ftp://example.org/file"],
        _config(allow_private=False),
        tmp_path,
    )
    failures = _failures(crawled)
    assert failures["ftp://example.org/file"] == "not an http(s) URL"
    assert failures["http://no-such-host.invalid/"].startswith(
        "DNS lookup of no-such-host.invalid failed"
    )


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_non_public_kind(address: str, kind: str | None) -> None:
    assert non_public_kind(address) == kind


# ------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("HTTP://Example.ORG:80", None, "http://example.org/"),
        ("https://example.org:443/a?b=1#frag", None, "https://example.org/a?b=1"),
        ("https://user:secret@example.org:8443/x", None, "https://example.org:8443/x"),
        ("../c.html#top", "http://h.test/a/b/page.html", "http://h.test/a/c.html"),
        ("//other.test/p", "https://h.test/", "https://other.test/p"),
        ("?page=2", "http://h.test/list", "http://h.test/list?page=2"),
        ("http://[::1]:8080/", None, "http://[::1]:8080/"),
        ("mailto:someone@example.org", "http://h.test/", None),
        ("javascript:void(0)", "http://h.test/", None),
        ("ftp://h.test/file", None, None),
        ("http://h.test:notaport/", None, None),
        ("/relative/only", None, None),
    ],
)
def test_normalize_url(url: str, base: str | None, expected: str | None) -> None:
    assert normalize_url(url, base) == expected


def test_extract_links_resolves_dedupes_and_keeps_order() -> None:
    html = (
        '<html><head><base href="/docs/"><title> The  Title </title></head><body>'
        '<a href="b.html">b</a><a href="a.html#x">a</a><a href="b.html">b again</a>'
        '<a href="mailto:x@y.z">m</a><a name="anchor">no href</a>'
        '<map><area href="/map.html"></map><a href="HTTP://Other.test/">o</a></body></html>'
    )
    assert extract_links(html, "http://h.test/index.html") == [
        "http://h.test/docs/b.html",
        "http://h.test/docs/a.html",
        "http://h.test/map.html",
        "http://other.test/",
    ]
    assert extract_title(html) == "The Title"
    assert extract_title("<p>no title</p>") == ""


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            '<head><meta charset="ISO-8859-1"><title>t</title></head>',
            '<head><meta charset="utf-8"><title>t</title></head>',
        ),
        (
            '<HEAD><META http-equiv="Content-Type" content="text/html; charset=windows-1252">',
            '<HEAD><META http-equiv="Content-Type" content="text/html; charset=utf-8">',
        ),
        ("<html><head><title>t</title>", '<html><head><meta charset="utf-8"><title>t</title>'),
        ("<p>no head</p>", "<p>no head</p>"),
    ],
)
def test_declare_utf8(html: str, expected: str) -> None:
    assert declare_utf8(html) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ("café".encode(), "text/html; charset=utf-8", "café"),
        ("café".encode("latin-1"), "text/html; charset=ISO-8859-1", "café"),
        # WHATWG: a page labelled latin-1 is decoded as windows-1252, as browsers do.
        (b"\x93quoted\x94", "text/html; charset=iso-8859-1", "\u201cquoted\u201d"),
        # Its 5 undefined bytes are the C1 controls there; the quotes stay windows-1252's.
        (b"\x93caf\xe9\x81", "text/html; charset=us-ascii", "\u201ccaf\xe9\x81"),
        # A UTF-16 label in bytes read as ASCII means UTF-8 (WHATWG); the header's is obeyed.
        (b'<meta charset="utf-16">caf\xc3\xa9', None, '<meta charset="utf-16">caf\xe9'),
        ("café".encode("utf-16-le"), "text/html; charset=utf-16le", "café"),
        (
            b'<meta charset="koi8-r">' + "Привет".encode("koi8-r"),
            "text/html",
            '<meta charset="koi8-r">Привет',
        ),
        (b"\xef\xbb\xbfbom wins", "text/html; charset=iso-8859-1", "bom wins"),
        ("café".encode(), None, "café"),
        (b"caf\xe9", "text/html; charset=no-such-codec", "caf\ufffd"),
    ],
)
def test_decode_html(body: bytes, content_type: str | None, expected: str) -> None:
    assert decode_html(body, content_type) == expected


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            "Error: Failed on navigating ACS-GOTO:\nPage.goto: Timeout 3000ms exceeded.\n",
            "timed out after 3 s (the page never finished loading)",
        ),
        ("Page.goto: net::ERR_CONNECTION_REFUSED at http://h.test/", "connection refused"),
        ("Page.goto: net::ERR_SOMETHING_NEW at http://h.test/", "ERR_SOMETHING_NEW"),
        (
            "Unexpected error in _crawl_web at line 779:\nError: Failed on navigating ACS-GOTO:\n"
            "Page.goto: Target page, context or browser has been closed\nCall log:\n"
            "  - navigating\n\nCode context:\n 779 →     raise RuntimeError(...)\n",
            "Page.goto: Target page, context or browser has been closed",
        ),
        ("Browser crashed", "Browser crashed"),
        (None, "no content returned"),
    ],
)
def test_browser_error_reason(message: str | None, reason: str) -> None:
    assert browser_error_reason(message, 3.0) == reason


def test_settle_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"research\.web\.settle must be >= 0, got -1\.0"):
        build(WebConfig, {"settle": -1.0}, "research.web")
