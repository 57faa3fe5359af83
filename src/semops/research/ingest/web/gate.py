"""Which hosts a crawl may reach, and how often: allowed hosts on public addresses only (unless
private ones are allowed), and a delay between two requests to the same host."""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urlsplit

from semops.research.ingest.web.fetched import PageFailure
from semops.research.ingest.web.urls import host_of


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


class HostGate:
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
            raise PageFailure(
                f"host {host} is not allowed: add it to research.web.allow_hosts to crawl it"
            )
        if self._allow_private:
            return
        if host not in self._refusals:
            self._refusals[host] = _address_refusal(host, urlsplit(url).port)
        if refusal := self._refusals[host]:
            raise PageFailure(refusal)

    def check_redirect(self, target: str) -> None:
        """A redirect's target must pass the gate too; the reason names the target."""
        try:
            self.check(target)
        except PageFailure as exc:
            raise PageFailure(f"redirected to {target}: {exc}") from None


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


class Pacer:
    """At least `delay` seconds between two requests to the same host."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._last: dict[str, float] = {}

    def wait(self, url: str) -> None:
        host = host_of(url)
        if host in self._last:
            time.sleep(max(0.0, self._last[host] + self._delay - time.monotonic()))
        self._last[host] = time.monotonic()
