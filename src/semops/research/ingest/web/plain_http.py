"""Plain HTTP GETs, within the gate, a time limit and a size limit: robots.txt files, and pages
where no browser can start (their JavaScript is then not run)."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from semops.research.ingest.charset import decode_html
from semops.research.ingest.web.fetched import (
    Fetched,
    FetchedWith,
    PageFailure,
    is_html_content_type,
)
from semops.research.ingest.web.gate import HostGate
from semops.research.ingest.web.urls import normalize_url

# Both the robots.txt user agent we obey and the one the plain-HTTP fetch sends.
USER_AGENT = "semops-research"
MAX_PAGE_BYTES = 20 * 2**20


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the gate allows (before connecting to it)."""

    def __init__(self, gate: HostGate) -> None:
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
            raise PageFailure(f"redirected to {newurl}, which is not an http(s) URL")
        self._gate.check_redirect(target)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def guarded_opener(gate: HostGate) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_GuardedRedirects(gate))


@dataclass(frozen=True)
class Response:
    final_url: str
    status: int
    content_type: str | None
    body: bytes


def http_get(
    opener: urllib.request.OpenerDirector, url: str, timeout: float, require_html: bool
) -> Response:
    """GET `url`; an HTTP error status is returned (without its body), a network error raised
    as PageFailure. The body is read within about `timeout` and at most MAX_PAGE_BYTES."""
    request = urllib.request.Request(
        url, headers={"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.5"}
    )
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            content_type = response.headers.get("Content-Type")
            if require_html and not is_html_content_type(content_type):
                raise PageFailure(f"not an HTML page (content type {content_type})")
            body = bytearray()
            while chunk := response.read(1 << 16):
                body += chunk
                if len(body) > MAX_PAGE_BYTES:
                    raise PageFailure(f"larger than {MAX_PAGE_BYTES // 2**20} MiB")
                if time.monotonic() > deadline:
                    raise PageFailure(f"timed out after {timeout:g} s")
            return Response(response.geturl(), response.status, content_type, bytes(body))
    except urllib.error.HTTPError as exc:
        exc.close()
        return Response(exc.geturl() or url, exc.code, exc.headers.get("Content-Type"), b"")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise PageFailure(_network_reason(exc, timeout)) from None


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


class HttpFetcher:
    fetched_with: FetchedWith = "http"

    def __init__(self, opener: urllib.request.OpenerDirector, timeout: float) -> None:
        self._opener = opener
        self._timeout = timeout

    def fetch(self, url: str) -> Fetched:
        response = http_get(self._opener, url, self._timeout, require_html=True)
        if not 200 <= response.status < 300:
            raise PageFailure(f"HTTP {response.status}")
        html = decode_html(response.body, response.content_type)
        return Fetched(response.final_url, response.status, html)
