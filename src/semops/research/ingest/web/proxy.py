"""The checking proxy Chromium sends every request through: each one (a navigation, a redirect
hop, a subresource, a fetch/XHR, a WebSocket) passes the gate's address check before it leaves
(public addresses only, unless private ones or their networks are allowed), and goes to the
address the gate checked, so Chromium never resolves a name itself (no DNS rebinding).

The address only: a page's scripts, fonts and APIs on other hosts load (the reason a browser is
used); the crawl's scope (which hosts' pages are visited, a main-frame redirect off them) is the
crawl's to enforce.

Plain http: the proxy sees the whole URL, checks it and forwards the request. https and wss:
it sees `CONNECT host:port`, checks that, and tunnels to the checked address. A refused request
is answered 403 and recorded with its URL (host:port for a tunnel) and the gate's reason. A
response (or a tunnel) that brings more than research.web.max_bytes is cut there, and recorded.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from semops.netread import ReadLimits, network_reason
from semops.research.ingest.web.fetched import PageFailure
from semops.research.ingest.web.gate import HostGate

log = logging.getLogger(__name__)

# A tunnel or response with no byte either way for this long is closed.
IDLE_TIMEOUT = 60.0
# On the 502 for a request the proxy could not connect for: why, for the page's failure.
ERROR_HEADER = "X-Semops-Proxy-Error"
# Hop-by-hop headers: about the connection to the proxy, never forwarded.
_HOP_HEADERS = frozenset(
    {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "upgrade"}
)


@dataclass(frozen=True)
class Refusal:
    """A request the proxy refused: its URL, or host:port for a tunnel (https, wss)."""

    target: str
    reason: str


class CheckingProxy:
    """An HTTP proxy on 127.0.0.1 (a port of its own) that lets through requests to addresses
    `gate` allows, each response (each tunnel) within `limits.max_bytes`; connecting upstream
    within `limits.timeout`."""

    def __init__(self, gate: HostGate, limits: ReadLimits) -> None:
        self._gate = gate
        self.limits = limits
        self.connect_timeout = limits.timeout
        self._refusals: list[Refusal] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._server = _QuietServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def address(self, target: str, url: str) -> str | None:
        """The checked address for `url`'s host; None (the refusal recorded) if refused."""
        try:
            return self._gate.checked_address(url)
        except PageFailure as exc:
            self.refuse(target, str(exc))
            return None

    def refuse(self, target: str, reason: str) -> None:
        with self._lock:
            self._refusals.append(Refusal(target, reason))

    def take_refusals(self) -> list[Refusal]:
        """The refusals since the last call."""
        with self._lock:
            taken, self._refusals = self._refusals, []
        return taken

    def track(self, sock: socket.socket, is_open: bool) -> None:
        with self._lock:
            (self._open.add if is_open else self._open.discard)(sock)

    @contextlib.contextmanager
    def serving(self) -> Iterator[CheckingProxy]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                still_open = list(self._open)
            for sock in still_open:  # tunnels and responses still in flight
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection Chromium dropped mid-request: nothing to report (nor print on stderr).
        log.debug("web proxy: a connection ended with an error", exc_info=True)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "semops-proxy"
    timeout = IDLE_TIMEOUT  # a connection that sends nothing

    @property
    def _proxy(self) -> CheckingProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def do_CONNECT(self) -> None:
        self.close_connection = True
        host, _, port = self.path.rpartition(":")
        if not host or not port.isdigit():
            self._refuse(self.path, "not a host:port to connect to")
            return
        upstream = self._connect(self.path, f"https://{self.path}/", int(port))
        if upstream is None:
            return
        with self._tracked(upstream):
            self.send_response(200, "Connection established")
            self.end_headers()
            self._relay(self.path, upstream, client_may_send=True)

    def _forward(self) -> None:
        """A plain-http request (absolute URL): checked, then sent to the checked address."""
        self.close_connection = True
        url = self.path
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:
            port = -1
        if parts.scheme != "http" or not parts.hostname or port < 0:
            self._refuse(url, "not an http URL")
            return
        upstream = self._connect(url, url, port)
        if upstream is None:
            return
        with self._tracked(upstream):
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = [f"{self.command} {target} HTTP/1.1"]
            head += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS]
            head += ["Connection: close", "", ""]
            try:
                upstream.sendall("\r\n".join(head).encode("latin-1"))
                self._send_body(upstream)
            except OSError:
                return
            self._relay(url, upstream, client_may_send=False)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _forward

    def _connect(self, target: str, url: str, port: int) -> socket.socket | None:
        address = self._proxy.address(target, url)
        if address is None:
            self._answer(403, "refused by the crawl's gate")
            return None
        timeout = self._proxy.connect_timeout
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                reason = f"timed out after {timeout:g} s"
            else:
                reason = network_reason(exc)
            self._answer(502, reason, {ERROR_HEADER: reason})
            return None

    def _relay(self, target: str, upstream: socket.socket, client_may_send: bool) -> None:
        """`_relay`, and a response (or tunnel) cut at research.web.max_bytes recorded as a
        refusal of `target`."""
        limits = self._proxy.limits
        if not _relay(self.connection, upstream, client_may_send, limits.max_bytes):
            self._proxy.refuse(target, limits.too_large(target).reason)

    @contextlib.contextmanager
    def _tracked(self, upstream: socket.socket) -> Iterator[None]:
        self._proxy.track(self.connection, True)
        self._proxy.track(upstream, True)
        try:
            yield
        finally:
            self._proxy.track(self.connection, False)
            self._proxy.track(upstream, False)
            upstream.close()

    def _send_body(self, upstream: socket.socket) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:  # each chunk as it comes, up to the last (size 0) and its trailers
                line = self.rfile.readline(1024)
                upstream.sendall(line)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
                        upstream.sendall(trailer)
                    upstream.sendall(b"\r\n")
                    return
                upstream.sendall(self.rfile.read(size + 2))
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            upstream.sendall(chunk)
            length -= len(chunk)

    def _refuse(self, target: str, reason: str) -> None:
        self._proxy.refuse(target, reason)
        self._answer(403, "refused")

    def _answer(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = f"semops crawl proxy: {text}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web proxy: " + format, *args)


def _relay(
    client: socket.socket, upstream: socket.socket, client_may_send: bool, max_bytes: int
) -> bool:
    """Bytes both ways until either side closes or both are idle for IDLE_TIMEOUT. Where the
    client may not send (a forwarded request is complete), anything it sends ends the relay: a
    second request on the connection is never forwarded unchecked. False when upstream sent
    more than `max_bytes` (the relay then ends before passing them on)."""
    peers = {client: upstream, upstream: client}
    received = 0
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ)
        selector.register(upstream, selectors.EVENT_READ)
        while events := selector.select(IDLE_TIMEOUT):
            for key, _ in events:
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(1 << 16)
                    if not data or (sock is client and not client_may_send):
                        return True
                    if sock is upstream:
                        received += len(data)
                        if received > max_bytes:
                            return False
                    peers[sock].sendall(data)
                except OSError:
                    return True
    return True
