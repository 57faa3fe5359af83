"""DNS rebinding against the plain-HTTP crawl: a host that answers an allowed address to the
first lookup and 127.0.0.1 to every later one is only ever reached at the first.

The resolver is the one thing replaced (socket.getaddrinfo, for the name rebind.example only);
the gate, the crawl and both servers are real: one on 127.0.0.2 (allowed through
research.web.allow_networks, standing for a public address), one on 127.0.0.1 at the same port
(the internal service whose /admin the rebinding aims at). Over https the connection goes to the
checked address while SNI and the certificate check keep the host name.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rebinding import REBIND_HOST, rebind

from semops.config.research import WebConfig
from semops.research.ingest.web.crawl import CrawlReport, crawl

ADMIN_SECRET = "internal admin console: secret"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        with server.lock:
            server.requests.append((self.path, self.headers["Host"]))
        if self.path == "/robots.txt":
            self._send(404, b"")
        elif server.internal:
            self._send(200, f"<html><title>Admin</title><p>{ADMIN_SECRET}</p></html>".encode())
        elif self.path == "/":
            self._send(200, b'<html><title>Home</title><a href="/admin">admin</a></html>')
        else:
            self._send(200, b"<html><title>Outside</title><p>nothing here</p></html>")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str, port: int, internal: bool) -> None:
        super().__init__((address, port), _Handler)
        self.internal = internal
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []


@contextlib.contextmanager
def _servers(tls: ssl.SSLContext | None) -> Iterator[tuple[_Server, _Server]]:
    """The outside server on 127.0.0.2 and the internal one on 127.0.0.1, at the same port."""
    for _ in range(20):
        outside = _Server("127.0.0.2", 0, internal=False)
        try:
            internal = _Server("127.0.0.1", outside.server_address[1], internal=True)
            break
        except OSError as exc:
            outside.server_close()
            if exc.errno != errno.EADDRINUSE:
                raise
    else:
        raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")
    if tls is not None:
        for server in (outside, internal):
            server.socket = tls.wrap_socket(server.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (outside, internal)]
    for thread in threads:
        thread.start()
    try:
        yield outside, internal
    finally:
        for server in (outside, internal):
            server.shutdown()
            server.server_close()


def _config() -> WebConfig:
    return WebConfig(
        allow_private=False,
        allow_networks=["127.0.0.2/32"],
        delay=0.0,
        timeout=5.0,
        max_depth=1,
        browser="/nonexistent/chromium",  # plain HTTP
    )


def _assert_admin_never_reached(
    report: CrawlReport, base: str, internal: _Server, outside: _Server, out_dir: Path
) -> None:
    assert internal.requests == [], "the internal server (127.0.0.1) was reached"
    assert report.failures == ()
    assert sorted(page.url for page in report.pages) == [f"{base}/", f"{base}/admin"]
    saved = [p.read_text() for p in out_dir.rglob("*") if p.is_file()]
    assert saved and not [text for text in saved if ADMIN_SECRET in text]
    host_header = base.split("://", 1)[1]
    assert outside.requests == [(path, host_header) for path in ("/robots.txt", "/", "/admin")]


def test_plain_http_connects_only_to_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rebind(monkeypatch)
    with _servers(tls=None) as (outside, internal):
        base = f"http://{REBIND_HOST}:{outside.server_address[1]}"
        report = crawl([base + "/"], _config(), tmp_path)
    _assert_admin_never_reached(report, base, internal, outside, tmp_path)
    assert report.fetched_with == "http"


def test_https_keeps_the_host_name_for_sni_and_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rebind(monkeypatch)
    cert, key = _self_signed(tmp_path / "tls", REBIND_HOST)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this certificate only
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = record_sni
    out_dir = tmp_path / "out"
    with _servers(server_tls) as (outside, internal):
        base = f"https://{REBIND_HOST}:{outside.server_address[1]}"
        report = crawl([base + "/"], _config(), out_dir)
    _assert_admin_never_reached(report, base, internal, outside, out_dir)
    assert names == [REBIND_HOST] * 3  # robots.txt and two pages, each over a new connection


def _self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir()
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_slow_lookup_holds_no_other_host_and_the_first_verdict_is_the_pin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gate resolves outside its lock: while one host's lookup hangs, another host is
    checked at once; the verdict stored is the host's pin (its next answer, a loopback
    address, is never asked for)."""
    from semops.research.ingest.web.gate import HostGate

    real = socket.getaddrinfo
    release = threading.Event()
    answers = iter(["127.0.0.2", "127.0.0.1"])

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":
            assert release.wait(10)
            return real(next(answers), port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    gate = HostGate(set(), allow_private=False, allow_networks=("127.0.0.2/32",))
    found: list[str] = []
    waiting = threading.Thread(
        target=lambda: found.append(gate.checked_address("http://slow.example/"))
    )
    waiting.start()
    try:
        assert gate.checked_address("http://127.0.0.2:8080/") == "127.0.0.2"  # not held
    finally:
        release.set()
        waiting.join(10)
    assert found == ["127.0.0.2"]
    # Later checks use the pin: the host is never looked up (nor reached) again.
    assert gate.checked_address("http://slow.example/x") == "127.0.0.2"
