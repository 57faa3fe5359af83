"""URLs in one canonical spelling, and which of them may lead to a page."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

# Links to these are not followed: a fetch would only end in "not an HTML page".
NON_PAGE_EXTENSIONS = frozenset(
    {".7z", ".avi", ".bmp", ".bz2", ".css", ".csv", ".doc", ".docx", ".epub", ".gif", ".gz"}
    | {".ico", ".jpeg", ".jpg", ".js", ".json", ".mov", ".mp3", ".mp4", ".ogg", ".pdf", ".png"}
    | {".ppt", ".pptx", ".rar", ".svg", ".tar", ".tgz", ".wav", ".webm", ".webp", ".woff"}
    | {".woff2", ".xls", ".xlsx", ".xz", ".zip"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str, base: str | None = None) -> str | None:
    """`url` (resolved against `base`) in one canonical spelling, or None if it is not http(s).

    Lowercase scheme and host, no default port, no fragment, no user:password@ (a snapshot
    must not keep credentials), "/" for an empty path.
    """
    absolute = urljoin(base, url.strip()) if base else url.strip()
    parts = urlsplit(absolute)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def site_of(url: str) -> str:
    """scheme://host[:port] of a normalized URL: what same_site and robots.txt go by."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def is_followable(url: str) -> bool:
    """Whether a link may lead to a page (not an image, archive, style sheet, ...)."""
    return Path(urlsplit(url).path).suffix.lower() not in NON_PAGE_EXTENSIONS
