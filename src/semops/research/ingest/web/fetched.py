"""What fetching one page gives: its HTML, or a one-line reason why it was not saved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

FetchedWith = Literal["chromium", "http"]
HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})


class PageFailure(Exception):
    """Why one page was not saved (a one-line reason); the crawl goes on with the others."""


@dataclass(frozen=True)
class Fetched:
    final_url: str
    status: int
    html: str


class Fetcher(Protocol):
    fetched_with: FetchedWith

    def fetch(self, url: str) -> Fetched: ...


def is_html_content_type(content_type: str | None) -> bool:
    """A missing Content-Type counts as HTML, as browsers sniff such pages as HTML."""
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() in HTML_CONTENT_TYPES
