#!/usr/bin/env python3
"""Build the rdocs retrieval evaluation set: real R manuals from Debian, read by the project's
own ingest path (Docling, the chunker, the embedder), with queries and page- or section-level
relevance.

Run by hand in the project's venv (it reads PDF outlines with pypdfium2, which docling brings):

    apt-get download r-doc-pdf r-doc-html        # any directory; nothing is installed
    .venv/bin/python samples/research/build_rdocs.py r-doc-pdf_*.deb r-doc-html_*.deb

Written to samples/research/rdocs/ (or --out): documents/ (the files as shipped),
queries.jsonl, qrels/test.tsv and SOURCE.md (package versions and sha256s). The same packages
give byte-identical files.

Relevance is decided from the documents' own structure, never from the project's ingest:
- PDF: a section is the span from its outline destination to the next entry at its level or
  above; its relevant ids are "<file>#page=<n>" for each page it covers.
- HTML: "<file>#<heading>", the heading's text as the page shows it (whitespace normalised).

Queries: every R FAQ bookmark that is a question, verbatim ("heading" queries: what a user
who saw the question in a table of contents would type), and USER_QUERIES, written as a user
would ask, in other words than the heading's ("user" queries).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import re
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import pypdfium2

PDF_FILES = ("R-FAQ.pdf", "R-data.pdf")
HTML_FILES = ("R-lang.html",)
MANUAL_DIR = "usr/share/R/doc/manual/"
# A destination this close to the page's top starts the page: the section before ends above.
TOP_MARGIN = 80.0

# (query, file, headings it is answered under): outline titles for PDFs, headings for HTML.
USER_QUERIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "How can I read a file where every column has a fixed width?",
        "R-data.pdf",
        ("Fixed-width-format files",),
    ),
    (
        "How do I get data from an Excel workbook into R?",
        "R-data.pdf",
        ("9 Reading Excel spreadsheets",),
    ),
    (
        "Which packages let R send SQL queries to a relational database?",
        "R-data.pdf",
        ("R interface packages", "Packages using DBI"),
    ),
    (
        "How can I load a Stata or SPSS data file?",
        "R-data.pdf",
        ("EpiInfo, Minitab, S-PLUS, SAS, SPSS, Stata, Systat",),
    ),
    ("How do I turn a wide table into long format?", "R-data.pdf", ("Re-shaping data",)),
    (
        "Is there a way to read files in Data Interchange Format?",
        "R-data.pdf",
        ("Data Interchange Format (DIF)",),
    ),
    ("How do I read data from a network socket?", "R-data.pdf", ("Reading from sockets",)),
    ("How do I fetch a file from a web address inside R?", "R-data.pdf", ("Using download.file",)),
    (
        "Why keep large data in a database management system instead of in memory?",
        "R-data.pdf",
        ("Why use a database?",),
    ),
    ("How can I put text back onto a connection so it is read again?", "R-data.pdf", ("Pushback",)),
    (
        "How do I import a text file that is not ASCII, for example UTF-16?",
        "R-data.pdf",
        ("Encodings",),
    ),
    (
        "How do I write a data frame out as comma-separated text?",
        "R-data.pdf",
        ("Export to text files",),
    ),
    ("Can R read data files saved by Octave?", "R-data.pdf", ("Octave",)),
    ("How do I open dBase .dbf files?", "R-data.pdf", ("dBase files (DBF)",)),
    ("Can I load JPEG or PNG pictures as data?", "R-data.pdf", ("6 Image files",)),
    (
        "How do I read a compressed gzip file through a connection?",
        "R-data.pdf",
        ("Types of connections",),
    ),
    (
        "How do I read and write raw binary numbers with readBin and writeBin?",
        "R-data.pdf",
        ("Binary connections",),
    ),
    (
        "Is it allowed to use R for work in a company?",
        "R-FAQ.pdf",
        ("Can I use R for commercial purposes?",),
    ),
    ("Where does the name of the language come from?", "R-FAQ.pdf", ("Why is R named R?",)),
    (
        "My factor prints numbers as labels; how do I get the actual numeric values back?",
        "R-FAQ.pdf",
        ("How do I convert factors to numeric?",),
    ),
    (
        "How do I remove every object from my session?",
        "R-FAQ.pdf",
        ("How can I clean up my workspace?",),
    ),
    (
        "How do I make PNG plots on a server that has no display?",
        "R-FAQ.pdf",
        ("How do I produce PNG graphics in batch mode?",),
    ),
    (
        "Why is 0.1 + 0.2 == 0.3 FALSE?",
        "R-FAQ.pdf",
        ("Why doesn't R think these numbers are equal?",),
    ),
    ("How should I reference R in a publication?", "R-FAQ.pdf", ("Citing R",)),
    (
        "I have a variable's name in a character string; how do I get its value?",
        "R-FAQ.pdf",
        ("How can I turn a string into a variable?",),
    ),
    (
        "Nothing is shown when I run my script with source; why?",
        "R-FAQ.pdf",
        ("Why is the output not printed when I source() a file?",),
    ),
    ("Where should I send a bug report about R?", "R-FAQ.pdf", ("How to report a bug",)),
    (
        "Where can I ask questions about R by email?",
        "R-FAQ.pdf",
        ("What mailing lists exist for R?",),
    ),
    ("How does variable scoping in R differ from S?", "R-FAQ.pdf", ("Lexical scoping",)),
    (
        "Why is (-8)^(1/3) NaN instead of -2?",
        "R-FAQ.pdf",
        ("Why are powers of negative numbers wrong?",),
    ),
    (
        "When are the arguments of a function actually evaluated?",
        "R-lang.html",
        ("4.3.3 Argument evaluation", "2.1.8 Promise objects"),
    ),
    (
        "What happens when two vectors of different lengths are added?",
        "R-lang.html",
        ("3.3.1 Recycling rules",),
    ),
    (
        "How does a generic function choose which method to call?",
        "R-lang.html",
        ("5.3 Method dispatching", "5.4 UseMethod"),
    ),
    (
        "How can I make sure cleanup code runs when my function exits?",
        "R-lang.html",
        ("8.3 on.exit",),
    ),
    (
        "How do I step through a function line by line?",
        "R-lang.html",
        ("9.2 debug/undebug", "9.1 browser"),
    ),
    (
        "Which identifiers are reserved and cannot be used as variable names?",
        "R-lang.html",
        ("10.3.3 Reserved words",),
    ),
    (
        "What is the precedence of the operators?",
        "R-lang.html",
        ("10.4.2 Infix and prefix operators",),
    ),
    (
        "How are supplied arguments matched to formal arguments?",
        "R-lang.html",
        ("4.3.2 Argument matching",),
    ),
    ("What does the ... argument hold?", "R-lang.html", ("2.1.9 Dot-dot-dot",)),
    ("How do I see which calls led to the last error?", "R-lang.html", ("9.4 traceback",)),
    ("How are factors stored?", "R-lang.html", ("2.3.1 Factors",)),
    (
        "Can I index an array with a matrix of subscripts?",
        "R-lang.html",
        ("3.4.2 Indexing matrices and arrays",),
    ),
)


def read_members(deb: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The named files of the manual folder of a .deb (ar archive of tar members)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit(f"{deb}: not a .deb (ar) archive")
    position, found = 8, {}
    while position < len(data):
        header = data[position : position + 60]
        member, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        body = data[position + 60 : position + 60 + size]
        position += 60 + size + (size % 2)
        if member.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as archive:
                for info in archive.getmembers():
                    name = info.name.removeprefix("./")
                    if name.startswith(MANUAL_DIR) and name[len(MANUAL_DIR) :] in names:
                        extracted = archive.extractfile(info)
                        if extracted is not None:
                            found[name[len(MANUAL_DIR) :]] = extracted.read()
    missing = sorted(set(names) - set(found))
    if missing:
        raise SystemExit(f"{deb}: no {', '.join(missing)} under /{MANUAL_DIR}")
    return found


def package_version(deb: Path) -> str:
    match = re.match(r"[^_]+_([^_]+)_", deb.name)
    return match[1] if match else "unknown"


def pdf_sections(data: bytes) -> dict[str, list[int]]:
    """Outline title -> the pages its section covers."""
    pdf = pypdfium2.PdfDocument(data)
    entries = []
    for bookmark in pdf.get_toc(max_depth=32):
        destination = bookmark.get_dest()
        _, view = destination.get_view()
        page = destination.get_index()
        height = pdf[page].get_height()
        top = view[1] if len(view) >= 2 and view[1] else height
        entries.append(
            (bookmark.level, " ".join(bookmark.get_title().split()), page + 1, top, height)
        )
    sections: dict[str, list[int]] = {}
    for index, (level, title, page, _, _) in enumerate(entries):
        end = next((e for e in entries[index + 1 :] if e[0] <= level), None)
        if end is None:
            last = len(pdf)
        else:
            _, _, end_page, end_top, end_height = end
            last = end_page - 1 if end_top >= end_height - TOP_MARGIN else end_page
        sections[title] = list(range(page, max(page, last) + 1))
    pdf.close()
    return sections


class _Headings(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if re.fullmatch(r"h[1-6]", tag):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if re.fullmatch(r"h[1-6]", tag) and self._text is not None:
            self.headings.append(" ".join(html.unescape("".join(self._text)).split()))
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def html_headings(data: bytes) -> set[str]:
    parser = _Headings()
    parser.feed(data.decode("utf-8"))
    return set(parser.headings)


def relevant_ids(name: str, headings: tuple[str, ...], structure: dict[str, object]) -> list[str]:
    ids: list[str] = []
    for heading in headings:
        if heading not in structure[name]:  # type: ignore[operator]
            raise SystemExit(f"{name}: no heading {heading!r}")
        if name.endswith(".pdf"):
            ids += [f"{name}#page={page}" for page in structure[name][heading]]  # type: ignore[index]
        else:
            ids.append(f"{name}#{heading}")
    return list(dict.fromkeys(ids))


def build(pdf_deb: Path, html_deb: Path, out: Path) -> None:
    files = {**read_members(pdf_deb, PDF_FILES), **read_members(html_deb, HTML_FILES)}
    structure: dict[str, object] = {name: pdf_sections(files[name]) for name in PDF_FILES}
    structure.update({name: html_headings(files[name]) for name in HTML_FILES})
    queries: list[dict[str, object]] = []
    qrels: list[tuple[str, str]] = []
    faq_sections = structure["R-FAQ.pdf"]
    for number, title in enumerate(t for t in faq_sections if t.endswith("?")):  # type: ignore[attr-defined]
        qid = f"faq-heading-{number + 1:03d}"
        queries.append({"_id": qid, "text": title, "metadata": {"kind": "heading"}})
        qrels += [(qid, doc) for doc in relevant_ids("R-FAQ.pdf", (title,), structure)]
    for number, (text, name, headings) in enumerate(USER_QUERIES):
        qid = f"user-{number + 1:03d}"
        queries.append({"_id": qid, "text": text, "metadata": {"kind": "user", "file": name}})
        qrels += [(qid, doc) for doc in relevant_ids(name, headings, structure)]

    (out / "documents").mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        (out / "documents" / name).write_bytes(data)
    (out / "queries.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries), encoding="utf-8"
    )
    (out / "qrels").mkdir(exist_ok=True)
    (out / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels),
        encoding="utf-8",
    )
    (out / "SOURCE.md").write_text(source_md(pdf_deb, html_deb, files, queries), encoding="utf-8")


def source_md(
    pdf_deb: Path, html_deb: Path, files: dict[str, bytes], queries: list[dict[str, object]]
) -> str:
    kinds = [q["metadata"]["kind"] for q in queries]  # type: ignore[index]
    lines = [
        "# rdocs: provenance",
        "",
        "Built by `samples/research/build_rdocs.py` (its docstring has the rules) from Debian",
        "bookworm/main:",
        "",
        "| package | version | sha256 of the .deb |",
        "|---|---|---|",
    ]
    for deb in (pdf_deb, html_deb):
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        lines.append(f"| {deb.name.split('_')[0]} | {package_version(deb)} | `{digest}` |")
    lines += ["", "| document | bytes | sha256 |", "|---|---|---|"]
    for name, data in sorted(files.items()):
        lines.append(f"| `documents/{name}` | {len(data)} | `{hashlib.sha256(data).hexdigest()}` |")
    lines += [
        "",
        f"Queries: {len(queries)} ({kinds.count('heading')} R FAQ question bookmarks verbatim, "
        f"{kinds.count('user')} written as a user would ask).",
        "",
        "Licenses, as the documents state them: R-FAQ.pdf is under the GNU GPL, version 2 or",
        "later (Copyright (C) 1998-2020 Kurt Hornik, 2021-2022 R Core Team); R-data.pdf and",
        "R-lang.html permit making and distributing verbatim copies provided the copyright",
        "notice and the permission notice are preserved (Copyright (C) R Core Team). The files",
        "here are the packages' files, unmodified.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdf_deb", type=Path, help="r-doc-pdf_*.deb")
    parser.add_argument("html_deb", type=Path, help="r-doc-html_*.deb")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "rdocs")
    args = parser.parse_args()
    build(args.pdf_deb, args.html_deb, args.out)


if __name__ == "__main__":
    main()
