"""Reading from the network within limits, the one home of that policy: an overall deadline
(connecting, the headers and the body together), a byte cap, and the body streamed to a file
with its sha256 computed on the way and checked before the file takes its place.

The crawl's plain HTTP (pages, robots.txt) and the `url` data sources read through here; each
error names the config key of the limit it broke.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semops.errors import SemopsError
from semops.io import atomic_path

CHUNK = 1 << 16
# A URL -> the address to connect to for its host (the one a gate checked).
Pin = Callable[[str], str]


class NetReadError(SemopsError):
    """A read that failed or broke a limit; `reason` says why, the message names the URL too."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class ReadLimits:
    timeout: float
    """Seconds for the whole read: connecting, the headers and the body."""
    max_bytes: int
    # The config keys of the two, named in the errors.
    timeout_key: str
    max_bytes_key: str

    def too_large(self, url: str) -> NetReadError:
        return NetReadError(url, f"larger than {_size(self.max_bytes)} ({self.max_bytes_key})")

    def timed_out(self, url: str) -> NetReadError:
        return NetReadError(url, f"timed out after {self.timeout:g} s ({self.timeout_key})")


def _size(n: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


class Deadline:
    """A point in time; every network operation gets only the seconds left before it."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; TimeoutError when none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each allowed only the time left before the deadline (a per-read
    timeout alone lets a server that sends a byte now and then hold the read for ever)."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open while it is read
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()


def _response_class(deadline: Deadline) -> type[http.client.HTTPResponse]:
    class Response(http.client.HTTPResponse):
        """Status line, headers and body read within the deadline."""

        def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
            super().__init__(sock, *args, **kwargs)
            self.fp.close()
            self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))

    return Response


class _Within:
    """What both connection classes add: connecting within the deadline, to the pinned address
    (the Host header, SNI and the certificate check keep the host name), and reading the
    response within it."""

    def _within(self, deadline: Deadline, address: str | None) -> None:
        self._deadline = deadline
        self._address = address
        self._create_connection = self._connect  # http.client opens its socket through this
        self.response_class = _response_class(deadline)

    def _connect(
        self, host_port: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        host, port = host_port
        sock = socket.create_connection(
            (self._address or host, port), self._deadline.left(), source_address
        )
        sock.settimeout(self._deadline.left())  # for the TLS handshake and the request
        return sock


class _HTTPConnection(_Within, http.client.HTTPConnection):
    def __init__(self, host: str, *, deadline: Deadline, address: str | None, **kw: Any) -> None:
        super().__init__(host, **kw)
        self._within(deadline, address)


class _HTTPSConnection(_Within, http.client.HTTPSConnection):
    def __init__(self, host: str, *, deadline: Deadline, address: str | None, **kw: Any) -> None:
        super().__init__(host, **kw)
        self._within(deadline, address)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline, pin: Pin | None) -> None:
        super().__init__()
        self._deadline = deadline
        self._pin = pin

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(_HTTPConnection, self._deadline, self._pin, req), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline, pin: Pin | None) -> None:
        super().__init__()
        self._deadline = deadline
        self._pin = pin

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(_HTTPSConnection, self._deadline, self._pin, req), req)


def _connection(cls: type, deadline: Deadline, pin: Pin | None, req: Any) -> Any:
    address = pin(req.full_url) if pin is not None else None
    return functools.partial(cls, deadline=deadline, address=address)


class Reading:
    """An open response: its status and headers, and its body read within the limits."""

    def __init__(self, response: http.client.HTTPResponse, url: str, limits: ReadLimits) -> None:
        self.response = response
        self._url = url
        self._limits = limits

    def chunks(self) -> Iterator[bytes]:
        """The body, chunk by chunk; NetReadError past the deadline or the cap."""
        length = self.response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self._limits.max_bytes:
            raise self._limits.too_large(self._url)
        total = 0
        while chunk := _network(self._url, self._limits, self.response.read, CHUNK):
            total += len(chunk)
            if total > self._limits.max_bytes:
                raise self._limits.too_large(self._url)
            yield chunk

    def read_all(self) -> bytes:
        return b"".join(self.chunks())

    def save(
        self,
        dest: Path,
        verify: Callable[[str], None] | None = None,
        progress: Callable[[int], Any] | None = None,
    ) -> str:
        """Stream the body into `dest` and return its sha256, computed chunk by chunk. The file
        takes its place only once whole and passed by `verify(sha256)`; until then (and if
        anything fails) `dest` is left as it was."""
        digest = hashlib.sha256()
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                for chunk in self.chunks():
                    digest.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            if verify is not None:
                verify(digest.hexdigest())
        return digest.hexdigest()


@contextlib.contextmanager
def open_url(
    request: str | urllib.request.Request,
    limits: ReadLimits,
    handlers: tuple[urllib.request.BaseHandler, ...] = (),
    pin: Pin | None = None,
) -> Iterator[Reading]:
    """GET `request` within `limits`, from connecting to the end of the body. With `pin`, every
    connection (redirects too) goes to pin(url), never through a proxy. An HTTP error status
    raises urllib.error.HTTPError; any other failure NetReadError."""
    deadline = Deadline(limits.timeout)
    no_proxy = (urllib.request.ProxyHandler({}),) if pin is not None else ()
    opener = urllib.request.build_opener(
        *no_proxy, *handlers, _HTTPHandler(deadline, pin), _HTTPSHandler(deadline, pin)
    )
    url = request if isinstance(request, str) else request.full_url
    response = _network(url, limits, opener.open, request, timeout=limits.timeout)
    with response:
        yield Reading(response, url, limits)


def _network(url: str, limits: ReadLimits, call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """call(*args, **kw), its network errors raised as NetReadError (HTTPError as it is)."""
    try:
        return call(*args, **kw)
    except urllib.error.HTTPError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        cause: BaseException = exc
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
            cause = exc.reason
        if isinstance(cause, TimeoutError):
            raise limits.timed_out(url) from None
        raise NetReadError(url, network_reason(cause)) from None


def network_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
