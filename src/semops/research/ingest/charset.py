"""Text encodings of ingested bytes: byte-order marks, the charset an HTML page declares, and
rewriting that declaration once the page is stored as UTF-8.

Local files and crawled pages go through the same decoder, read as browsers read them (WHATWG
Encoding): a byte-order mark first, then the HTTP header, then the page's own declaration.
"""

from __future__ import annotations

import codecs
import encodings.cp1252
import re

# UTF-32 LE first, as its mark starts with UTF-16 LE's.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Browsers read these declared labels (Python's names for them) as windows-1252, and pages that
# declare them often hold its curly quotes in 0x80-0x9F.
_WINDOWS_1252_CODECS = frozenset({"iso8859-1", "ascii", "cp1252"})
_WINDOWS_1252 = "windows-1252"
# WHATWG's windows-1252 is Python's cp1252 with the 5 bytes it leaves undefined read as the C1
# controls: it decodes any bytes.
_WINDOWS_1252_TABLE = "".join(
    chr(byte) if char == "\ufffe" else char
    for byte, char in enumerate(encodings.cp1252.decoding_table)
)

_META_TAG = re.compile(r"<meta\b[^>]*>", re.IGNORECASE)
_CHARSET_VALUE = re.compile(r"""(charset\s*=\s*["']?)([^"'\s;/>]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(r"""^\s*<\?xml\b[^>]*?encoding\s*=\s*["']([^"']+)["']""")
_HEAD_TAG = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
# An XML declaration opens the document; a <meta> may come after long inline scripts and styles.
_XML_DECLARATION_BYTES = 1024
_META_SEARCH_BYTES = 4096


class CharsetError(ValueError):
    """Bytes that are not text in the encoding they declare; str(exc) is a one-line reason."""


def bom_decoded(data: bytes) -> str | None:
    """`data` decoded by its byte-order mark, None where it has none. Raises CharsetError."""
    encoding = _bom_encoding(data)
    return None if encoding is None else _decode_by_bom(data, encoding)


def _bom_encoding(data: bytes) -> str | None:
    return next((encoding for bom, encoding in _BOMS if data.startswith(bom)), None)


def _decode_by_bom(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"starts with a {encoding} byte-order mark but is not valid {encoding}"
        ) from exc


def refuse_binary(data: bytes) -> None:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CharsetError(f"binary content: NUL byte at offset {nul}")


def document_charset(data: bytes) -> str | None:
    """The charset label (lowercase) a page declares in an XML declaration, else in a <meta>
    near its start; None where it declares none."""
    start = data[: max(_META_SEARCH_BYTES, len(data) // 20)].decode("ascii", errors="replace")
    if found := _XML_ENCODING.search(start[:_XML_DECLARATION_BYTES]):
        return found.group(1).strip().lower()
    for tag in _META_TAG.findall(start):
        if found := _CHARSET_VALUE.search(tag):
            return found.group(2).strip().lower()
    return None


def _codecs_to_try(label: str | None, in_document: bool) -> list[str]:
    """The codecs to try for a declared label: its own, then UTF-8 (windows-1252 alone, as it
    decodes any bytes); UTF-8 alone for an unknown label."""
    try:
        codec = codecs.lookup(label).name if label else None
    except LookupError:
        codec = None
    # WHATWG: a UTF-16 or UTF-32 label that was read as ASCII is a mistake; it means UTF-8.
    if in_document and codec and codec.startswith(("utf-16", "utf-32")):
        codec = None
    if codec in _WINDOWS_1252_CODECS:
        return [_WINDOWS_1252]
    return [codec, "utf-8"] if codec and codec != "utf-8" else ["utf-8"]


def _decode(data: bytes, codec: str) -> str:
    if codec == _WINDOWS_1252:
        return codecs.charmap_decode(data, "strict", _WINDOWS_1252_TABLE)[0]
    return data.decode(codec)


def decode_html(data: bytes, content_type: str | None = None, strict: bool = False) -> str:
    """HTML bytes as str: by their byte-order mark, else the charset the HTTP Content-Type
    declares, else the one the page declares, else UTF-8.

    Lenient (a crawled page, as a browser shows it): bytes that none of these decodes become
    U+FFFD. `strict` (a local file to index): such bytes and NUL bytes raise CharsetError, as a
    wrong guess indexes mojibake.
    """
    bom = _bom_encoding(data)
    if bom is not None:
        return _decode_by_bom(data, bom) if strict else data.decode(bom, errors="replace")
    if strict:
        refuse_binary(data)
    header = _CHARSET_VALUE.search(content_type or "")
    label = header.group(2).strip().lower() if header else document_charset(data)
    candidates = _codecs_to_try(label, in_document=header is None)
    for codec in candidates:
        try:
            return _decode(data, codec)
        except UnicodeDecodeError as exc:
            error = exc  # UTF-8 comes last: its error is the one reported
    if not strict:
        return data.decode(candidates[0], errors="replace")
    declaration = (
        f"its declared charset {label!r} does not decode it either"
        if label
        else "declares no charset"
    )
    raise CharsetError(
        f"HTML is not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}) and "
        f"{declaration}"
    ) from error


def declare_utf8(html: str) -> str:
    """`html` saying that it is UTF-8, as the snapshot file is.

    A parser given the file's bytes (Docling's BeautifulSoup) decodes them with the charset
    the page declares: a page served as ISO-8859-1 but stored as UTF-8 would come out garbled.
    """

    def to_utf8(tag: re.Match[str]) -> str:
        return _CHARSET_VALUE.sub(r"\g<1>utf-8", tag.group(0))

    rewritten = _META_TAG.sub(to_utf8, html)
    if any(_CHARSET_VALUE.search(tag) for tag in _META_TAG.findall(rewritten)):
        return rewritten
    head = _HEAD_TAG.search(rewritten)
    if head is None:
        return rewritten
    return rewritten[: head.end()] + '<meta charset="utf-8">' + rewritten[head.end() :]
