"""The committed research samples (samples/research/) and the builders that write them."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tarfile
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
from projectkit import REPO

SAMPLES = REPO / "samples" / "research"
PYFAQ = SAMPLES / "pyfaq"
MIXED = SAMPLES / "mixed"
BUILD_PYFAQ = SAMPLES / "build_pyfaq.py"


def load_script(path: Path) -> ModuleType:
    """A builder script as a module (samples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


pyfaq = load_script(BUILD_PYFAQ)


@cache
def jsonl(path: Path) -> tuple[dict, ...]:
    return tuple(json.loads(line) for line in path.read_text("utf-8").splitlines())


def normalised(text: str) -> str:
    return " ".join(text.lower().split())


# --- the committed evaluation set -----------------------------------------------------------


def test_pyfaq_has_the_documented_counts() -> None:
    corpus, queries = jsonl(PYFAQ / "corpus.jsonl"), jsonl(PYFAQ / "queries.jsonl")
    assert len(queries) == 175
    assert len(corpus) == 2971
    assert statistics.median(len(p["text"].split()) for p in corpus) == 187
    source = (PYFAQ / "SOURCE.md").read_text()
    for figure in ("175", "2,971", "187", "3.11.2-6+deb12u8"):
        assert figure in source
    assert "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b" in source


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl"])
def test_pyfaq_files_are_canonical_json_lines(name: str) -> None:
    raw = (PYFAQ / name).read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    for line in raw.decode("utf-8").splitlines(keepends=True):
        assert line == pyfaq.json_line(json.loads(line))


def test_pyfaq_records_have_the_beir_fields() -> None:
    for passage in jsonl(PYFAQ / "corpus.jsonl"):
        assert set(passage) == {"_id", "title", "text", "metadata"}
        assert set(passage["metadata"]) == {"source", "title_path"}
        source = passage["metadata"]["source"]
        assert passage["_id"].startswith(source.removesuffix(".rst.txt") + "#")
        assert source.startswith(pyfaq.SCOPE_DIRS) and source.endswith(".rst.txt")
        assert passage["title"] == " > ".join(passage["metadata"]["title_path"])
        assert passage["text"].strip()
    for query in jsonl(PYFAQ / "queries.jsonl"):
        assert set(query) == {"_id", "text"}
        assert query["text"].endswith("?") and query["_id"].startswith("faq/")


def test_pyfaq_ids_are_unique_and_every_qrel_resolves() -> None:
    corpus_ids = [p["_id"] for p in jsonl(PYFAQ / "corpus.jsonl")]
    query_ids = [q["_id"] for q in jsonl(PYFAQ / "queries.jsonl")]
    assert len(set(corpus_ids)) == len(corpus_ids)
    assert len(set(query_ids)) == len(query_ids)
    lines = (PYFAQ / "qrels" / "test.tsv").read_text("utf-8").splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    qrels = [line.split("\t") for line in lines[1:]]
    assert sorted(qid for qid, _, _ in qrels) == sorted(query_ids)  # one relevant passage each
    corpus = set(corpus_ids)
    for _, corpus_id, score in qrels:
        assert corpus_id in corpus and score == "1"
        assert corpus_id.startswith("faq/")


def test_no_passage_contains_its_own_question() -> None:
    passages = {p["_id"]: p for p in jsonl(PYFAQ / "corpus.jsonl")}
    relevant = dict(
        line.split("\t")[:2] for line in (PYFAQ / "qrels/test.tsv").read_text().splitlines()[1:]
    )
    for query in jsonl(PYFAQ / "queries.jsonl"):
        answer = passages[relevant[query["_id"]]]
        question = normalised(query["text"])
        assert question not in normalised(answer["text"]), query["_id"]
        assert question not in normalised(answer["title"]), query["_id"]


def test_pyfaq_text_is_plain() -> None:
    passages = {p["_id"]: p for p in jsonl(PYFAQ / "corpus.jsonl")}
    copy_answer = passages["faq/programming#how-do-i-copy-an-object-in-python"]
    assert copy_answer["text"].startswith("In general, try copy.copy or copy.deepcopy")
    assert copy_answer["metadata"]["title_path"] == ["Programming FAQ", "Core Language"]
    leftovers = [
        p["_id"] for p in passages.values() if ":func:`" in p["text"] or ".. index::" in p["text"]
    ]
    assert leftovers == []


# --- the builder's reST parsing -------------------------------------------------------------


def test_section_levels_follow_the_order_styles_first_appear() -> None:
    text = "\n".join(
        [
            "=========",  # overlined "=" and underlined "=" are two styles
            " Title",
            "=========",
            "",
            "intro",
            "",
            "First",
            "=====",
            "",
            "Sub",
            "---",
            "",
            "Second",
            "======",
            "body",
            "",
            "   Indented",
            "   --------",
            "",
            "abc",
            "--",
        ]
    )
    sections = pyfaq.split_sections(text)
    assert [(s.level, s.title) for s in sections] == [
        (0, "Title"),
        (1, "First"),
        (2, "Sub"),
        (1, "Second"),
    ]
    assert sections[0].body == ("", "intro", "")
    # an indented "title" is a block quote, and a 2-character underline under a longer line is
    # not a title: both stay in the body
    assert "   Indented" in sections[3].body
    assert "abc" in sections[3].body


def test_labels_above_a_title_name_its_section() -> None:
    sections = pyfaq.split_sections(".. _copy-faq:\n\n.. _other:\n\nCopying\n=======\n\ntext\n")
    assert sections[0].labels == ("copy-faq", "other")


@pytest.mark.parametrize(
    ("markup", "plain"),
    [
        ("try :func:`copy.copy` first", "try copy.copy first"),
        ("see :meth:`~collections.OrderedDict.move_to_end`", "see move_to_end"),
        ("see :ref:`the tutorial <tut-intro>` now", "see the tutorial now"),
        (":pep:`8` and :rfc:`2822#section-3`", "PEP 8 and RFC 2822"),
        ("``x = [] * 3`` is a ``list``", "x = [] * 3 is a list"),
        ("*really* and **very** important", "really and very important"),
        ("call f(*args, **kwargs) here", "call f(*args, **kwargs) here"),
        ("at `Pylint <https://pylint.org>`_ or `here <https://x.org>`__.", "at Pylint or here."),
        ("``str``\\ s and \\*stars\\*", "strs and *stars*"),
        ("a footnote [#]_ and [1]_ here", "a footnote and here"),
        ("version |release|", "version 3.11.2"),
        (":samp:`python{X.Y}` and :kbd:`Ctrl-C`", "pythonX.Y and Ctrl-C"),
    ],
)
def test_inline_markup_becomes_plain_text(markup: str, plain: str) -> None:
    assert pyfaq.inline_to_text(markup) == plain


def test_bare_references_resolve_to_titles() -> None:
    refs = pyfaq.References(
        label_titles={"tut-intro": "An Informal Introduction"},
        doc_titles={"library/copy": "copy — Shallow and deep copy operations"},
        doc="library/index",
    )
    assert pyfaq.inline_to_text("read :ref:`tut-intro`", refs) == "read An Informal Introduction"
    assert pyfaq.inline_to_text(":doc:`copy`", refs) == "copy — Shallow and deep copy operations"


def test_code_blocks_keep_their_code_dedented() -> None:
    body = [
        "Use slicing::",
        "",
        "      new_l = l[:]",
        "      if x:",
        "          y()",
        "",
        "Or this ::",
        "",
        "   b = a.copy()",
        "",
        ".. code-block:: python",
        "   :emphasize-lines: 1",
        "",
        "   import copy",
        "",
        "::",
        "",
        "   bare()",
    ]
    assert pyfaq.rest_to_text(body) == (
        "Use slicing:\n\nnew_l = l[:]\nif x:\n    y()\n\nOr this\n\nb = a.copy()\n\n"
        "import copy\n\nbare()"
    )


def test_directives_without_prose_are_dropped_and_admonitions_kept() -> None:
    body = [
        ".. index:: single: copy; deep",
        ".. highlight:: c",
        ".. _copy-label:",
        "",
        ".. This is a comment",
        "   over two lines.",
        "",
        "Prose with :class:`list`.",
        "",
        ".. note::",
        "",
        "   Mind the *gap*.",
        "",
        ".. versionchanged:: 3.2",
        "   Added *memo*.",
        "",
        ".. versionadded:: 3.11",
        "",
        ".. function:: copy(x)",
        "              deepcopy(x)",
        "",
        "   Return a copy of *x*.",
        "",
        "* first item",
        "  continued",
        "* second",
    ]
    assert pyfaq.rest_to_text(body) == (
        "Prose with list.\n\nNote: Mind the gap.\n\nChanged in version 3.2: Added memo.\n\n"
        "New in version 3.11.\n\ncopy(x)\ndeepcopy(x)\n\nReturn a copy of x.\n\n"
        "- first item continued\n\n- second"
    )


def test_tables_become_rows_of_cells() -> None:
    simple = [
        "=========  ===================",
        "From       To",
        "=========  ===================",
        "``f(a)``   :meth:`g(a)",
        "           <unittest.g>`",
        "``h``      i",
        "=========  ===================",
    ]
    assert pyfaq.rest_to_text(simple) == "From | To\nf(a) | g(a)\nh | i"
    grid = ["+-----+-----+", "| a   | b   |", "+=====+=====+", "| c   | d   |", "+-----+-----+"]
    assert pyfaq.rest_to_text(grid) == "a | b\nc | d"
    list_table = [
        ".. list-table::",
        "",
        "   * - ``x()``",
        "     - Does x.",
        "   * - y",
        "     - Does y.",
    ]
    assert pyfaq.rest_to_text(list_table) == "x() | Does x.\n\ny | Does y."


def test_remove_leak_drops_the_sentence_that_repeats_the_question() -> None:
    text = (
        "Yes.  How do I copy an\n\nOther paragraph.\n\n"
        "So, how do  I copy an OBJECT in Python? Use copy.copy. Done."
    )
    kept, removed = pyfaq.remove_leak(text, "How do I copy an object in Python?")
    assert kept == "Yes.  How do I copy an\n\nOther paragraph.\n\nUse copy.copy. Done."
    assert removed == 1
    assert pyfaq.remove_leak(
        "How do I copy an object in Python?", "How do I copy an object in Python?"
    ) == ("", 1)


def test_slugs_are_readable_ascii() -> None:
    assert (
        pyfaq.slugify("How do I copy an object in Python?") == "how-do-i-copy-an-object-in-python"
    )
    assert (
        pyfaq.slugify("copy — Shallow and deep copy operations")
        == "copy-shallow-and-deep-copy-operations"
    )
    assert pyfaq.slugify("Où?") == "ou"
    assert pyfaq.slugify("???") == "section"


MINI_DOCS = {
    "faq/programming": "\n".join(
        [
            ":tocdepth: 2",
            "",
            "===============",
            "Programming FAQ",
            "===============",
            "",
            ".. contents::",
            "",
            "Core Language",
            "=============",
            "",
            "How do I copy an object in Python?",
            "----------------------------------",
            "",
            "Try :func:`copy.copy`.",
            "",
            "Why?",
            "----",
            "",
            "Why?",
            "",
            "Why?",
            "----",
            "",
            "Because.",
            "",
            "Is it a question",
            "----------------",
            "",
            "Not a query: no question mark.",
        ]
    ),
    "library/copy": (
        "copy\n====\n\n.. module:: copy\n\nSee :ref:`copy-faq`.\n\n"
        ".. _copy-faq:\n\nDetails\n-------\n\nDeep copies.\n"
    ),
    "whatsnew/3.11": "What's New\n==========\n\nHow do I copy an object in Python? Not in scope.\n",
}


def test_build_eval_set_on_a_small_tree() -> None:
    eval_set = pyfaq.build_eval_set(MINI_DOCS)
    passages = {p.passage_id: p for p in eval_set.passages}
    assert list(passages) == [
        "faq/programming#how-do-i-copy-an-object-in-python",
        "faq/programming#why-2",
        "faq/programming#is-it-a-question",
        "library/copy#copy",
        "library/copy#details",
    ]
    # the first "Why?" answers only with its question: its leak is removed, the query dropped
    assert eval_set.queries == (
        ("faq/programming#how-do-i-copy-an-object-in-python", "How do I copy an object in Python?"),
        ("faq/programming#why-2", "Why?"),
    )
    assert (eval_set.leaks_removed, eval_set.queries_dropped) == (1, 1)
    answer = passages["faq/programming#how-do-i-copy-an-object-in-python"]
    assert answer.title_path == ("Programming FAQ", "Core Language")
    assert answer.text == "Try copy.copy."
    assert answer.source == "faq/programming.rst.txt"
    assert passages["library/copy#copy"].title_path == ()
    assert passages["library/copy#copy"].text == "See Details."
    assert passages["library/copy#details"].title_path == ("copy",)


def make_deb(path: Path, sources: dict[str, str]) -> Path:
    """A Debian package (ar archive) whose data.tar.xz holds the given reST sources."""
    return deb_of_files(
        path,
        {
            f"{pyfaq.SOURCES_DIR}/{doc}{pyfaq.SOURCE_SUFFIX}": text.encode()
            for doc, text in sources.items()
        },
    )


def deb_of_files(path: Path, files: dict[str, bytes]) -> Path:
    """A Debian package (ar archive) whose data.tar.xz holds `files` (path in the package)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, blob in sorted(files.items()):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    members = {"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data.getvalue()}
    archive = bytearray(b"!<arch>\n")
    for name, blob in members.items():
        archive += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode()
        archive += blob + b"\n" * (len(blob) % 2)
    path.write_bytes(bytes(archive))
    return path


def test_the_builder_script_reads_a_deb_and_writes_identical_sets(tmp_path: Path) -> None:
    deb = make_deb(tmp_path / "python3.11-doc_test_all.deb", MINI_DOCS)
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = subprocess.run(
            [sys.executable, str(BUILD_PYFAQ), str(deb), "--out", str(out)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(result.stdout)["queries"] == 2
        outputs.append(
            {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        )
    assert outputs[0] == outputs[1]
    assert sorted(map(str, outputs[0])) == ["corpus.jsonl", "qrels/test.tsv", "queries.jsonl"]
    assert outputs[0][Path("qrels/test.tsv")].decode().splitlines()[1:] == [
        "faq/programming#how-do-i-copy-an-object-in-python\tfaq/programming#how-do-i-copy-an-object-in-python\t1",
        "faq/programming#why-2\tfaq/programming#why-2\t1",
    ]


def test_the_builder_script_names_a_bad_input(tmp_path: Path) -> None:
    not_a_deb = tmp_path / "notes.deb"
    not_a_deb.write_text("hello")
    result = subprocess.run(
        [sys.executable, str(BUILD_PYFAQ), str(not_a_deb), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{not_a_deb}: is not a Debian package" in result.stderr
    assert not (tmp_path / "out").exists()


# --- the real-document set -----------------------------------------------------------------

RDOCS = SAMPLES / "rdocs"
BUILD_RDOCS = SAMPLES / "build_rdocs.py"


def test_rdocs_documents_are_the_shipped_files_source_md_names() -> None:
    source = (RDOCS / "SOURCE.md").read_text()
    for path in sorted((RDOCS / "documents").iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"| `documents/{path.name}` | {path.stat().st_size} | `{digest}` |" in source
    assert "| r-doc-pdf | 4.2.2.20221110-2 |" in source


def test_rdocs_queries_are_judged_by_pages_and_headings_that_exist() -> None:
    import pypdfium2

    queries = jsonl(RDOCS / "queries.jsonl")
    kinds = [q["metadata"]["kind"] for q in queries]
    assert (kinds.count("heading"), kinds.count("user")) == (75, 42)
    rows = [line.split("\t") for line in (RDOCS / "qrels/test.tsv").read_text().splitlines()[1:]]
    judged = {qid for qid, _, _ in rows}
    assert judged == {q["_id"] for q in queries}
    pages = {}
    for name in ("R-FAQ.pdf", "R-data.pdf"):
        pdf = pypdfium2.PdfDocument(RDOCS / "documents" / name)
        pages[name] = len(pdf)
        pdf.close()
    html = (RDOCS / "documents/R-lang.html").read_text()
    for _, unit, grade in rows:
        name, _, where = unit.partition("#")
        assert grade == "1"
        if name.endswith(".pdf"):
            assert 1 <= int(where.removeprefix("page=")) <= pages[name]
        else:
            assert where in " ".join(html.replace("&nbsp;", " ").split()), unit
    headings = {q["text"] for q in queries if q["metadata"]["kind"] == "heading"}
    users = [q["text"] for q in queries if q["metadata"]["kind"] == "user"]
    assert not headings.intersection(users)  # user queries are not headings asked verbatim


def test_the_rdocs_builder_reads_debs_and_writes_the_committed_set(tmp_path: Path) -> None:
    manual = "usr/share/R/doc/manual"
    pdf_deb = deb_of_files(
        tmp_path / "r-doc-pdf_9.9-1_all.deb",
        {
            f"{manual}/{n}": (RDOCS / "documents" / n).read_bytes()
            for n in ("R-FAQ.pdf", "R-data.pdf")
        },
    )
    html_deb = deb_of_files(
        tmp_path / "r-doc-html_9.9-1_all.deb",
        {f"{manual}/R-lang.html": (RDOCS / "documents/R-lang.html").read_bytes()},
    )
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(BUILD_RDOCS), str(pdf_deb), str(html_deb), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in (
        "queries.jsonl",
        "qrels/test.tsv",
        *(f"documents/{p.name}" for p in (RDOCS / "documents").iterdir()),
    ):
        assert (out / name).read_bytes() == (RDOCS / name).read_bytes(), name
    assert "| r-doc-pdf | 9.9-1 |" in (out / "SOURCE.md").read_text()
    not_a_deb = tmp_path / "notes.deb"
    not_a_deb.write_text("hello")
    result = subprocess.run(
        [sys.executable, str(BUILD_RDOCS), str(not_a_deb), str(html_deb), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and f"{not_a_deb}: not a .deb (ar) archive" in result.stderr


# --- the mixed-format corpus ----------------------------------------------------------------


def test_mixed_files_are_what_build_mixed_writes() -> None:
    build_mixed = load_script(SAMPLES / "build_mixed.py")
    files = build_mixed.corpus_files()
    assert sorted(files) == sorted(p.name for p in MIXED.iterdir())
    for name, content in files.items():
        assert (MIXED / name).read_bytes() == content, name


def test_docling_converts_every_mixed_file_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter, PdfFormatOption
    from docling.pipeline.native_pdf_pipeline import NativePdfPipeline, NativePdfPipelineOptions
    from docling_core.types.doc import TextItem

    build_mixed = load_script(SAMPLES / "build_mixed.py")
    pdf_option = PdfFormatOption(
        pipeline_cls=NativePdfPipeline, pipeline_options=NativePdfPipelineOptions()
    )
    converter = DocumentConverter(format_options={InputFormat.PDF: pdf_option})
    texts: dict[str, list[tuple[str, str, int | None]]] = {}
    for path in sorted(MIXED.iterdir()):
        document = converter.convert(path).document
        texts[path.name] = [
            (item.label.value, item.text, item.prov[0].page_no if item.prov else None)
            for item, _ in document.iterate_items()
            if isinstance(item, TextItem)
        ]
    pdf = texts["qdrant-hnsw-notes.pdf"]
    assert ("text", build_mixed.PDF_PAGE2_SENTENCE, 2) in pdf
    assert {page for _, _, page in pdf} == {1, 2, 3}
    assert any(text == "Running without a server" and page == 3 for _, text, page in pdf)
    headings = {
        name: [text for label, text, _ in items if label in ("title", "section_header")]
        for name, items in texts.items()
    }
    assert headings["mlflow-tracking.docx"][:2] == [
        "Tracking experiments with MLflow",
        "Runs and experiments",
    ]
    assert headings["dvc-pipelines.html"][:2] == ["Reproducible pipelines with DVC", "Stages"]
    assert headings["rank-fusion.md"][-1] == "A worked example"
    assert "Normalised discounted cumulative gain" in headings["retrieval-metrics.txt"]
    html_text = " ".join(text for _, text, _ in texts["dvc-pipelines.html"])
    assert "dvc.lock" in html_text and "Apache-2.0" not in html_text  # the footer is left out
    assert any("Järvelin" in text for _, text, _ in texts["retrieval-metrics.txt"])
