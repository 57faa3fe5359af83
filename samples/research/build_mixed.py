#!/usr/bin/env python3
"""Write the small mixed-format corpus in samples/research/mixed/ (PDF, DOCX, HTML, MD, TXT).

Run by hand with the project venv (python-docx comes with docling):

    .venv/bin/python samples/research/build_mixed.py [--out samples/research/mixed]

Each file holds short notes on a tool this project uses, with facts that tests can ask for.
The PDF is written here byte by byte (Helvetica text objects, one content stream per page);
the DOCX is rezipped with fixed timestamps: the same script writes byte-identical files.
"""

from __future__ import annotations

import argparse
import html
import io
import textwrap
import zipfile
from datetime import datetime
from pathlib import Path

Block = tuple[str, str]  # (kind, text): kind is "h1", "h2" or "p"

# The PDF: three A4 pages of notes on Qdrant's HNSW index.
PDF_TITLE = "Vector search with Qdrant: notes on the HNSW index"
PDF_PAGE2_SENTENCE = (
    "HNSW stands for Hierarchical Navigable Small World (Malkov and Yashunin, 2016)."
)
PDF_PAGES: tuple[tuple[Block, ...], ...] = (
    (
        ("h1", PDF_TITLE),
        ("h2", "Collections and points"),
        (
            "p",
            "Qdrant stores vectors in collections. Every collection fixes the size of its "
            "vectors and the distance used to compare them: cosine, dot product, Euclidean or "
            "Manhattan. A point is one vector with an id, either an unsigned integer or a UUID, "
            "and an optional JSON payload. Writing a point whose id already exists replaces "
            "it, which makes re-indexing idempotent when ids are derived from content.",
        ),
        (
            "p",
            "The payload carries whatever a search result must show or be filtered on: a "
            "source file, a section title, a page number. Filters are written as conditions "
            "on payload fields, combined with must, should and must_not clauses. Indexing a "
            "payload field lets the engine plan a filtered search instead of checking every "
            "candidate after the fact.",
        ),
        ("h2", "Exact search"),
        (
            "p",
            "Without an index, a query is compared with every stored vector. This brute-force "
            "scan is exact and, for a few thousand vectors, fast enough: with 384 dimensions, "
            "one query against 50,000 vectors takes a few milliseconds on a laptop CPU. It "
            "serves as the reference against which approximate search is measured.",
        ),
    ),
    (
        ("h2", "The HNSW graph"),
        # The page-2 sentence tests look for: one line, so that no extraction splits it.
        ("p", PDF_PAGE2_SENTENCE),
        (
            "p",
            "For larger collections Qdrant builds this approximate index, described by Yury "
            "Malkov and Dmitry Yashunin. It is a stack of proximity graphs: the top layers "
            "are sparse and let a search cross the collection in a few long hops, the bottom "
            "layer links every point to its near neighbours.",
        ),
        (
            "p",
            "A search enters at the top layer, walks greedily towards the query, and descends "
            "one layer at a time. On the bottom layer it keeps a list of the best candidates "
            "found so far and explores their neighbours until the list stops improving.",
        ),
        ("h2", "Build parameters"),
        (
            "p",
            "Two numbers shape the graph. The parameter m is the number of links each point "
            "keeps per layer; Qdrant's default is 16. The parameter ef_construct is the size "
            "of the candidate list while the graph is built; the default is 100. Larger "
            "values give a better graph at the cost of memory and build time.",
        ),
        (
            "p",
            "Rule of thumb from these notes: set the search parameter hnsw_ef well above the "
            "number of results requested; a longer candidate list raises recall and costs "
            "latency.",
        ),
    ),
    (
        ("h2", "Measuring recall"),
        (
            "p",
            "An approximate index is only as good as its recall: the share of the true "
            "nearest neighbours, found by exact search, that it returns. Measure recall at "
            "10 on a sample of real queries before and after changing m, ef_construct or "
            "hnsw_ef, and keep the cheapest setting that stays above the target, for example "
            "0.99.",
        ),
        ("h2", "Running without a server"),
        (
            "p",
            "Qdrant is usually run as a server, but its engine also exists as an in-process "
            "library that keeps a collection in a local folder. Only one process may open "
            "such a folder at a time: a second one must wait or fail with a clear message. "
            "The same collection can later be served by a Qdrant server through the client "
            "library, with the same ids and payloads.",
        ),
    ),
)

