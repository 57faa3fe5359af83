"""The report's sections as HTML, each from its part of the typed data; every value escaped."""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

from semops.reporting import graph
from semops.reporting.content import (
    DataSummary,
    Experiments,
    Pipeline,
    Report,
    Research,
    Sample,
)

Value = str | int | float | None
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# Retrieval metrics shown, in order, with their headers.
RETRIEVAL_COLUMNS = (
    ("recall_at_1", "recall@1"),
    ("recall_at_5", "recall@5"),
    ("recall_at_10", "recall@10"),
    ("mrr_at_10", "MRR@10"),
    ("ndcg_at_10", "nDCG@10"),
)


class Html(str):
    """Markup made here, put into a table cell as is (anything else is escaped)."""


def fmt(value: Value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _numeric(value: Value) -> bool:
    if isinstance(value, str):
        return bool(NUMBER.fullmatch(value))
    return isinstance(value, int | float) and not isinstance(value, bool)


def cell(value: Value | Html) -> str:
    if isinstance(value, Html):
        return f"<td>{value}</td>"
    klass = ' class="num"' if _numeric(value) else ""
    return f"<td{klass}>{escape(fmt(value))}</td>"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Value | Html]],
    cls: str = "",
    sorted_by: tuple[int, str] | None = None,
) -> str:
    """A table; `sorted_by`: (column, "ascending"|"descending") the rows come in."""

    def header(i: int, name: str) -> str:
        sort = f' aria-sort="{sorted_by[1]}"' if sorted_by and sorted_by[0] == i else ""
        return f'<th scope="col"{sort}>{escape(name)}</th>'

    head = "".join(header(i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    klass = f' class="{escape(cls)}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>' + "".join(parts) + "</section>"


def note(text: str) -> str:
    """A sentence in italics; `command` spans in it as code."""
    return f'<p class="note">{_code(escape(text))}</p>'


def _code(escaped: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _difference(model: float, baseline: float | None, lower_is_better: bool) -> Html | None:
    if baseline is None:
        return None
    delta = model - baseline
    better = delta < 0 if lower_is_better else delta > 0
    klass = "better" if better else "worse" if delta else ""
    return Html(f'<span class="{klass}">{delta:+.4f}</span>')


def model(report: Report) -> str:
    if not report.metrics:
        return section("model", "Model", note("No test metrics yet: run `make run`."))
    rows = [
        [
            m.name + (" (lower is better)" if m.lower_is_better else ""),
            m.model,
            m.baseline,
            _difference(m.model, m.baseline, m.lower_is_better),
        ]
        for m in report.metrics
    ]
    rows_note = f" on {report.test_rows:,} test rows" if report.test_rows is not None else ""
    parts = [
        f"<p>The trained model beside a logistic-regression baseline fitted on the same "
        f"features{escape(rows_note)}.</p>",
        table(["metric", "model", "baseline", "model - baseline"], rows),
    ]
    if report.per_class:
        parts.append("<h3>Per class</h3>")
        classes: list[list[Value | Html]] = [
            [c.name, c.precision, c.recall, c.f1, c.support] for c in report.per_class
        ]
        parts.append(table(["class", "precision", "recall", "f1", "support"], classes))
    return section("model", "Model: test metrics", *parts)


def chart_divs(ids: Sequence[str]) -> str:
    """The elements the page's script draws each chart into (its id: `chart-<name>`)."""
    divs = "".join(f'<div class="chart" id="chart-{escape(i)}"></div>' for i in ids)
    return f'<div class="charts">{divs}</div>'


def plots(ids: Sequence[str]) -> str:
    if not ids:
        return section("plots", "Plots", note("No plot data yet (reports/plots/): run `make run`."))
    return section("plots", "Plots", chart_divs(ids))


def training(ids: Sequence[str], values: Sequence[tuple[str, float | int]]) -> str:
    parts = [chart_divs(ids)] if ids else [note("No training history.")]
    if values:
        parts.append(table(["reports/train.json", "value"], [[k, v] for k, v in values]))
    return section("training", "Training curves", *parts)


def experiments(exps: Experiments) -> str:
    parts = []
    if exps.note:
        parts.append(note(exps.note))
    if exps.rows:
        sorted_by = None
        if exps.sort_column in exps.columns:
            sorted_by = (exps.columns.index(exps.sort_column), "descending")
        parts.append(
            "<p>What <code>make show</code> prints: every experiment of this repository's "
            "current commit with its test metrics and the params that differ, best first. "
            "Click a column's header to sort by it.</p>"
        )
        rows = [list(row) for row in exps.rows]
        parts.append(
            '<div class="scroll">'
            + table(list(exps.columns), rows, "sortable experiments", sorted_by)
            + "</div>"
        )
    return section("experiments", "Experiments", *parts)


def _share(count: int, total: int) -> Html:
    share = count / total if total else 0.0
    return Html(f'<span class="bar" style="width:{120 * share:.0f}px"></span> {share:.1%}')


def _bound(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def data(summary: DataSummary | None) -> str:
    if summary is None:
        return section("data", "Data", note("No clean stage output yet: run `make run`."))
    s = summary
    rows_line = (
        f"<p>Data set <b>{escape(s.dataset)}</b>: {s.rows_raw:,} raw rows, {s.rows_clean:,} "
        f"after cleaning. Target <code>{escape(s.target)}</code>, positive class "
        f"<code>{escape(s.positive)}</code>.</p>"
    )
    total = sum(n for _, n in s.classes)
    parts = [
        rows_line,
        "<h3>Rows dropped, and why</h3>",
        table(["reason", "rows"], [list(r) for r in s.dropped]),
        "<h3>Class balance (clean rows)</h3>",
        table(["class", "rows", "share"], [[c, n, _share(n, total)] for c, n in s.classes]),
        "<h3>Splits</h3>",
        table(["split", "rows"], [list(r) for r in s.splits]),
        "<h3>Values set missing by the validity rules</h3>",
        table(["rule", "column", "values"], [list(r) for r in s.set_missing])
        if s.set_missing
        else note("None: every value passed."),
        "<h3>Features (the raw columns the model reads)</h3>",
        table(
            ["column", "kind", "dtype", "valid from", "valid to"],
            [[f.name, f.kind, f.dtype, _bound(f.low), _bound(f.high)] for f in s.features],
        ),
    ]
    if s.left_out:
        parts.append(note("Left out by data.drop: " + ", ".join(s.left_out)))
    return section("data", "Data", *parts)


def _sample(sample: Sample) -> str:
    relevant = ' <span class="hit">&#10003; judged relevant</span>'
    items = "".join(
        f'<div class="passage"><span class="cite">[{i}] {escape(p.citation)}</span> '
        f"(score {p.score:.4f}){relevant if p.relevant else ''}<p>{escape(p.text)}</p></div>"
        for i, p in enumerate(sample.passages, 1)
    )
    query = f"<h3>{escape(sample.evaluation_set)}: {escape(sample.query)}</h3>"
    return query + (items or note("No passage retrieved."))


def research(summary: Research | None) -> str:
    if summary is None:
        return section("research", "Research index", note("No research index yet: run `make run`."))
    sizes = "; ".join(
        f"{name}: " + ", ".join(f"{n:,} {what}" for what, n in counts)
        for name, counts in summary.sets
    )
    rows: list[list[Value | Html]] = [
        [r.evaluation_set, r.queries, r.method, *(r.metrics.get(k) for k, _ in RETRIEVAL_COLUMNS)]
        for r in summary.retrieval
    ]
    parts = [
        f"<p>{summary.documents:,} documents in {summary.chunks:,} chunks; the configured "
        f"retrieval method is <b>{escape(summary.method)}</b>. Evaluation sets: "
        f"{escape(sizes)}.</p>",
        "<h3>Retrieval metrics per method per evaluation set</h3>",
        table(["evaluation set", "queries", "method", *(h for _, h in RETRIEVAL_COLUMNS)], rows),
        "<h3>Sample retrievals, with citations</h3>",
        note(summary.samples_note) if summary.samples_note else "",
        *(_sample(s) for s in summary.samples),
    ]
    return section("research", "Research index", *parts)


def pipeline(dag: Pipeline | None) -> str:
    if dag is None:
        return section("pipeline", "Pipeline", note("dvc.yaml could not be read."))
    text = (
        "<p>dvc.yaml's stages as <code>dvc dag</code> draws them, upstream above "
        "(hover a stage for its outputs).</p>"
    )
    return section("pipeline", "Pipeline", text, f'<div class="scroll">{graph.svg(dag)}</div>')
