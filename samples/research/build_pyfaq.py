#!/usr/bin/env python3
"""Build the pyfaq retrieval evaluation set (BEIR layout) from Debian's python3.11-doc package.

Run by hand; stdlib only, so it needs neither the project venv nor an installed package:

    apt-get download python3.11-doc              # any directory; nothing is installed
    python3 samples/research/build_pyfaq.py python3.11-doc_3.11.2-6+deb12u8_all.deb

The argument is the .deb itself, or a directory it was extracted to (`dpkg-deb -x`), or the
`_sources` directory inside that. The set is written to samples/research/pyfaq/ (or --out):
corpus.jsonl, queries.jsonl and qrels/test.tsv. SOURCE.md beside them records the package
version, its sha256 and the rules below; the same input gives byte-identical files.

Rules (SOURCE.md gives the figures they produce):
- Sections come from the reST sources' titles (underline, or overline and underline); each
  file ranks its adornment styles in the order they first appear, as reST does.
- A passage is one section's own body (the text before its first subsection) converted to
  plain text; a section whose body converts to nothing (it only holds subsections, a toctree,
  index entries...) is not a passage.
- Scope: the documents under SCOPE_DIRS, the guides and references about the language, its
  library and its tools. Left out: whatsnew/ (release notes that restate the other pages for
  20 versions), c-api/ (the C API reference), distributing/, includes/ (fragments that other
  pages include) and the top-level pages (glossary, about, bugs, license, copyright).
- Every FAQ section (faq/*) whose title is a question (ends with "?") is a query; its only
  relevant passage is its own body. A passage's title path is the document title and the
  enclosing headings, never its own heading: for an FAQ answer that heading is the query.
- A sentence of an answer that repeats its own question verbatim (case-insensitive, spaces
  normalised) is removed; a query whose answer is then empty is dropped.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import tarfile
import unicodedata
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

SOURCES_DIR = "usr/share/doc/python3.11/html/_sources"
SOURCE_SUFFIX = ".rst.txt"
# Folders of _sources whose documents make the corpus (see the module docstring).
SCOPE_DIRS = (
    "distutils/",
    "extending/",
    "faq/",
    "howto/",
    "install/",
    "installing/",
    "library/",
    "reference/",
    "tutorial/",
    "using/",
)
# Sphinx substitutions defined in the docs' conf.py, with their values for this release.
SUBSTITUTIONS = {"version": "3.11", "release": "3.11.2"}

ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1*\s*$")
BULLET = re.compile(r"^([-*+•])( +|$)")
ENUMERATOR = re.compile(
    r"^(\d+|#|[a-zA-Z]|[ivxlcdm]+|[IVXLCDM]+)[.)]( +|$)|^\((\d+|#|[a-z])\)( +|$)"
)
FIELD = re.compile(r"^:([^:`\s][^:`]*):(?:\s+(.*))?$")
OPTION = re.compile(r"^:[\w-]+:(\s|$)")
DIRECTIVE = re.compile(r"^\.\.\s+([\w:.+-]+)::(?:\s+(.*))?$")
TARGET = re.compile(r"^\.\.\s+(?:_(`[^`]+`|[^:]+)|__):\s*(.*)$")
FOOTNOTE = re.compile(r"^\.\.\s+\[(#?[\w-]*|\*)\]\s*(.*)$")
GRID_BORDER = re.compile(r"^\+[-=+]+\+\s*$")
SIMPLE_BORDER = re.compile(r"^=+( +=+)+\s*$")

INLINE = re.compile(
    r"""
    (?<!\\)``(?P<literal>\S(?:.*?\S)??)``(?!\w)
    | (?<![\w\\]):(?P<role>[\w:.+-]+):`(?P<role_text>(?:[^`\\]|\\.)+)`
    | (?<![\w\\])`(?P<ref>(?:[^`\\]|\\.)+)`(?P<ref_role>:[\w:.+-]+:|__?)?
    | (?<![\w\\*])\*\*(?P<strong>\S(?:.*?\S)??)\*\*(?![\w*])
    | (?<![\w\\*])\*(?P<emph>[^\s*](?:.*?[^\s\\])??)\*(?![\w*])
    | (?<![\w\\])\|(?P<subst>\w[\w -]*)\|(?:__?)?(?!\w)
    | \s?\[(?:\#[\w-]*|\d+|\*)\]_(?!\w)
    | (?<![\w\\])\[(?P<citation>[A-Za-z][\w.-]*)\]_(?!\w)
    """,
    re.VERBOSE,
)
ESCAPE = re.compile(r"\\(.)|\\$")
SENTENCE_END = re.compile(r"(?<=[.?!:])\s+")

# Directives by how their text reaches the plain text.
DROPPED_DIRECTIVES = {
    "audit-event",
    "audit-event-table",
    "contents",
    "currentmodule",
    "default-role",
    "figure",
    "highlight",
    "image",
    "include",
    "index",
    "limited-api-list",
    "literalinclude",
    "meta",
    "miscnews",
    "module",
    "moduleauthor",
    "program",
    "raw",
    "sectionauthor",
    "tabularcolumns",
    "testcleanup",
    "testsetup",
    "toctree",
}
CODE_DIRECTIVES = {
    "code",
    "code-block",
    "doctest",
    "parsed-literal",
    "productionlist",
    "sourcecode",
    "testcode",
    "testoutput",
}
LABELLED_DIRECTIVES = {
    "attention": "Attention:",
    "caution": "Caution:",
    "danger": "Danger:",
    "hint": "Hint:",
    "important": "Important:",
    "impl-detail": "CPython implementation detail:",
    "note": "Note:",
    "seealso": "See also:",
    "tip": "Tip:",
    "warning": "Warning:",
}
# Their argument is a title, shown as the first line.
TITLED_DIRECTIVES = {"admonition", "rubric", "sidebar", "table", "list-table", "topic"}
# Their argument is not shown (a build condition, or none).
CONTAINER_DIRECTIVES = {"centered", "container", "epigraph", "glossary", "hlist", "only"}
VERSION_DIRECTIVES = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}:",
    "deprecated": "Deprecated since version {}:",
}
# Any other directive describes an object (function, class, option...): its argument lines are
# signatures, its content prose.


@dataclass(frozen=True)
class RawSection:
    """One titled section of a reST document, before conversion to plain text."""

    level: int
    title: str
    labels: tuple[str, ...]
    body: tuple[str, ...]


@dataclass(frozen=True)
class References:
    """What cross-references resolve to: a label's or document's title (plain text)."""

    label_titles: Mapping[str, str] = field(default_factory=dict)
    doc_titles: Mapping[str, str] = field(default_factory=dict)
    doc: str = ""
    # Names of hyperlink targets in the current document (`name_` references them).
    link_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Passage:
    passage_id: str
    source: str
    title_path: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class EvalSet:
    passages: tuple[Passage, ...]
    queries: tuple[tuple[str, str], ...]  # (query id, text); the relevant passage has its id
    leaks_removed: int
    queries_dropped: int


# --- sections -------------------------------------------------------------------------------


def _is_adornment(line: str) -> bool:
    return bool(ADORNMENT.match(line)) and len(line.strip()) >= 2


def _underlines(title: str, adornment: str) -> bool:
    # docutils accepts a short underline (with a warning) only from 4 characters on.
    length = len(adornment.rstrip())
    return length >= len(title.rstrip()) or length >= 4


def split_sections(text: str) -> list[RawSection]:
    """Sections of a reST document in order, each with its own body (up to the next title).

    A style is an adornment character with or without an overline; its level is the order in
    which it first appears in the document. Text before the first title is dropped.
    """
    lines = text.expandtabs(8).splitlines()
    styles: list[tuple[str, bool]] = []
    found: list[tuple[int, int, int, str]] = []  # (start, body start, level, title)
    i = 0
    while i < len(lines) - 1:
        line, below = lines[i], lines[i + 1]
        above_blank = i == 0 or not lines[i - 1].strip()
        overlined = (
            above_blank
            and _is_adornment(line)
            and i + 2 < len(lines)
            and below.strip()
            and not _is_adornment(below)
            and lines[i + 2].rstrip() == line.rstrip()
            and _underlines(below.strip(), line)
        )
        underlined = (
            above_blank
            and line.strip()
            and not line[0].isspace()
            and not _is_adornment(line)
            and _is_adornment(below)
            and _underlines(line, below)
        )
        if overlined:
            style, title, end = (line.strip()[0], True), below.strip(), i + 3
        elif underlined:
            style, title, end = (below.strip()[0], False), line.strip(), i + 2
        else:
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        found.append((i, end, styles.index(style), title))
        i = end
    sections = []
    for n, (_, body_start, level, title) in enumerate(found):
        body_end = found[n + 1][0] if n + 1 < len(found) else len(lines)
        labels = _labels_above(lines, found[n][0])
        sections.append(RawSection(level, title, labels, tuple(lines[body_start:body_end])))
    return sections


def _labels_above(lines: list[str], start: int) -> tuple[str, ...]:
    """Internal targets (`.. _label:`) directly above a title: they name its section."""
    labels = []
    i = start - 1
    while i >= 0:
        line = lines[i]
        match = TARGET.match(line)
        if not line.strip():
            i -= 1
        elif match and match.group(1) and not match.group(2):
            labels.append(match.group(1).strip("`").lower())
            i -= 1
        else:
            break
    return tuple(reversed(labels))


# --- inline markup --------------------------------------------------------------------------


def _unescape(text: str) -> str:
    # A backslash-space joins inline markup to a word ("``x``\ s"); it produces nothing.
    return ESCAPE.sub(lambda m: "" if m.group(1) in (None, " ") else m.group(1), text)


def _explicit_title(text: str) -> tuple[str | None, str]:
    """`title <target>` -> (title, target); a bare target -> (None, target)."""
    match = re.fullmatch(r"(.*?)\s*<([^<>]*)>", text, re.DOTALL)
    if match and match.group(1):
        return match.group(1), match.group(2)
    return None, text


def _role_text(role: str, content: str, refs: References) -> str:
    title, target = _explicit_title(_unescape(content.replace("\n", " ")))
    if title is not None:
        return title
    role = role.rsplit(":", 1)[-1]
    if role == "pep":
        return "PEP " + target.split("#")[0]
    if role == "rfc":
        return "RFC " + target.split("#")[0]
    if role == "issue":
        return "bpo-" + target
    if role == "gh":
        return "gh-" + target
    if role == "ref":
        return refs.label_titles.get(target.lower(), target)
    if role == "doc":
        path = target.lstrip("/") if target.startswith("/") else _join_doc(refs.doc, target)
        return refs.doc_titles.get(path, target)
    if role == "samp":
        return re.sub(r"(?<!\\)[{}]", "", target)
    if role == "menuselection":
        return target.replace("-->", ">")
    # Sphinx shows only the last component of `~a.b.c`; `!name` is a name not linked.
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]
    return target.lstrip("!")


def _join_doc(doc: str, target: str) -> str:
    parts: list[str] = []
    for part in (str(PurePosixPath(doc).parent) + "/" + target).split("/"):
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def _inline_match_text(match: re.Match[str], refs: References) -> str:
    groups = match.groupdict()
    if groups["literal"] is not None:
        return groups["literal"]
    if groups["role"] is not None:
        return _role_text(groups["role"], groups["role_text"], refs)
    if groups["ref"] is not None:
        if groups["ref_role"] and groups["ref_role"].startswith(":"):
            return _role_text(groups["ref_role"].strip(":"), groups["ref"], refs)
        title, _ = _explicit_title(_unescape(groups["ref"]))
        return title if title is not None else _unescape(groups["ref"])
    for plain in ("strong", "emph"):
        if groups[plain] is not None:
            return inline_to_text(groups[plain], refs)
    if groups["subst"] is not None:
        return SUBSTITUTIONS.get(groups["subst"], groups["subst"])
    if groups["citation"] is not None:
        return "[" + groups["citation"] + "]"
    return ""  # a footnote reference


def inline_to_text(text: str, refs: References = References()) -> str:
    """reST inline markup -> plain text: roles, literals, emphasis, links, escapes."""
    out: list[str] = []
    position = 0
    for match in INLINE.finditer(text):
        out.append(_plain_run(text[position : match.start()], refs))
        out.append(_inline_match_text(match, refs))
        position = match.end()
    out.append(_plain_run(text[position:], refs))
    return "".join(out)


def _plain_run(text: str, refs: References) -> str:
    for name in refs.link_names:
        text = re.sub(rf"(?<![\w`])({re.escape(name)})_(?!\w)", r"\1", text, flags=re.IGNORECASE)
    return _unescape(text)


# --- blocks ---------------------------------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _dedent(lines: Iterable[str]) -> list[str]:
    lines = list(lines)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    margin = min((_indent(line) for line in lines if line.strip()), default=0)
    return [line[margin:].rstrip() for line in lines]


def _indented_end(lines: list[str], i: int, min_indent: int = 1) -> int:
    """Index of the first line from i on that is not blank and is indented less."""
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) >= min_indent):
        i += 1
    return i


def _paragraph(lines: Iterable[str], refs: References) -> str:
    return inline_to_text(" ".join(line.strip() for line in lines), refs).strip()


def rest_to_text(lines: Iterable[str], refs: References = References()) -> str:
    """A reST body -> readable plain text: one line per paragraph or list item, code kept as
    code (dedented), blocks separated by a blank line, markup that carries no prose dropped."""
    return "\n\n".join(block for block in _blocks(_dedent(lines), refs) if block)


def _blocks(lines: list[str], refs: References) -> Iterator[str]:
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif _indent(line) > 0:  # a block quote
            end = _indented_end(lines, i)
            yield from _blocks(_dedent(lines[i:end]), refs)
            i = end
        elif _is_adornment(line) and len(line.strip()) >= 4:  # a transition
            i += 1
        elif line == ".." or line.startswith(".. "):
            end = _indented_end(lines, i + 1)
            yield from _explicit_markup(lines[i:end], refs)
            i = end
        elif (marker := BULLET.match(line) or ENUMERATOR.match(line)) and _is_list_item(
            lines, i, marker
        ):
            end = _indented_end(lines, i + 1)
            item = [" " * marker.end() + line[marker.end() :], *lines[i + 1 : end]]
            prefix = "- " if BULLET.match(line) else marker.group(0).strip() + " "
            yield prefix + "\n".join(_blocks(_dedent(item), refs)).replace("\n", "\n  ")
            i = end
        elif GRID_BORDER.match(line):
            end = i
            while end < len(lines) and lines[end][:1] in ("+", "|"):
                end += 1
            yield _grid_table(lines[i:end], refs)
            i = end
        elif SIMPLE_BORDER.match(line):
            end = _simple_table_end(lines, i)
            yield _simple_table(lines[i:end], refs)
            i = end
        elif line.startswith(">>>"):
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            yield "\n".join(lines[i:end])
            i = end
        elif line.startswith("| ") or line == "|":
            end = i
            while end < len(lines) and (lines[end].startswith("|") or _indent(lines[end]) > 0):
                end += 1
            yield "\n".join(inline_to_text(row[1:].strip(), refs) for row in lines[i:end])
            i = end
        elif (field_match := FIELD.match(line)) is not None:
            end = _indented_end(lines, i + 1)
            body = [field_match.group(2) or "", *_dedent(lines[i + 1 : end])]
            name = inline_to_text(field_match.group(1), refs)
            yield (name + ": " + "\n".join(_blocks(body, refs))).rstrip()
            i = end
        else:
            i = yield from _paragraph_and_literal(lines, i, refs)


def _is_list_item(lines: list[str], i: int, marker: re.Match[str]) -> bool:
    # "1990. was a year" is a paragraph: a list item's text goes on aligned, or stops.
    following = lines[i + 1] if i + 1 < len(lines) else ""
    return (
        not following.strip()
        or _indent(following) > 0
        or bool(BULLET.match(following))
        or (marker.re is ENUMERATOR and bool(ENUMERATOR.match(following)))
    )


def _simple_table_end(lines: list[str], start: int) -> int:
    borders = 0
    i = start
    while i < len(lines):
        if SIMPLE_BORDER.match(lines[i]):
            borders += 1
            if borders >= 2 and (i + 1 == len(lines) or not lines[i + 1].strip()):
                return i + 1
        i += 1
    return i


def _simple_table(lines: list[str], refs: References) -> str:
    """One line per row, cells joined by " | "; a line whose first column is blank continues
    the row above."""
    starts = [m.start() for m in re.finditer(r"=+", lines[0])]
    rows: list[list[list[str]]] = []
    for line in lines:
        if not line.strip() or SIMPLE_BORDER.match(line):
            continue
        bounds = [*starts[1:], len(line)]
        cells = [line[start:end].strip() for start, end in zip(starts, bounds, strict=True)]
        if cells[0] or not rows:
            rows.append([[cell] for cell in cells])
        else:
            for parts, cell in zip(rows[-1], cells, strict=True):
                parts.append(cell)
    return "\n".join(
        " | ".join(cell for cell in (_paragraph(parts, refs) for parts in row) if cell)
        for row in rows
    )


def _grid_table(lines: list[str], refs: References) -> str:
    rows: list[str] = []
    cells: list[list[str]] = []
    for line in lines:
        if line.startswith("+"):
            if cells:
                rows.append(
                    " | ".join(rest_to_text(cell, refs).replace("\n\n", " ") for cell in cells)
                )
            cells = []
            continue
        parts = [part.strip() for part in line.strip().strip("|").split("|")]
        if not cells:
            cells = [[] for _ in parts]
        for cell, part in zip(cells, parts, strict=False):
            cell.append(part)
    return "\n".join(row for row in rows if row.strip(" |"))


def _paragraph_and_literal(lines: list[str], i: int, refs: References) -> Generator[str, None, int]:
    """A paragraph (or definition-list item); a `::` ending introduces a literal block."""
    end = i
    while end < len(lines) and lines[end].strip() and _indent(lines[end]) == 0:
        end += 1
    if end == i + 1 and end < len(lines) and lines[end].strip():  # "term" + indented definition
        definition_end = _indented_end(lines, end)
        yield _paragraph(lines[i:end], refs)
        yield from _blocks(_dedent(lines[end:definition_end]), refs)
        return definition_end
    text = " ".join(line.strip() for line in lines[i:end])
    literal_follows = text.endswith("::")
    if literal_follows:
        # "Example::" shows "Example:"; "Example ::" and a lone "::" show no colon at all.
        text = text[:-1] if re.search(r"\S::$", text) else text[:-2].rstrip()
    if text:
        yield inline_to_text(text, refs).strip()
    if literal_follows:
        literal_end = _indented_end(lines, end)
        code = _dedent(lines[end:literal_end])
        if code:
            yield "\n".join(code)
        return literal_end
    return end


def _explicit_markup(lines: list[str], refs: References) -> Iterator[str]:
    first = lines[0]
    directive = DIRECTIVE.match(first)
    if directive is None:
        footnote = FOOTNOTE.match(first)
        if footnote is not None:
            yield from _blocks([footnote.group(2), *_dedent(lines[1:])], refs)
        # Anything else is a target, a substitution definition or a comment: no prose.
        return
    name = directive.group(1).lower()
    arguments = [directive.group(2) or ""]
    i = 1
    while i < len(lines) and lines[i].strip() and not OPTION.match(lines[i].strip()):
        arguments.append(lines[i].strip())
        i += 1
    while i < len(lines) and lines[i].strip() and OPTION.match(lines[i].strip()):
        i += 1
    arguments = [argument for argument in arguments if argument]
    content = _dedent(lines[i:])
    if name in DROPPED_DIRECTIVES:
        return
    if name in CODE_DIRECTIVES:
        code = arguments if name == "productionlist" else []
        code += content
        if code:
            yield "\n".join(code)
        return
    if name in LABELLED_DIRECTIVES or name in VERSION_DIRECTIVES or name == "deprecated-removed":
        yield from _labelled(name, arguments, content, refs)
        return
    if name == "availability":
        yield "Availability: " + _paragraph(arguments, refs)
        yield from _blocks(content, refs)
        return
    if name in CONTAINER_DIRECTIVES:
        yield from _blocks(content, refs)
        return
    if name in TITLED_DIRECTIVES:
        if arguments:
            yield _paragraph(arguments, refs)
        for block in _blocks(content, refs):
            # A list-table row is an item holding a list of cells: "- - a\n  - b".
            if name == "list-table" and block.startswith("- - "):
                yield " | ".join(" ".join(cell.split()) for cell in block[4:].split("\n  - "))
            else:
                yield block
        return
    # An object description: one signature per argument line.
    if arguments:
        yield "\n".join(_unescape(argument) for argument in arguments)
    yield from _blocks(content, refs)


def _labelled(
    name: str, arguments: list[str], content: list[str], refs: References
) -> Iterator[str]:
    if name in LABELLED_DIRECTIVES:
        label, prose = (
            LABELLED_DIRECTIVES[name],
            [*arguments, *([""] if arguments else []), *content],
        )
    else:
        words = " ".join(arguments).split(maxsplit=2 if name == "deprecated-removed" else 1)
        if name == "deprecated-removed":
            versions, rest = words[:2], words[2:]
            label = "Deprecated since version {}, will be removed in version {}:".format(*versions)
        else:
            label, rest = VERSION_DIRECTIVES[name].format(words[0]), words[1:]
        prose = [*rest, *([""] if rest else []), *content]
        if not rest and not content and label.endswith(":"):
            label = label[:-1] + "."
    blocks = list(_blocks(prose, refs))
    if not blocks:
        yield label
        return
    yield label + " " + blocks[0]
    yield from blocks[1:]


# --- the evaluation set ---------------------------------------------------------------------


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-") or "section"


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def remove_leak(text: str, question: str) -> tuple[str, int]:
    """Drop every sentence of `text` that contains `question` (case- and space-insensitive).

    Returns the remaining text and how many sentences were dropped. A question that spans
    several sentences of a line drops that whole line.
    """
    needle = _normalised(question)
    removed = 0
    blocks = []
    for block in text.split("\n\n"):
        lines = []
        for line in block.split("\n"):
            if needle not in _normalised(line):
                lines.append(line)
                continue
            sentences = SENTENCE_END.split(line)
            kept = [s for s in sentences if needle not in _normalised(s)]
            removed += max(1, len(sentences) - len(kept))
            if len(kept) < len(sentences) and kept:
                lines.append(" ".join(kept))
        if any(line.strip() for line in lines):
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks), removed


def in_scope(doc: str) -> bool:
    return doc.startswith(SCOPE_DIRS)


def _link_names(text: str) -> frozenset[str]:
    names = set()
    for line in text.splitlines():
        match = TARGET.match(line)
        if match and match.group(1) and match.group(2):
            names.add(match.group(1).strip("`"))
    return frozenset(names)


def build_eval_set(sources: Mapping[str, str]) -> EvalSet:
    """The evaluation set from reST sources keyed by document path (relative, no suffix)."""
    parsed = {doc: split_sections(text) for doc, text in sorted(sources.items())}
    label_titles: dict[str, str] = {}
    doc_titles: dict[str, str] = {}
    for doc, sections in parsed.items():
        if sections:
            doc_titles[doc] = inline_to_text(sections[0].title)
        for section in sections:
            for label in section.labels:
                label_titles.setdefault(label, inline_to_text(section.title))
    passages: list[Passage] = []
    queries: list[tuple[str, str]] = []
    leaks_removed = queries_dropped = 0
    for doc, sections in parsed.items():
        if not in_scope(doc):
            continue
        refs = References(label_titles, doc_titles, doc, _link_names(sources[doc]))
        used_ids: set[str] = set()
        enclosing: list[tuple[int, str]] = []
        for section in sections:
            while enclosing and enclosing[-1][0] >= section.level:
                enclosing.pop()
            title_path = tuple(title for _, title in enclosing)
            heading = inline_to_text(section.title, refs)
            enclosing.append((section.level, heading))
            passage_id = _unique(f"{doc}#{slugify(heading)}", used_ids)
            text = rest_to_text(section.body, refs)
            is_query = doc.startswith("faq/") and heading.endswith("?")
            if is_query:
                text, removed = remove_leak(text, heading)
                leaks_removed += removed
            if not text.strip():
                queries_dropped += is_query
                continue
            passages.append(Passage(passage_id, doc + SOURCE_SUFFIX, title_path, text))
            if is_query:
                queries.append((passage_id, heading))
    return EvalSet(tuple(passages), tuple(queries), leaks_removed, queries_dropped)


def _unique(candidate: str, used: set[str]) -> str:
    unique, n = candidate, 1
    while unique in used:
        n += 1
        unique = f"{candidate}-{n}"
    used.add(unique)
    return unique


# --- input and output -----------------------------------------------------------------------


def _deb_members(deb: bytes) -> dict[str, bytes]:
    """Members of a Debian package (an `ar` archive)."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("is not a Debian package (no ar archive header)")
    members, offset = {}, 8
    while offset + 60 <= len(deb):
        header = deb[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode())
        members[name] = deb[offset + 60 : offset + 60 + size]
        offset += 60 + size + size % 2
    return members


def read_sources(path: Path) -> dict[str, str]:
    """reST sources keyed by document path, from a .deb, an extracted tree or `_sources`."""
    if path.is_file():
        members = _deb_members(path.read_bytes())
        data_name = next((name for name in members if name.startswith("data.tar")), None)
        if data_name is None:
            raise ValueError(f"has no data.tar member (members: {sorted(members)})")
        prefix = SOURCES_DIR + "/"
        sources = {}
        with tarfile.open(fileobj=io.BytesIO(members[data_name])) as tar:
            for member in tar.getmembers():
                member_path = member.name.removeprefix("./")
                if member.isfile() and member_path.startswith(prefix):
                    name = member_path[len(prefix) :]
                    if name.endswith(SOURCE_SUFFIX):
                        extracted = tar.extractfile(member)
                        assert extracted is not None
                        sources[name[: -len(SOURCE_SUFFIX)]] = extracted.read().decode("utf-8")
        return sources
    root = path / SOURCES_DIR if (path / SOURCES_DIR).is_dir() else path
    return {
        file.relative_to(root).as_posix()[: -len(SOURCE_SUFFIX)]: file.read_text("utf-8")
        for file in sorted(root.rglob("*" + SOURCE_SUFFIX))
    }


def json_line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"


def corpus_lines(eval_set: EvalSet) -> list[str]:
    return [
        json_line(
            {
                "_id": p.passage_id,
                "title": " > ".join(p.title_path),
                "text": p.text,
                "metadata": {"source": p.source, "title_path": list(p.title_path)},
            }
        )
        for p in eval_set.passages
    ]


def write_eval_set(eval_set: EvalSet, out: Path) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    files = {
        out / "corpus.jsonl": "".join(corpus_lines(eval_set)),
        out / "queries.jsonl": "".join(
            json_line({"_id": qid, "text": text}) for qid, text in eval_set.queries
        ),
        out / "qrels" / "test.tsv": "query-id\tcorpus-id\tscore\n"
        + "".join(f"{qid}\t{qid}\t1\n" for qid, _ in eval_set.queries),
    }
    for path, content in files.items():
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(content, encoding="utf-8", newline="\n")
        temporary.replace(path)


def summary(eval_set: EvalSet) -> dict[str, float]:
    words = [len(p.text.split()) for p in eval_set.passages]
    return {
        "queries": len(eval_set.queries),
        "passages": len(eval_set.passages),
        "median_words": statistics.median(words),
        "leaked_sentences_removed": eval_set.leaks_removed,
        "queries_dropped": eval_set.queries_dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="python3.11-doc .deb, or its extracted tree")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "pyfaq")
    args = parser.parse_args()
    try:
        sources = read_sources(args.source)
    except (OSError, ValueError, tarfile.TarError) as error:
        parser.error(f"{args.source}: {error}")
    if "faq/programming" not in sources:
        parser.error(f"{args.source}: no {SOURCES_DIR}/faq/*{SOURCE_SUFFIX} found in it")
    eval_set = build_eval_set(sources)
    write_eval_set(eval_set, args.out)
    print(json.dumps(summary(eval_set), sort_keys=True))


if __name__ == "__main__":
    main()
