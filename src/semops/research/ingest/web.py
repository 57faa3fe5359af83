"""Web ingest: crawl pages once and keep snapshots of them on disk.

`semops research add URL` calls `crawl`; the research-embed stage later converts the snapshots
(rendered HTML + a metadata JSON per page) with Docling, so the stage never touches the network.
Pages are rendered in Debian's Chromium through Crawl4AI, connected over CDP to a browser this
module starts and stops itself; where no browser can start, pages are fetched with plain HTTP
and their JavaScript is not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from semops.config.research import WebConfig
from semops.io import write_bytes, write_json
from semops.research.documents import sha256_text

# Both the robots.txt user agent we obey and the one the plain-HTTP fetch sends.
USER_AGENT = "semops-research"
ROBOTS_TIMEOUT = 10.0
BROWSER_START_TIMEOUT = 30.0
MAX_PAGE_BYTES = 20 * 2**20
HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})
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
# Links to these are not followed: a fetch would only end in "not an HTML page".
NON_PAGE_EXTENSIONS = frozenset(
    {".7z", ".avi", ".bmp", ".bz2", ".css", ".csv", ".doc", ".docx", ".epub", ".gif", ".gz"}
    | {".ico", ".jpeg", ".jpg", ".js", ".json", ".mov", ".mp3", ".mp4", ".ogg", ".pdf", ".png"}
    | {".ppt", ".pptx", ".rar", ".svg", ".tar", ".tgz", ".wav", ".webm", ".webp", ".woff"}
    | {".woff2", ".xls", ".xlsx", ".xz", ".zip"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# WHATWG: these labels mean windows-1252, which browsers use to decode such pages.
_WINDOWS_1252_LABELS = frozenset({"iso-8859-1", "iso8859-1", "latin1", "latin-1", "us-ascii"})

FetchedWith = Literal["chromium", "http"]


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


class _PageFailure(Exception):
    """Why one page was not saved (a one-line reason); the crawl goes on with the others."""


class _BrowserUnavailable(Exception):
    """The browser could not start: the crawl falls back to plain HTTP."""


# ---------------------------------------------------------------- pure functions


def normalize_url(url: str, base: str | None = None) -> str | None:
    """`url` (resolved against `base`) in one canonical spelling, or None if it is not http(s).

    Lowercase scheme and host, no default port, no fragment, no user:password@ (a snapshot
    must not keep credentials), "/" for an empty path.
    """
    absolute = urljoin(base, url.strip()) if base else url.strip()
    parts = urlsplit(absolute)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def site_of(url: str) -> str:
    """scheme://host[:port] of a normalized URL: what same_site and robots.txt go by."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def non_public_kind(address: str) -> str | None:
    """The kind of a non-public IP address ("loopback", "private", ...), None for a public one.

    An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is judged by the IPv4 address it carries.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    kinds = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-global", not ip.is_global),
    )
    return next((kind for kind, matches in kinds if matches), None)


def is_followable(url: str) -> bool:
    """Whether a link may lead to a page (not an image, archive, style sheet, ...)."""
    return Path(urlsplit(url).path).suffix.lower() not in NON_PAGE_EXTENSIONS


def is_html_content_type(content_type: str | None) -> bool:
    """A missing Content-Type counts as HTML, as browsers sniff such pages as HTML."""
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() in HTML_CONTENT_TYPES


class _PageParser(HTMLParser):
    """Collects a page's title, <base href> and link targets, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base: str | None = None
        self.title_parts: list[str] = []
        self._in_title = False
        self._title_done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag in ("a", "area") and href:
            self.hrefs.append(href)
        elif tag == "base" and href and self.base is None:
            self.base = href
        elif tag == "title" and not self._title_done:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self._title_done = True

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)