DOCX_TITLE = "Tracking experiments with MLflow"
DOCX_BLOCKS: tuple[Block, ...] = (
    ("h1", DOCX_TITLE),
    (
        "p",
        "MLflow is an open-source platform for the machine learning lifecycle. Databricks "
        "announced it in June 2018. Its tracking component records what each training run "
        "used and produced, so that results can be compared and reproduced later.",
    ),
    ("h2", "Runs and experiments"),
    (
        "p",
        "A run is one execution of training code. It records parameters (the inputs, such "
        "as a learning rate), metrics (numbers that may change over time, such as a "
        "validation loss logged at every epoch), tags, and artifacts: files such as a "
        "trained model, a plot or a confusion matrix. Runs are grouped into experiments, "
        "usually one experiment per question being studied.",
    ),
    (
        "p",
        "Parameters are written once per run; logging the same parameter twice with a "
        "different value is an error. Metrics take a step number, which is how a learning "
        "curve is stored.",
    ),
    ("h2", "Where tracking data lives"),
    (
        "p",
        "The tracking server keeps run metadata in a backend store and files in an "
        "artifact store. The backend store is a database, such as SQLite for a single "
        "user or PostgreSQL for a team; the artifact store is a folder or an object store "
        "such as S3. The location is chosen with the tracking URI, for example "
        "sqlite:///mlflow.db.",
    ),
    ("h2", "Comparing runs"),
    (
        "p",
        "The MLflow user interface lists the runs of an experiment as a table with one "
        "column per parameter and metric. Selecting several runs opens a comparison view "
        "with parallel coordinate and scatter plots, which is the quickest way to see "
        "which parameter moved a metric.",
    ),
    (
        "p",
        "Runs can also be searched from code with a filter string such as "
        "metrics.auc > 0.8 and params.model = 'logreg', which returns a table of matching "
        "runs.",
    ),
)

HTML_TITLE = "Reproducible pipelines with DVC"
HTML_BLOCKS: tuple[Block, ...] = (
    ("h1", HTML_TITLE),
    (
        "p",
        "DVC (Data Version Control) is an open-source tool from Iterative that brings "
        "version control to data and machine learning pipelines. It works beside Git: Git "
        "keeps the code and small metadata files, DVC keeps large files in a cache and in "
        "remote storage.",
    ),
    ("h2", "Stages"),
    (
        "p",
        "A pipeline is declared in dvc.yaml as a list of stages. Each stage names a "
        "command, its dependencies (deps), the parameters it reads (params) and what it "
        "produces (outs, metrics, plots). DVC connects stages through their files: the "
        "output of one stage is a dependency of the next.",
    ),
    ("h2", "The lock file"),
    (
        "p",
        "After a stage runs, DVC writes the hash of every dependency and output to "
        "dvc.lock. On the next dvc repro it compares the current hashes with the "
        "recorded ones and skips every stage whose inputs are unchanged. Committing "
        "dvc.lock to Git therefore records exactly which data produced which model.",
    ),
    ("h2", "Experiments"),
    (
        "p",
        "dvc exp run executes the pipeline as an experiment without creating a Git "
        "commit. The -S option overrides a parameter for that run, and dvc exp show "
        "prints a table of experiments with their parameters and metrics side by side.",
    ),
    (
        "p",
        "Experiments can be queued and run later, each in a temporary copy of the "
        "repository, which is why a stage should write its results inside the project "
        "rather than to a path relative to the current directory.",
    ),
)
HTML_NAV = ("Home", "Guides", "Pipelines", "About")
HTML_FOOTER = "Notes written for the semops-data samples, under the project's Apache-2.0 license."

