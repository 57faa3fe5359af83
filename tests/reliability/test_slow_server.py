"""Network reads against a real slow or oversized HTTP server on 127.0.0.1: every read (a crawled
page, robots.txt, a `url` data source) ends within its overall deadline whatever the server's
pace, stops at its byte cap with an error naming the key, and a download that fails its sha256
leaves nothing at its destination.

The wall-time bounds (2 x timeout + 1 s) are correctness bounds, not benchmarks: a read that
only has a per-read socket timeout outlasts them by hours against a server that sends a byte
every 0.2 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from semops.config.research import WebConfig
from semops.config.schema import UrlSource
from semops.errors import ConfigError, SemopsError
from semops.research.ingest.web.crawl import crawl
from semops.tabular.download import fetch

TIMEOUT = 2.0
BOUND = 2 * TIMEOUT + 1.0
DRIP_INTERVAL = 0.2
# A dripping response ends after this long at the latest (so that a client without an overall
# deadline fails the test instead of hanging it).
DRIP_FOR = 15.0
BIG = 3 * 2**20  # bytes of a response over a 1 MiB cap
BIG_BODY = b"x" * BIG  # made once, outside the memory the streaming test traces


class _Handler(BaseHTTPRequestHandler):
    """/drip*: headers, then one byte every 0.2 s; /drip-headers: the headers themselves one
    byte every 0.2 s; /big: 3 MiB at once (with Content-Length), /endless: bytes until the
    client goes (no Content-Length); /exact: a small page of known bytes."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        path = self.path
        if path.startswith("/drip-headers"):
            self._drip(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nX-Slow: " + b"a" * 10_000)
            return
        if path.startswith("/drip") or path == "/robots.txt":
            self._head("text/html" if path != "/robots.txt" else "text/plain")
            self._drip(b"x" * 10_000)
        elif path == "/big":
            self._head("text/html", BIG)
            self._write(BIG_BODY)
        elif path == "/endless":
            self._head("text/html")
            for _ in range(64):  # 64 MiB at most
                if not self._write(b"x" * 2**20):
                    break
        elif path == "/exact":
            self._head("text/csv", len(server.exact))
            self._write(server.exact)
        else:
            self.send_error(404)

    def _head(self, content_type: str, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()

    def _drip(self, data: bytes) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        until = time.monotonic() + DRIP_FOR
        for byte in data:
            if server.stop.is_set() or time.monotonic() > until or not self._write(bytes([byte])):
                return
            server.stop.wait(DRIP_INTERVAL)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away
            return False
        return True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop = threading.Event()
        self.exact = b"id,y\n1,yes\n2,no\n"
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def _timed(what: str) -> Iterator[list[float]]:
    took: list[float] = []
    started = time.monotonic()
    try:
        yield took
    finally:
        took.append(time.monotonic() - started)
        # Shown with -s or on failure: the figure for the note.
        print(f"{what}: {took[0]:.2f} s (timeout {TIMEOUT:g} s, bound {BOUND:g} s)")


def _web(**overrides: object) -> WebConfig:
    fields: dict[str, object] = {
        "allow_private": True,
        "delay": 0.0,
        "timeout": TIMEOUT,
        "max_depth": 0,
        "browser": "/nonexistent/chromium",  # plain HTTP
        "respect_robots": False,
    }
    return WebConfig(**(fields | overrides))  # type: ignore[arg-type]


def _crawl_failures(url: str, cfg: WebConfig, out_dir: Path) -> dict[str, str]:
    report = crawl([url], cfg, out_dir)
    assert report.pages == ()
    assert not out_dir.exists() or not any(out_dir.rglob("*.html"))
    return {failure.url: failure.reason for failure in report.failures}


@pytest.mark.parametrize("path", ["/drip.html", "/drip-headers.html"])
def test_page_fetch_ends_at_its_deadline(server: _Server, tmp_path: Path, path: str) -> None:
    url = server.url + path
    with _timed(f"plain-HTTP page, {path}") as took:
        failures = _crawl_failures(url, _web(), tmp_path)
    assert failures == {url: f"timed out after {TIMEOUT:g} s (research.web.timeout)"}
    assert took[0] < BOUND


def test_robots_txt_fetch_ends_at_its_deadline(server: _Server, tmp_path: Path) -> None:
    url = server.url + "/exact"
    with _timed("robots.txt") as took:
        failures = _crawl_failures(url, _web(respect_robots=True), tmp_path)
    assert failures == {
        url: f"timed out after {TIMEOUT:g} s (research.web.timeout)"
        f" (fetching {server.url}/robots.txt)"
    }
    assert took[0] < BOUND


@pytest.mark.parametrize("path", ["/big", "/endless"])
def test_page_over_the_cap_fails_naming_the_key(server: _Server, tmp_path: Path, path: str) -> None:
    url = server.url + path
    failures = _crawl_failures(url, _web(max_bytes=2**20), tmp_path)
    assert failures == {url: "larger than 1 MiB (research.web.max_bytes)"}


def _source(url: str, sha256: str = "0" * 64, **limits: object) -> UrlSource:
    return UrlSource(kind="url", url=url, sha256=sha256, **limits)  # type: ignore[arg-type]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_url_download_ends_at_its_deadline(server: _Server, tmp_path: Path) -> None:
    url = server.url + "/drip.csv"
    with _timed("url data source") as took, pytest.raises(SemopsError) as info:
        fetch(_source(url, timeout=TIMEOUT), tmp_path)
    assert str(info.value) == (
        f"data.source.url: cannot download {url}: timed out after {TIMEOUT:g} s"
        " (data.source.timeout)"
    )
    assert took[0] < BOUND
    assert _files(tmp_path) == []


@pytest.mark.parametrize("path", ["/big", "/endless"])
def test_url_download_over_the_cap_fails_naming_the_key(
    server: _Server, tmp_path: Path, path: str
) -> None:
    url = server.url + path
    with pytest.raises(SemopsError) as info:
        fetch(_source(url, max_bytes=2**20), tmp_path)
    assert str(info.value) == (
        f"data.source.url: cannot download {url}: larger than 1 MiB (data.source.max_bytes)"
    )
    assert _files(tmp_path) == []


def test_url_download_checksum_mismatch_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    url = server.url + "/exact"
    with pytest.raises(SemopsError, match=r"data\.source\.sha256: checksum mismatch") as info:
        fetch(_source(url), tmp_path)
    assert hashlib.sha256(server.exact).hexdigest() in str(info.value)
    assert _files(tmp_path) == []
    table, _ = fetch(_source(url, hashlib.sha256(server.exact).hexdigest()), tmp_path)
    assert list(table["y"]) == ["yes", "no"]
    assert _files(tmp_path) == []


def test_saved_body_is_hashed_as_it_streams(server: _Server, tmp_path: Path) -> None:
    """A mismatching body never takes the destination's place (its previous content stays), and
    a 3 MiB body is hashed chunk by chunk, never held whole in memory."""
    from semops.netread import ReadLimits, open_url

    limits = ReadLimits(TIMEOUT, 4 * 2**20, "t", "m")
    dest = tmp_path / "download.csv"
    dest.write_bytes(b"previous\n")
    seen: list[str] = []

    def refuse(digest: str) -> None:
        seen.append(digest)
        raise SemopsError("mismatch")

    tracemalloc.start()
    try:
        with open_url(server.url + "/big", limits) as reading, pytest.raises(SemopsError):
            reading.save(dest, refuse)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == [hashlib.sha256(BIG_BODY).hexdigest()]
    assert peak < BIG / 4, f"{peak} bytes held at the peak"
    assert dest.read_bytes() == b"previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download.csv"]
    with open_url(server.url + "/exact", limits) as reading:
        assert reading.save(dest) == hashlib.sha256(server.exact).hexdigest()
    assert dest.read_bytes() == server.exact


def test_connect_keeps_to_the_deadline() -> None:
    """A listener that never accepts (its backlog full) holds a connect; the deadline ends it.
    Where the kernel answers a full backlog at once instead (Linux with
    net.ipv4.tcp_abort_on_overflow, other systems), the read fails with that answer: either
    way it ends within the bound, with a reason."""
    from semops.netread import NetReadError, ReadLimits, open_url

    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(_full_backlog())
        url = f"http://127.0.0.1:{listener}/"
        limits = ReadLimits(TIMEOUT, 2**20, "t.timeout", "t.max_bytes")
        started = time.monotonic()
        with pytest.raises(NetReadError) as info, open_url(url, limits) as reading:
            reading.read_all()
        took = time.monotonic() - started
    assert took < BOUND
    timed_out = f"timed out after {TIMEOUT:g} s (t.timeout)"
    answered = ("connection refused", "ConnectionResetError", "RemoteDisconnected")
    if _aborts_on_overflow():
        assert info.value.reason.startswith(answered), info.value.reason
    else:
        assert info.value.reason == timed_out or info.value.reason.startswith(answered)
        if info.value.reason == timed_out:
            assert took >= TIMEOUT * 0.9  # the deadline, not an early failure, ended it


def _aborts_on_overflow() -> bool:
    """Whether this kernel resets a connection its listener's full backlog cannot take."""
    flag = Path("/proc/sys/net/ipv4/tcp_abort_on_overflow")
    return flag.exists() and flag.read_text().strip() == "1"


@contextlib.contextmanager
def _full_backlog() -> Iterator[int]:
    """A port whose listener accepts nothing and whose backlog is full: a connect to it hangs
    (Linux drops the SYN) or, where the kernel answers at once, the test still sees a failure."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize(
    ("section", "raw", "message"),
    [
        ("research.web", {"max_bytes": 0}, "research.web.max_bytes must be > 0, got 0"),
        (
            "data",
            {"source": {"kind": "url", "url": "http://h.test/t.csv", "timeout": 0.0}},
            "data.source.timeout must be > 0, got 0.0",
        ),
        (
            "data",
            {"source": {"kind": "url", "url": "http://h.test/t.csv", "max_bytes": "1 GiB"}},
            "data.source.max_bytes must be an integer, got '1 GiB' (str)",
        ),
    ],
)
def test_a_bad_limit_is_a_config_error_naming_the_key(
    section: str, raw: dict[str, Any], message: str
) -> None:
    from semops.config.schema import DataConfig
    from semops.config.validation import build

    if section == "data":
        raw["source"]["sha256"] = "0" * 64
        raw |= {"name": "t", "target": "y", "positive": "yes"}
    with pytest.raises(ConfigError) as info:
        build(DataConfig if section == "data" else WebConfig, raw, section)
    assert str(info.value) == message
