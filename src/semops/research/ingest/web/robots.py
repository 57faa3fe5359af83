"""robots.txt, read with Protego: the standard library's parser ignores the `*` and `$`
wildcards that sites write their rules with."""

from __future__ import annotations

from protego import Protego

from semops.netread import ReadLimits
from semops.research.ingest.web.fetched import PageFailure
from semops.research.ingest.web.gate import HostGate, Pacer
from semops.research.ingest.web.plain_http import USER_AGENT, http_get
from semops.research.ingest.web.urls import site_of


class Robots:
    """robots.txt of each site, fetched once (RFC 9309: a 4xx file allows all, an unreachable
    one disallows all)."""

    def __init__(self, gate: HostGate, pacer: Pacer, limits: ReadLimits) -> None:
        self._gate = gate
        self._pacer = pacer
        self._limits = limits
        # The rules, or why the whole site counts as disallowed.
        self._rules: dict[str, Protego | str] = {}

    def check(self, url: str) -> None:
        site = site_of(url)
        if site not in self._rules:
            self._rules[site] = self._load(site)
        rules = self._rules[site]
        if isinstance(rules, str):
            raise PageFailure(rules)
        if not rules.can_fetch(url, USER_AGENT):
            raise PageFailure(f"disallowed by {site}/robots.txt")

    def _load(self, site: str) -> Protego | str:
        robots_url = f"{site}/robots.txt"
        self._pacer.wait(robots_url)
        try:
            response = http_get(self._gate, robots_url, self._limits, require_html=False)
        except PageFailure as exc:
            return f"{exc} (fetching {robots_url})"
        if response.status >= 500:
            return f"{robots_url} answered HTTP {response.status}: the site counts as disallowed"
        ok = 200 <= response.status < 300
        return Protego.parse(response.body.decode("utf-8", errors="replace") if ok else "")