MARKDOWN_TITLE = "Reciprocal rank fusion"
MARKDOWN_BLOCKS: tuple[Block, ...] = (
    ("h1", MARKDOWN_TITLE),
    (
        "p",
        "Reciprocal rank fusion (RRF) merges several ranked lists into one without looking "
        "at their scores. It was introduced by Gordon Cormack, Charles Clarke and Stefan "
        "Buettcher at SIGIR 2009.",
    ),
    ("h2", "The formula"),
    (
        "p",
        "Each document receives, from every list that contains it, the amount 1 / (k + "
        "rank), where rank starts at 1; the fused score is the sum over the lists. The "
        "constant k damps the advantage of the very first ranks; the original paper used "
        "k = 60, which remains the usual default.",
    ),
    ("h2", "Why it is popular"),
    (
        "p",
        "Scores from different retrievers are not comparable: a BM25 score has no upper "
        "bound, a cosine similarity lies between -1 and 1. RRF only uses ranks, so it "
        "needs no calibration and no training data.",
    ),
    ("h2", "When it hurts"),
    (
        "p",
        "Fusion assumes that every list is worth listening to. When one retriever is much "
        "weaker than the other, its mistakes pull relevant documents down and the fused "
        "list can be worse than the strong retriever alone. Weighting each list, or "
        "fusing only the top candidates of the weak one, limits the damage; the only safe "
        "way to choose is to measure on an evaluation set.",
    ),
    ("h2", "A worked example"),
    (
        "p",
        "A dense retriever ranks document A first and document B third; BM25 ranks B first "
        "and A tenth. With k = 60, A scores 1/61 + 1/70 = 0.0307 and B scores 1/63 + 1/61 = "
        "0.0323, so B comes first in the fused list although the dense retriever preferred "
        "A. A document that only one list contains gets a single term and sinks below "
        "documents that both lists found.",
    ),
)

TEXT_TITLE = "Retrieval evaluation metrics"
TEXT_BLOCKS: tuple[Block, ...] = (
    ("h1", TEXT_TITLE),
    (
        "p",
        "A retrieval evaluation set has queries, a corpus and relevance judgments (qrels) "
        "that say which documents answer which query. The metrics below compare a "
        "system's ranked list with those judgments; each is averaged over the queries.",
    ),
    ("h2", "Recall at k"),
    (
        "p",
        "Recall at k is the share of a query's relevant documents that appear in the top "
        "k results. With a single relevant document per query it is simply whether that "
        "document made the top k.",
    ),
    ("h2", "Mean reciprocal rank"),
    (
        "p",
        "The reciprocal rank of a query is 1 divided by the rank of the first relevant "
        "result, and 0 when none is retrieved. MRR at 10 counts only the first ten "
        "results. A system that always puts the answer second scores 0.5.",
    ),
    ("h2", "Normalised discounted cumulative gain"),
    (
        "p",
        "nDCG was introduced by Kalervo Järvelin and Jaana Kekäläinen in 2002. Each "
        "relevant result contributes its gain divided by log2(rank + 1), so a hit at rank "
        "1 counts 1 and a hit at rank 3 counts 0.5; the sum is divided by the best "
        "possible sum, which puts every query on a scale from 0 to 1.",
    ),
    ("h2", "Reporting"),
    (
        "p",
        "Report every metric with the number of queries behind it. With 175 queries a "
        "change of 0.01 in recall at 10 is less than two queries changing their answer, "
        "which is noise; compare systems on the same queries and look at the queries that "
        "changed before trusting a small difference.",
    ),
)


# --- PDF ------------------------------------------------------------------------------------

PAGE_WIDTH, PAGE_HEIGHT, MARGIN = 595, 842, 72  # A4 in points
FONT_SIZES = {"h1": 18.0, "h2": 13.0, "p": 10.5}
# Characters per line at 10.5 pt Helvetica within the margins (average glyph about 0.5 em).
WRAP_WIDTH = 84


def _pdf_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return "(" + escaped + ")"


def pdf_page_content(blocks: tuple[Block, ...]) -> bytes:
    """One page's content stream: each line its own text object at an absolute position."""
    operations = []
    y: float = PAGE_HEIGHT - MARGIN
    for kind, text in blocks:
        size = FONT_SIZES[kind]
        font = "/F1" if kind == "p" else "/F2"
        y -= size if kind == "p" else size * 1.6
        for line in textwrap.wrap(text, WRAP_WIDTH) if kind == "p" else [text]:
            operations.append(f"BT {font} {size:g} Tf {MARGIN} {y:g} Td {_pdf_string(line)} Tj ET")
            y -= size * 1.45
        y -= size * 0.6
    if y < MARGIN:
        raise ValueError(f"page text runs {MARGIN - y:g} pt past the bottom margin")
    return ("\n".join(operations) + "\n").encode("latin-1")


