"""What a crawl reads from a page's HTML: its title and the links to follow."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

from semops.research.ingest.web.urls import normalize_url


class _PageParser(HTMLParser):
    """Collects a page's title, <base href> and link targets, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base: str | None = None
        self.title_parts: list[str] = []
        self._in_title = False
        self._title_done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag in ("a", "area") and href:
            self.hrefs.append(href)
        elif tag == "base" and href and self.base is None:
            self.base = href
        elif tag == "title" and not self._title_done:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self._title_done = True

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)


def _parse_page(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


def extract_links(html: str, page_url: str) -> list[str]:
    """The page's http(s) links, normalized, without duplicates, in document order."""
    parser = _parse_page(html)
    base = urljoin(page_url, parser.base) if parser.base else page_url
    links = (normalize_url(href, base) for href in parser.hrefs)
    return list(dict.fromkeys(link for link in links if link is not None))


def extract_title(html: str) -> str:
    return " ".join("".join(_parse_page(html).title_parts).split())
