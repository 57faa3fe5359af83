"""Plain HTTP GETs through the gate: robots.txt files, and pages where no browser can start
(their JavaScript is then not run).

Every connection goes to the address the gate checked for the host, never to one a second DNS
lookup gives (DNS rebinding); the Host header, SNI and the certificate check keep the host name.
Each GET keeps to research.web.timeout (connecting, headers and body together) and
research.web.max_bytes (semops.netread).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from semops.config.research import WebConfig
from semops.netread import NetReadError, ReadLimits, open_url
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


def web_limits(cfg: WebConfig, timeout: float | None = None) -> ReadLimits:
    """research.web's limits on one GET (`timeout` when shorter than research.web.timeout)."""
    return ReadLimits(
        timeout=cfg.timeout if timeout is None else min(timeout, cfg.timeout),
        max_bytes=cfg.max_bytes,
        timeout_key="research.web.timeout",
        max_bytes_key="research.web.max_bytes",
    )


@dataclass(frozen=True)
class Response:
    final_url: str
    status: int
    content_type: str | None
    body: bytes


def http_get(gate: HostGate, url: str, limits: ReadLimits, require_html: bool) -> Response:
    """GET `url` at the gate's address for its host (redirects too, each through the gate); an
    HTTP error status is returned (without its body), a network error or a broken limit raised
    as PageFailure."""
    request = urllib.request.Request(
        url, headers={"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.5"}
    )
    # The crawl checked `url`'s scope, _GuardedRedirects each hop's (with the best message);
    # the pin only connects to the address checked for the host.
    redirects = (_GuardedRedirects(gate),)
    try:
        with open_url(request, limits, redirects, pin=gate.checked_address) as reading:
            content_type = reading.response.headers.get("Content-Type")
            if require_html and not is_html_content_type(content_type):
                raise PageFailure(f"not an HTML page (content type {content_type})")
            body = reading.read_all()
            return Response(reading.response.geturl(), reading.response.status, content_type, body)
    except urllib.error.HTTPError as exc:
        exc.close()
        return Response(exc.geturl() or url, exc.code, exc.headers.get("Content-Type"), b"")
    except NetReadError as exc:
        raise PageFailure(exc.reason) from None


class HttpFetcher:
    fetched_with: FetchedWith = "http"

    def __init__(self, gate: HostGate, limits: ReadLimits) -> None:
        self._gate = gate
        self._limits = limits

    def fetch(self, url: str) -> Fetched:
        response = http_get(self._gate, url, self._limits, require_html=True)
        if not 200 <= response.status < 300:
            raise PageFailure(f"HTTP {response.status}")
        html = decode_html(response.body, response.content_type)
        return Fetched(response.final_url, response.status, html)