def pdf_bytes(title: str, pages: tuple[tuple[Block, ...], ...]) -> bytes:
    """A minimal PDF 1.4: catalog, page tree, two base-14 fonts, one content stream a page."""
    n_pages = len(pages)
    first_page = 5  # objects 1-4: catalog, page tree, the two fonts
    page_ids = [first_page + 2 * n for n in range(n_pages)]
    info_id = first_page + 2 * n_pages
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{page} 0 R".encode() for page in page_ids)
        + f"] /Count {n_pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
    ]
    for page_id, blocks in zip(page_ids, pages, strict=True):
        content = pdf_page_content(blocks)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
            f"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> "
            f"/Contents {page_id + 1} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"endstream")
    objects.append(
        f"<< /Title {_pdf_string(title)} /Producer (semops build_mixed.py) >>".encode("latin-1")
    )
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {info_id} 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


# --- DOCX, HTML, Markdown, text -------------------------------------------------------------

FIXED_TIME = datetime(2024, 1, 1)


def docx_bytes(title: str, blocks: tuple[Block, ...]) -> bytes:
    import docx  # python-docx: only this format needs it

    document = docx.Document()
    properties = document.core_properties
    properties.title, properties.author, properties.last_modified_by = title, "semops", "semops"
    properties.created = properties.modified = FIXED_TIME
    properties.revision = 1
    for kind, text in blocks:
        if kind == "p":
            document.add_paragraph(text)
        else:
            document.add_heading(text, level=int(kind[1]))
    saved = io.BytesIO()
    document.save(saved)
    return _with_fixed_zip_times(saved.getvalue())


def _with_fixed_zip_times(archive: bytes) -> bytes:
    """The same zip with every entry dated FIXED_TIME (python-docx stamps the current time)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for entry in source.infolist():
            fixed = zipfile.ZipInfo(entry.filename, FIXED_TIME.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, source.read(entry))
    return out.getvalue()


def html_text(title: str, blocks: tuple[Block, ...]) -> str:
    nav = "\n".join(f'      <li><a href="#">{html.escape(item)}</a></li>' for item in HTML_NAV)
    body = "\n".join(f"    <{kind}>{html.escape(text)}</{kind}>" for kind, text in blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n  <meta charset="utf-8">\n'
        f"  <title>{html.escape(title)}</title>\n</head>\n<body>\n"
        f"  <nav>\n    <ul>\n{nav}\n    </ul>\n  </nav>\n  <main>\n{body}\n  </main>\n"
        f"  <footer>\n    <p>{html.escape(HTML_FOOTER)}</p>\n  </footer>\n</body>\n</html>\n"
    )


def markdown_text(blocks: tuple[Block, ...]) -> str:
    marks = {"h1": "# ", "h2": "## ", "p": ""}
    return "\n\n".join(marks[kind] + textwrap.fill(text, 90) for kind, text in blocks) + "\n"


def plain_text(blocks: tuple[Block, ...]) -> str:
    parts = []
    for kind, text in blocks:
        if kind == "p":
            parts.append(textwrap.fill(text, 78))
        else:
            parts.append(text + "\n" + ("=" if kind == "h1" else "-") * len(text))
    return "\n\n".join(parts) + "\n"


def corpus_files() -> dict[str, bytes]:
    """File name -> content of every file in the mixed corpus."""
    return {
        "qdrant-hnsw-notes.pdf": pdf_bytes(PDF_TITLE, PDF_PAGES),
        "mlflow-tracking.docx": docx_bytes(DOCX_TITLE, DOCX_BLOCKS),
        "dvc-pipelines.html": html_text(HTML_TITLE, HTML_BLOCKS).encode(),
        "rank-fusion.md": markdown_text(MARKDOWN_BLOCKS).encode(),
        "retrieval-metrics.txt": plain_text(TEXT_BLOCKS).encode(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "mixed")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in corpus_files().items():
        temporary = args.out / (name + ".tmp")
        temporary.write_bytes(content)
        temporary.replace(args.out / name)
        print(f"{args.out / name}: {len(content)} bytes")


if __name__ == "__main__":
    main()
