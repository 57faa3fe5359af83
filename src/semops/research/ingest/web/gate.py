"""Which hosts a crawl may reach, and how often: its pages on allowed hosts, every request on
public addresses only (unless private ones are allowed), and a delay between two requests to the
same host."""

from __future__ import annotations

import ipaddress
import socket
import threading
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
    """Whether a URL may be fetched, and at which address: the crawl's scope (an allowed host,
    `address`) and, for every request the crawl or its browser makes, the address check alone
    (`checked_address`): public addresses only, unless private ones, or the networks in
    `allow_networks`, are allowed.

    Each host is resolved once; its checked address is pinned for the crawl, and every
    connection (plain HTTP, and the browser's through the checking proxy) goes to that address,
    so a host that answers a public address first and a private one next (DNS rebinding) is
    never reached at the second.
    """

    def __init__(
        self,
        allowed_hosts: set[str],
        allow_private: bool,
        allow_networks: tuple[str, ...] = (),
    ) -> None:
        self._allowed_hosts = allowed_hosts
        self._allow_private = allow_private
        self._allow_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)
        self._verdicts: dict[str, str | PageFailure] = {}
        # The crawl loop and the browser's proxy threads ask at once: the lookup runs outside
        # the lock (a slow one blocks no other host), the first verdict stored is the pin.
        self._lock = threading.Lock()

    def allows_host(self, url: str) -> bool:
        return host_of(url) in self._allowed_hosts

    def check(self, url: str) -> None:
        self.address(url)

    def address(self, url: str) -> str:
        """The address to connect to for `url`'s host, which must be in the crawl's scope (an
        allowed host) and pass `checked_address`; PageFailure with the reason otherwise."""
        host = host_of(url)
        if host not in self._allowed_hosts:
            raise PageFailure(
                f"host {host} is not allowed: add it to research.web.allow_hosts to crawl it"
            )
        return self.checked_address(url)

    def checked_address(self, url: str) -> str:
        """The pinned address for `url`'s host, public (or allowed), whatever the host: what the
        browser's subresources (other hosts' scripts, fonts, APIs) are held to. PageFailure
        with the reason when the address is refused."""
        host = host_of(url)
        with self._lock:
            verdict = self._verdicts.get(host)
        if verdict is None:
            resolved = self._resolve(host, urlsplit(url).port)
            with self._lock:  # a concurrent lookup's verdict, if stored first, is the pin
                verdict = self._verdicts.setdefault(host, resolved)
        if isinstance(verdict, PageFailure):
            raise PageFailure(str(verdict))
        return verdict

    def check_redirect(self, target: str) -> None:
        """A redirect's target must pass the gate too; the reason names the target."""
        try:
            self.check(target)
        except PageFailure as exc:
            raise PageFailure(f"redirected to {target}: {exc}") from None

    def _resolve(self, host: str, port: int | None) -> str | PageFailure:
        """The first address of `host`, or why it is refused: every address it resolves to must
        be public (or allowed), since a client may pick any of them."""
        try:
            infos = socket.getaddrinfo(host.strip("[]"), port or 443, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            return PageFailure(f"DNS lookup of {host} failed ({exc.strerror})")
        addresses = [str(info[4][0]) for info in infos]
        if not self._allow_private:
            for address in addresses:
                if (kind := non_public_kind(address)) and not self._in_allowed_network(address):
                    where = (
                        f"{host} is"
                        if address == host.strip("[]")
                        else (f"{host} resolves to {address},")
                    )
                    return PageFailure(
                        f"{where} a {kind} address: set research.web.allow_private to true"
                        " (or list its network in research.web.allow_networks) to crawl it"
                    )
        return addresses[0]

    def _in_allowed_network(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self._allow_networks)


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
