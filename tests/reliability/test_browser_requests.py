"""Every request real Chromium makes during a crawl passes the gate's address check before it
leaves (other public hosts load; private addresses never), goes to the address the gate checked,
and is held to research.web.max_bytes; Chromium runs with a minimal environment, no DevTools port
another local user could drive, and its sandbox wherever it can run.

Only loopback addresses are contacted: the start pages are served on 127.0.0.2 (allowed through
research.web.allow_networks, standing for a public address), the target the requests must not
reach on 127.0.0.1 (the internal service). For DNS rebinding the resolver is replaced in-process
(socket.getaddrinfo, for rebind.example only).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rebinding import INTERNAL, PUBLIC, REBIND_HOST, rebind

from semops.config.research import WebConfig
from semops.research.ingest.web.crawl import CrawlReport, crawl

CHROMIUM = "/usr/bin/chromium"
CDN = "127.0.0.3"  # another host, not in the allow-list, on an address allowed like PUBLIC
REFUSED = (
    f"{INTERNAL} is a loopback address: set research.web.allow_private to true"
    " (or list its network in research.web.allow_networks) to crawl it"
)
Route = Callable[[], tuple[int, dict[str, str], bytes]]


def _html(body: str) -> tuple[int, dict[str, str], bytes]:
    page = f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>"
    return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        with server.lock:
            server.paths.append(self.path)
        route = server.routes.get(self.path.split("?")[0])
        status, headers, body = route() if route else (404, {}, b"")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str, port: int = 0) -> None:
        super().__init__((address, port), _Handler)
        self.port = int(self.server_address[1])
        self.paths: list[str] = []
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()


@contextlib.contextmanager
def _serving(*servers: _Server) -> Iterator[None]:
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _same_port_pair() -> tuple[_Server, _Server]:
    """A server on PUBLIC and one on INTERNAL, at the same port."""
    for _ in range(50):
        public = _Server(PUBLIC)
        try:
            return public, _Server(INTERNAL, public.port)
        except OSError:
            public.server_close()
    raise AssertionError("no port free on both addresses")


def _config(**overrides: Any) -> WebConfig:
    fields: dict[str, Any] = {
        "allow_private": False,
        "allow_networks": [f"{PUBLIC}/32"],
        "allow_hosts": [INTERNAL],  # refused for its address, not its name
        "respect_robots": False,
        "delay": 0.0,
        "timeout": 5.0,
        "max_depth": 0,
        "browser": CHROMIUM,
    }
    return WebConfig(**(fields | overrides))


@dataclass(frozen=True)
class Crawled:
    report: CrawlReport
    log: str
    failures: dict[str, str] = field(default_factory=dict)


def _crawl(urls: list[str], out_dir: Path, cfg: WebConfig | None = None) -> Crawled:
    assert Path(CHROMIUM).exists(), f"Chromium must run at {CHROMIUM}: apt-get install chromium"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    web_log = logging.getLogger("semops.research.ingest.web")
    level = web_log.level
    web_log.addHandler(handler)
    web_log.setLevel(logging.INFO)
    try:
        report = crawl(urls, cfg or _config(), out_dir)
    finally:
        web_log.removeHandler(handler)
        web_log.setLevel(level)
    assert report.fetched_with == "chromium", stream.getvalue()
    failures = {failure.url: failure.reason for failure in report.failures}
    return Crawled(report, stream.getvalue(), failures)


# ------------------------------------------------------------------- redirects


def test_a_redirect_hop_to_a_refused_address_is_never_requested(tmp_path: Path) -> None:
    public, internal = _Server(PUBLIC), _Server(INTERNAL)
    admin = f"http://{INTERNAL}:{internal.port}/admin"
    admin_tls = f"https://{INTERNAL}:{internal.port}/admin"
    start = f"http://{PUBLIC}:{public.port}"
    public.routes = {
        "/away": lambda: (302, {"Location": admin}, b""),
        "/hop": lambda: (302, {"Location": "/away"}, b""),  # an allowed hop, then the refused
        "/away-tls": lambda: (302, {"Location": admin_tls}, b""),
    }
    internal.routes = {"/admin": lambda: _html("internal admin console")}
    with _serving(public, internal):
        crawled = _crawl([f"{start}/away", f"{start}/hop", f"{start}/away-tls"], tmp_path)
    assert crawled.failures == {
        f"{start}/away": f"redirected to {admin}: {REFUSED}",
        f"{start}/hop": f"redirected to {admin}: {REFUSED}",
        # https: the proxy sees CONNECT host:port; the failure names the URL all the same.
        f"{start}/away-tls": f"redirected to {admin_tls}: {REFUSED}",
    }
    assert internal.paths == []
    assert public.paths == ["/away", "/hop", "/away", "/away-tls"]
    for url, reason in crawled.failures.items():
        assert f"web: failed {url}: {reason}\n" in crawled.log


# ------------------------------------------------------------------- subresources, fetch, XHR

PAGE_WITH_SUBRESOURCES = """
<p>The page itself.</p>
<img src="{base}/admin.png"> <img src="{tls}/admin-tls.png">
<script src="{base}/admin.js"></script>
<script>
fetch("{base}/admin?via=fetch").catch(() => {{}});
const xhr = new XMLHttpRequest(); xhr.open("GET", "{base}/admin?via=xhr"); xhr.send();
new WebSocket("{ws}/socket");
</script>
"""


def test_subresources_and_xhr_to_a_refused_address_are_never_requested(tmp_path: Path) -> None:
    public, internal = _Server(PUBLIC), _Server(INTERNAL)
    base, tls = f"http://{INTERNAL}:{internal.port}", f"https://{INTERNAL}:{internal.port}"
    ws = f"ws://{INTERNAL}:{internal.port}"
    page = PAGE_WITH_SUBRESOURCES.format(base=base, tls=tls, ws=ws)
    public.routes = {"/": lambda: _html(page)}
    internal.routes = {path: lambda: _html("internal") for path in ("/admin", "/admin.js")}
    start = f"http://{PUBLIC}:{public.port}/"
    with _serving(public, internal):
        crawled = _crawl([start], tmp_path)
    assert [page.url for page in crawled.report.pages] == [start]
    assert "The page itself." in crawled.report.pages[0].html_path.read_text()
    assert crawled.failures == {}
    assert internal.paths == []
    refused = [
        f"{base}/admin.png",  # image
        f"{tls}/admin-tls.png",  # image over https: a refused CONNECT, reported by its URL
        f"{base}/admin.js",  # script
        f"{base}/admin?via=fetch",  # fetch()
        f"{base}/admin?via=xhr",  # XMLHttpRequest
        f"{ws}/socket",  # WebSocket: a tunnel too
    ]
    for url in refused:
        assert crawled.log.count(f"web: refused {url}: {REFUSED}\n") == 1, crawled.log


def test_subresources_on_other_public_hosts_load(tmp_path: Path) -> None:
    """The proxy checks addresses, not hosts: a script and a fetch() on a host outside the
    crawl's allow-list (a CDN, an API) on a public address load; one on a private address
    never leaves."""
    public, cdn, internal = _Server(PUBLIC), _Server(CDN), _Server(INTERNAL)
    cdn_url, base = f"http://{CDN}:{cdn.port}", f"http://{INTERNAL}:{internal.port}"
    script = b'document.body.insertAdjacentHTML("beforeend", "<p>Inserted by the CDN</p>");'
    cdn.routes = {
        "/lib.js": lambda: (200, {"Content-Type": "text/javascript"}, script),
        "/api": lambda: (200, {"Content-Type": "application/json"}, b"{}"),
    }
    page = f'<script src="{cdn_url}/lib.js"></script><script src="{base}/admin.js"></script>'
    page += f'<script>fetch("{cdn_url}/api").catch(() => {{}});</script>'
    public.routes = {"/": lambda: _html(page)}
    start = f"http://{PUBLIC}:{public.port}/"
    cfg = _config(allow_networks=[f"{PUBLIC}/32", f"{CDN}/32"])
    with _serving(public, cdn, internal):
        crawled = _crawl([start], tmp_path, cfg)
    assert crawled.failures == {}
    assert "Inserted by the CDN" in crawled.report.pages[0].html_path.read_text()
    assert {"/lib.js", "/api"} <= set(cdn.paths)
    assert internal.paths == []
    assert crawled.log.count(f"web: refused {base}/admin.js: {REFUSED}\n") == 1, crawled.log


def test_the_browser_keeps_to_max_bytes(tmp_path: Path) -> None:
    """research.web.max_bytes holds for Chromium too: a subresource over it is cut and
    reported, a page over it (its response, or the HTML its scripts built) fails."""
    public = _Server(PUBLIC)
    big = b"x" * 64 * 1024
    public.routes = {
        "/": lambda: _html('<img src="/big.png"><p>small</p>'),
        "/big.png": lambda: (200, {"Content-Type": "image/png"}, big),
        "/big.html": lambda: _html("<p>" + "big " * 16384 + "</p>"),
        "/grows.html": lambda: _html('<script>document.body.append("y".repeat(65536))</script>'),
    }
    start = f"http://{PUBLIC}:{public.port}"
    urls = [f"{start}/", f"{start}/big.html", f"{start}/grows.html"]
    with _serving(public):
        crawled = _crawl(urls, tmp_path, _config(max_bytes=4096))
    too_large = "larger than 4 KiB (research.web.max_bytes)"
    assert [page.url for page in crawled.report.pages] == [f"{start}/"]
    assert crawled.failures == {f"{start}/big.html": too_large, f"{start}/grows.html": too_large}
    assert crawled.log.count(f"web: refused {start}/big.png: {too_large}\n") == 1, crawled.log


# ------------------------------------------------------------------- DNS rebinding


def test_chromium_connects_to_the_address_the_gate_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = rebind(monkeypatch)
    public, internal = _same_port_pair()
    site = f"http://{REBIND_HOST}:{public.port}"
    body = '<img src="/logo.png"><script src="/app.js"></script>'
    body += '<script>fetch("/api/data").catch(() => {});</script>'
    for server in (public, internal):
        server.routes = {"/": lambda: _html(body), "/api/data": lambda: _html("data")}
    with _serving(public, internal):
        crawled = _crawl([f"{site}/"], tmp_path, _config(allow_hosts=[]))
    assert [page.url for page in crawled.report.pages] == [f"{site}/"]
    # Each of the page's requests went to the address checked, none to the rebound one.
    assert {"/", "/api/data", "/app.js", "/logo.png"} <= set(public.paths)
    assert internal.paths == []
    assert answers[0] == PUBLIC


# ------------------------------------------------------------------- the browser process

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
    "OPENAI_API_KEY": "sk-test-not-a-real-key",
    "AWS_SECRET_ACCESS_KEY": "aws-test-secret",
    "SEMOPS_TEST_SECRET": "a-name-no-deny-list-knows",
}


def _browser_pids() -> set[int]:
    """Chromium's processes: those naming its temporary folder, and their process groups."""
    named, groups, members = set(), set(), {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(proc.name)
            members[pid] = os.getpgid(pid)
            if b"semops-chromium-" in (proc / "cmdline").read_bytes():
                named.add(pid)
                groups.add(members[pid])
    return named | {pid for pid, group in members.items() if group in groups and pid > 1}


def _listening_ports(pids: set[int]) -> set[int]:
    """TCP ports the processes listen on."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A":  # LISTEN
                inodes[cols[9]] = int(cols[1].rsplit(":", 1)[1], 16)
    ports = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        ports.add(inodes[target[8:-1]])
    return ports


def _answer(port: int, request: bytes) -> bytes:
    with contextlib.suppress(OSError), socket.create_connection((INTERNAL, port), 3) as sock:
        sock.sendall(request)
        return sock.recv(4096)
    return b""


@dataclass
class _Inspection:
    environments: dict[int, dict[str, str]] = field(default_factory=dict)
    browser_ports: set[int] = field(default_factory=set)
    answers: dict[int, list[bytes]] = field(default_factory=dict)

    def inspect(self) -> tuple[int, dict[str, str], bytes]:
        """While Chromium renders the page: its processes' environments, the ports they listen
        on, and what DevTools requests without the token get from any port there or ours."""
        pids = _browser_pids()
        for pid in pids:
            with contextlib.suppress(OSError):
                entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                pairs = (entry.decode(errors="replace").partition("=") for entry in entries)
                self.environments[pid] = {name: value for name, _, value in pairs if name}
        self.browser_ports = _listening_ports(pids)
        for port in self.browser_ports | _listening_ports({os.getpid()}):
            self.answers[port] = [
                _answer(port, b"GET /json/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
                _answer(
                    port,
                    b"GET /devtools/browser HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                ),
            ]
        return _html("inspected")


@pytest.fixture(scope="module")
def inspection(tmp_path_factory: pytest.TempPathFactory) -> _Inspection:
    found = _Inspection()
    public = _Server(PUBLIC)
    public.routes = {"/": found.inspect}
    with pytest.MonkeyPatch.context() as monkeypatch, _serving(public):
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        _crawl([f"http://{PUBLIC}:{public.port}/"], tmp_path_factory.mktemp("inspect"))
    assert found.environments, "no Chromium process found during the crawl"
    return found


def test_chromium_runs_with_a_minimal_environment(inspection: _Inspection) -> None:
    for pid, environment in inspection.environments.items():
        leaked = {name for name, value in environment.items() if value in SECRETS.values()}
        assert not leaked, f"process {pid} has {sorted(leaked)}"
        assert not set(SECRETS) & set(environment)
    # (Chromium's helpers write their titles over their environment: the browser's is whole.)
    homes = [env["HOME"] for env in inspection.environments.values() if "HOME" in env]
    assert homes, inspection.environments
    assert all("semops-chromium-" in home for home in homes)


def test_no_devtools_endpoint_answers_without_the_token(inspection: _Inspection) -> None:
    assert inspection.browser_ports == set(), "Chromium listens on TCP (a DevTools port?)"
    assert inspection.answers, "no listening port of this process was found"
    for port, answers in inspection.answers.items():
        for answer in answers:
            assert b"webSocketDebuggerUrl" not in answer, port
            assert not answer.startswith(b"HTTP/1.1 101"), port


# ------------------------------------------------------------------- the sandbox

FAKE_NO_SANDBOX_HERE = f"""#!/bin/sh
echo "$*" >> "$0.calls"
case " $* " in *" --no-sandbox "*) exec {CHROMIUM} "$@" ;; esac
echo "[1:1:FATAL:zygote_host_impl_linux.cc(128)] No usable sandbox! (test double)" >&2
exit 1
"""


# Chromium runs as nobody: its profile's parent (the test's temporary folder, the crawl's
# mkdtemp 0700, owned by us) is opened to all so that nobody can create the profile there.
FAKE_UNPRIVILEGED = f"""#!/bin/sh
echo "$*" >> "$0.calls"
for arg; do
  case "$arg" in --user-data-dir=*) chmod 777 "$(dirname "${{arg#--user-data-dir=}}")" ;; esac
done
exec setpriv --reuid=65534 --regid=65534 --clear-groups {CHROMIUM} "$@"
"""


def test_chromium_runs_sandboxed_when_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user other than root (a test double runs the real Chromium as nobody), Chromium gets
    its sandbox: its renderers run under seccomp-bpf."""
    assert shutil.which("setpriv"), "setpriv (Debian's util-linux) runs Chromium as nobody here"
    fake = tmp_path / "chromium"
    fake.write_text(FAKE_UNPRIVILEGED)
    fake.chmod(0o755)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    seccomp: dict[int, str] = {}

    def inspect() -> tuple[int, dict[str, str], bytes]:
        for pid in _browser_pids():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                seccomp[pid] = status.split("Seccomp:", 1)[1].split()[0]
        return _html("sandboxed")

    public = _Server(PUBLIC)
    public.routes = {"/": inspect}
    with _serving(public):
        crawled = _crawl(
            [f"http://{PUBLIC}:{public.port}/"], tmp_path / "out", _config(browser=str(fake))
        )
    assert len(crawled.report.pages) == 1, crawled.log
    [call] = Path(f"{fake}.calls").read_text().splitlines()
    assert "--no-sandbox" not in call.split()
    assert "2" in seccomp.values(), seccomp  # 2: seccomp-bpf filtering, the sandbox's
    assert "web: Chromium's sandbox cannot start" not in crawled.log


def test_without_a_usable_sandbox_chromium_runs_without_it_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user other than root, where the sandbox cannot start (a test double for Chromium
    says so, as Chromium does, unless given --no-sandbox)."""
    fake = tmp_path / "chromium"
    fake.write_text(FAKE_NO_SANDBOX_HERE)
    fake.chmod(0o755)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    public = _Server(PUBLIC)
    public.routes = {"/": lambda: _html("sandbox")}
    with _serving(public):
        crawled = _crawl(
            [f"http://{PUBLIC}:{public.port}/"], tmp_path / "out", _config(browser=str(fake))
        )
    assert len(crawled.report.pages) == 1
    calls = Path(f"{fake}.calls").read_text().splitlines()
    assert len(calls) == 2
    assert "--no-sandbox" not in calls[0].split()  # sandboxed first
    assert "--no-sandbox" in calls[1].split()
    line = (
        "web: Chromium's sandbox cannot start here ([1:1:FATAL:zygote_host_impl_linux.cc(128)]"
        " No usable sandbox! (test double)): running it without\n"
    )
    assert crawled.log.count(line) == 1, crawled.log
