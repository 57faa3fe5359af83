"""A crawled page on disk: its HTML as UTF-8 and a metadata JSON beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from semops.io import write_bytes, write_json
from semops.research.documents import sha256_text
from semops.research.ingest.charset import declare_utf8
from semops.research.ingest.web.fetched import Fetched, FetchedWith
from semops.research.ingest.web.page import extract_title
from semops.research.ingest.web.urls import normalize_url


def snapshot_path(out_dir: Path, url: str) -> Path:
    """out_dir/<host>[_<port>]/<sha256(url)[:16]>.html; the metadata is the .json beside it."""
    parts = urlsplit(url)
    folder = (parts.hostname or "").replace(":", "-")  # an IPv6 literal
    if parts.port is not None:
        folder += f"_{parts.port}"
    return out_dir / folder / f"{sha256_text(url)[:16]}.html"


def snapshot_metadata(
    url: str, final_url: str, title: str, status: int, fetched_with: FetchedWith, html: str
) -> dict[str, Any]:
    """No timestamp: the same page gives the same bytes."""
    return {
        "url": url,
        "final_url": final_url,
        "title": title,
        "status": status,
        "fetched_with": fetched_with,
        "javascript": fetched_with == "chromium",
        "sha256": sha256_text(html),
    }


def save_snapshot(out_dir: Path, url: str, fetched: Fetched, fetched_with: FetchedWith) -> Path:
    html = declare_utf8(fetched.html)
    html_path = snapshot_path(out_dir, url)
    final_url = normalize_url(fetched.final_url) or fetched.final_url
    metadata = snapshot_metadata(
        url, final_url, extract_title(html), fetched.status, fetched_with, html
    )
    # The HTML first: a .json only ever describes the file beside it.
    write_bytes(html_path, html.encode("utf-8"))
    write_json(html_path.with_suffix(".json"), metadata)
    return html_path