def _parse_page(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


def extract_links(html: str, page_url: str) -> list[str]:
    """The page's http(s) links, normalized, without duplicates, in document order."""
    parser = _parse_page(html)
    base = urljoin(page_url, parser.base) if parser.base else page_url
    links = (normalize_url(href, base) for href in parser.hrefs)
    return list(dict.fromkeys(link for link in links if link is not None))


def extract_title(html: str) -> str:
    return " ".join("".join(_parse_page(html).title_parts).split())


_META_TAG = re.compile(r"<meta\b[^>]*>", re.IGNORECASE)
_CHARSET_VALUE = re.compile(r"""(charset\s*=\s*["']?)([^"'\s;/>]+)""", re.IGNORECASE)
_HEAD_TAG = re.compile(r"<head\b[^>]*>", re.IGNORECASE)


def declared_charset(body: bytes, content_type: str | None) -> str:
    """The codec to decode a served page with: BOM, then HTTP header, then <meta>, then UTF-8."""
    if body.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    label = None
    if content_type:
        found = _CHARSET_VALUE.search(content_type)
        label = found.group(2) if found else None
    if label is None:
        head = body[:4096].decode("ascii", errors="replace")
        for tag in _META_TAG.findall(head):
            if found := _CHARSET_VALUE.search(tag):
                label = found.group(2)
                break
    if label is None:
        return "utf-8"
    label = label.strip().lower()
    return "cp1252" if label in _WINDOWS_1252_LABELS else label


def decode_html(body: bytes, content_type: str | None) -> str:
    codec = declared_charset(body, content_type)
    try:
        return body.decode(codec, errors="replace")
    except LookupError:  # a charset label Python does not know
        return body.decode("utf-8", errors="replace")


def declare_utf8(html: str) -> str:
    """`html` saying that it is UTF-8, as the snapshot file is.

    A parser given the file's bytes (Docling's BeautifulSoup) decodes them with the charset
    the page declares: a page served as ISO-8859-1 but stored as UTF-8 would come out garbled.
    """

    def to_utf8(tag: re.Match[str]) -> str:
        return _CHARSET_VALUE.sub(r"\g<1>utf-8", tag.group(0))

    rewritten = _META_TAG.sub(to_utf8, html)
    if any(_CHARSET_VALUE.search(tag) for tag in _META_TAG.findall(rewritten)):
        return rewritten
    head = _HEAD_TAG.search(rewritten)
    if head is None:
        return rewritten
    return rewritten[: head.end()] + '<meta charset="utf-8">' + rewritten[head.end() :]


def snapshot_path(out_dir: Path, url: str) -> Path:
    """out_dir/<host>[_<port>]/<sha256(url)[:16]>.html; the metadata is the .json beside it."""
    parts = urlsplit(url)
    folder = (parts.hostname or "").replace(":", "-")  # an IPv6 literal
    if parts.port is not None:
        folder += f"_{parts.port}"
    return out_dir / folder / f"{sha256_text(url)[:16]}.html"


def snapshot_metadata(
    url: str, final_url: str, title: str, status: int, fetched_with: FetchedWith, html: str
) -> dict[str, Any]:
    """No timestamp: the same page gives the same bytes."""
    return {
        "url": url,
        "final_url": final_url,
        "title": title,
        "status": status,
        "fetched_with": fetched_with,
        "javascript": fetched_with == "chromium",
        "sha256": sha256_text(html),
    }


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


def _network_reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


# ---------------------------------------------------------------- policy: hosts, robots, pace


class _Gate:
    """Whether a URL's host may be fetched: an allowed host, on public addresses only (unless
    private ones are allowed). Each host is resolved once."""

    def __init__(self, allowed_hosts: set[str], allow_private: bool) -> None:
        self._allowed_hosts = allowed_hosts
        self._allow_private = allow_private
        self._refusals: dict[str, str | None] = {}

    def allows_host(self, url: str) -> bool:
        return host_of(url) in self._allowed_hosts

    def check(self, url: str) -> None:
        host = host_of(url)
        if host not in self._allowed_hosts:
            raise _PageFailure(
                f"host {host} is not allowed: add it to research.web.allow_hosts to crawl it"
            )
        if self._allow_private:
            return
        if host not in self._refusals:
            self._refusals[host] = _address_refusal(host, urlsplit(url).port)
        if refusal := self._refusals[host]:
            raise _PageFailure(refusal)


def _address_refusal(host: str, port: int | None) -> str | None:
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"DNS lookup of {host} failed ({exc.strerror})"
    for info in infos:
        address = str(info[4][0])
        if kind := non_public_kind(address):
            where = f"{host} is" if address == host else f"{host} resolves to {address},"
            return f"{where} a {kind} address: set research.web.allow_private to true to crawl it"
    return None


class _Pacer:
    """At least `delay` seconds between two requests to the same host."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._last: dict[str, float] = {}

    def wait(self, url: str) -> None:
        host = host_of(url)
        if host in self._last:
            time.sleep(max(0.0, self._last[host] + self._delay - time.monotonic()))
        self._last[host] = time.monotonic()


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the gate allows (before connecting to it)."""

    def __init__(self, gate: _Gate) -> None:
        self._gate = gate

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        target = normalize_url(newurl)
        if target is None:
            raise _PageFailure(f"redirected to {newurl}, which is not an http(s) URL")
        try:
            self._gate.check(target)
        except _PageFailure as exc:
            raise _PageFailure(f"redirected to {target}: {exc}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class _Response:
    final_url: str
    status: int
    content_type: str | None
    body: bytes


def _http_get(
    opener: urllib.request.OpenerDirector, url: str, timeout: float, require_html: bool
) -> _Response:
    """GET `url`; an HTTP error status is returned (without its body), a network error raised
    as _PageFailure. The body is read within about `timeout` and at most MAX_PAGE_BYTES."""
    request = urllib.request.Request(
        url, headers={"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.5"}
    )
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            content_type = response.headers.get("Content-Type")
            if require_html and not is_html_content_type(content_type):
                raise _PageFailure(f"not an HTML page (content type {content_type})")
            body = bytearray()
            while chunk := response.read(1 << 16):
                body += chunk
                if len(body) > MAX_PAGE_BYTES:
                    raise _PageFailure(f"larger than {MAX_PAGE_BYTES // 2**20} MiB")
                if time.monotonic() > deadline:
                    raise _PageFailure(f"timed out after {timeout:g} s")
            return _Response(response.geturl(), response.status, content_type, bytes(body))
    except urllib.error.HTTPError as exc:
        exc.close()
        return _Response(exc.geturl() or url, exc.code, exc.headers.get("Content-Type"), b"")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise _PageFailure(_network_reason(exc, timeout)) from None


class _Robots:
    """robots.txt of each site, fetched once (RFC 9309: a 4xx file allows all, an unreachable
    one disallows all)."""

    def __init__(
        self, opener: urllib.request.OpenerDirector, pacer: _Pacer, timeout: float
    ) -> None:
        self._opener = opener
        self._pacer = pacer
        self._timeout = timeout
        self._rules: dict[str, RobotFileParser | str] = {}

    def check(self, url: str) -> None:
        site = site_of(url)
        if site not in self._rules:
            self._rules[site] = self._load(site)
        rules = self._rules[site]
        if isinstance(rules, str):
            raise _PageFailure(rules)
        if not rules.can_fetch(USER_AGENT, url):
            raise _PageFailure(f"disallowed by {site}/robots.txt")

    def _load(self, site: str) -> RobotFileParser | str:
        robots_url = f"{site}/robots.txt"
        self._pacer.wait(robots_url)
        try:
            response = _http_get(self._opener, robots_url, self._timeout, require_html=False)
        except _PageFailure as exc:
            return f"{exc} (fetching {robots_url})"
        if response.status >= 500:
            return f"{robots_url} answered HTTP {response.status}: the site counts as disallowed"
        rules = RobotFileParser(robots_url)
        ok = 200 <= response.status < 300
        rules.parse(response.body.decode("utf-8", errors="replace").splitlines() if ok else [])
        return rules


# ---------------------------------------------------------------- fetchers


@dataclass(frozen=True)
class _Fetched:
    final_url: str
    status: int
    html: str


class _Fetcher(Protocol):
    fetched_with: FetchedWith

    def fetch(self, url: str) -> _Fetched: ...


class _HttpFetcher:
    fetched_with: FetchedWith = "http"

    def __init__(self, opener: urllib.request.OpenerDirector, timeout: float) -> None:
        self._opener = opener
        self._timeout = timeout

    def fetch(self, url: str) -> _Fetched:
        response = _http_get(self._opener, url, self._timeout, require_html=True)
        if not 200 <= response.status < 300:
            raise _PageFailure(f"HTTP {response.status}")
        html = decode_html(response.body, response.content_type)
        return _Fetched(response.final_url, response.status, html)


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
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise _BrowserUnavailable(f"{executable}: {exc.strerror}") from None
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
            raise _BrowserUnavailable(f"{executable} exited with code {process.returncode}{last}")
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
    raise _BrowserUnavailable(
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


class _ChromiumFetcher:
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

    def fetch(self, url: str) -> _Fetched:
        return self._runner.run(self._render(url))

    async def _render(self, url: str) -> _Fetched:
        landed = _MainFrameResponse()
        self._crawler.crawler_strategy.set_hook("before_goto", landed.watch)
        try:
            result = await asyncio.wait_for(
                self._crawler.arun(url, config=self._run_config), self._watchdog
            )
        except TimeoutError:
            raise _PageFailure(f"timed out after {self._timeout:g} s") from None
        if landed.url is not None and landed.status >= 400:
            raise _PageFailure(f"HTTP {landed.status}")
        if not is_html_content_type(landed.content_type):
            raise _PageFailure(f"not an HTML page (content type {landed.content_type})")
        # Crawl4AI's anti-bot heuristic marks short pages unsuccessful: the HTML decides here.
        if landed.url is None or not result.html:
            raise _PageFailure(browser_error_reason(result.error_message, self._timeout))
        return _Fetched(landed.url, landed.status, result.html)


@contextlib.contextmanager
def _chromium_fetcher(cfg: WebConfig) -> Iterator[_ChromiumFetcher]:
    with _chromium(cfg.browser) as browser:
        try:
            crawl4ai = _import_crawl4ai()
        except ImportError as exc:
            raise _BrowserUnavailable(f"crawl4ai is not installed ({exc})") from None
        print(f"web: rendering pages in {cfg.browser} (pid {browser.pid})", flush=True)
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
                raise _BrowserUnavailable(f"Crawl4AI could not connect to it: {exc}") from None
            try:
                yield _ChromiumFetcher(crawler, run_config, runner, cfg)
            finally:
                # A browser that died mid-crawl fails this too; it is stopped by its pid next.
                with contextlib.suppress(Exception):
                    runner.run(crawler.close())


def _start_fetcher(
    cfg: WebConfig, opener: urllib.request.OpenerDirector, stack: contextlib.ExitStack
) -> _Fetcher:
    try:
        return stack.enter_context(_chromium_fetcher(cfg))
    except _BrowserUnavailable as exc:
        print(
            f"note: no browser available ({exc}): pages fetched without running JavaScript",
            flush=True,
        )
        return _HttpFetcher(opener, cfg.timeout)


# ---------------------------------------------------------------- the crawl


def _save_snapshot(out_dir: Path, url: str, fetched: _Fetched, fetched_with: FetchedWith) -> Path:
    html = declare_utf8(fetched.html)
    html_path = snapshot_path(out_dir, url)
    final_url = normalize_url(fetched.final_url) or fetched.final_url
    metadata = snapshot_metadata(
        url, final_url, extract_title(html), fetched.status, fetched_with, html
    )
    # The HTML first: a .json only ever describes the file beside it.
    write_bytes(html_path, html.encode("utf-8"))
    write_json(html_path.with_suffix(".json"), metadata)
    return html_path


@dataclass(frozen=True)
class _Visit:
    url: str
    depth: int
    # Site the crawl keeps to (same_site); None for a start URL: the site it lands on.
    site: str | None


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
    gate = _Gate(
        {host_of(u) for u in starts} | {h.lower() for h in cfg.allow_hosts}, cfg.allow_private
    )
    opener = urllib.request.build_opener(_GuardedRedirects(gate))
    pacer = _Pacer(cfg.delay)
    robots = (
        _Robots(opener, pacer, min(cfg.timeout, ROBOTS_TIMEOUT)) if cfg.respect_robots else None
    )

    queue = deque(_Visit(url, 0, None) for url in starts)
    seen = set(starts)
    saved_by_final_url: dict[str, str] = {}
    pages: list[SavedPage] = []
    fetches = 0
    fetcher: _Fetcher | None = None
    with contextlib.ExitStack() as stack:
        while queue and fetches < cfg.max_pages:
            visit = queue.popleft()
            try:
                gate.check(visit.url)
                if robots is not None:
                    robots.check(visit.url)
                if fetcher is None:  # started only once a page is to be fetched
                    fetcher = _start_fetcher(cfg, opener, stack)
                pacer.wait(visit.url)
                fetches += 1
                fetched = fetcher.fetch(visit.url)
                final_url = normalize_url(fetched.final_url) or visit.url
                if final_url != visit.url:
                    _check_landing(gate, final_url)
            except _PageFailure as exc:
                failures.append(_fail(visit.url, str(exc)))
                continue
            seen.add(final_url)
            if final_url in saved_by_final_url:
                print(f"web: {visit.url} is the page {saved_by_final_url[final_url]}", flush=True)
                continue
            html_path = _save_snapshot(out_dir, visit.url, fetched, fetcher.fetched_with)
            saved_by_final_url[final_url] = visit.url
            pages.append(SavedPage(visit.url, html_path))
            print(f"web: saved {visit.url} -> {html_path}", flush=True)
            if visit.depth >= cfg.max_depth:
                continue
            site = visit.site or site_of(final_url)
            for link in extract_links(fetched.html, final_url):
                in_scope = site_of(link) == site if cfg.same_site else gate.allows_host(link)
                if link not in seen and in_scope and is_followable(link):
                    seen.add(link)
                    queue.append(_Visit(link, visit.depth + 1, site))
    if queue:
        print(
            f"web: stopped at research.web.max_pages = {cfg.max_pages}; "
            f"{len(queue)} linked page(s) not fetched",
            flush=True,
        )
    return CrawlReport(
        tuple(pages), tuple(failures), fetcher.fetched_with if fetcher is not None else None
    )


def _check_landing(gate: _Gate, final_url: str) -> None:
    """The browser followed redirects itself: the page it landed on must pass the gate too."""
    try:
        gate.check(final_url)
    except _PageFailure as exc:
        raise _PageFailure(f"redirected to {final_url}: {exc}") from None


def _fail(url: str, reason: str) -> FailedPage:
    print(f"web: failed {url}: {reason}", flush=True)
    return FailedPage(url, reason)
