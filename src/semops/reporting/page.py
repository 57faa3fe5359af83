"""The report as one HTML page, from typed data alone: pure functions, the same data giving the
same bytes. Every value is escaped where it enters the page; the charts' specs travel as JSON in
a data block (`<`, `>` and `&` written as \\u escapes, so no value can end it), drawn by the Vega
bundle the caller passes in; the pipeline graph is inline SVG; a few lines of script sort the
experiments table."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from semops.reporting import sections
from semops.reporting.charts import model_charts, training_charts
from semops.reporting.content import Report

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { background: #24303f; color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 4px 0 0; opacity: .8; }
nav { padding: 8px 24px; background: #eef1f4; position: sticky; top: 0; z-index: 1; }
nav a { margin-right: 14px; color: #24303f; }
main { padding: 0 24px 32px; }
section { margin-top: 22px; }
h2 { font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
table { border-collapse: collapse; background: #fff; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f2f5; }
.better { color: #1a7f37; } .worse { color: #b3261e; }
.scroll { overflow-x: auto; max-width: 100%; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px;
  min-width: 320px; min-height: 300px; }
.bar { display: inline-block; height: 10px; background: #4c78a8; vertical-align: middle; }
.note { color: #555; font-style: italic; }
.passage { margin: 4px 0 10px 16px; } .passage p { margin: 2px 0; color: #333; }
.cite { font-weight: 600; } .hit { color: #1a7f37; }
svg.dag rect { fill: #fff; stroke: #4c78a8; stroke-width: 1.5; }
svg.dag text { font: 13px system-ui, sans-serif; text-anchor: middle; fill: #1d1d1f; }
svg.dag .edges path { fill: none; stroke: #888; stroke-width: 1.3; }
svg.dag marker path { fill: #888; }
"""

# Sorting: a click on a header sorts by that column, again reverses; numbers as numbers, text
# as text, empty cells last. Drawing: each chart div with the spec of its id; a failure is
# written into the div and to the console.
SCRIPT = """
function cellKey(row, col) {
  const text = row.cells[col].textContent.trim();
  const number = Number(text);
  return text === '' ? null : (Number.isFinite(number) ? number : text);
}
function compareKeys(a, b) {
  if (a === null || b === null) return a === b ? 0 : (a === null ? 1 : -1);
  if (typeof a !== typeof b) return typeof a === 'number' ? -1 : 1;
  return a < b ? -1 : (a > b ? 1 : 0);
}
function sortTable(table, col) {
  const header = table.tHead.rows[0].cells[col];
  const ascending = header.getAttribute('aria-sort') !== 'ascending';
  for (const cell of table.tHead.rows[0].cells) cell.removeAttribute('aria-sort');
  header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).map((row, index) => [cellKey(row, col), index, row]);
  rows.sort((a, b) => {
    const order = compareKeys(a[0], b[0]);
    const signed = (a[0] === null || b[0] === null) ? order : (ascending ? order : -order);
    return signed || a[1] - b[1];
  });
  for (const entry of rows) body.appendChild(entry[2]);
}
for (const table of document.querySelectorAll('table.sortable')) {
  Array.from(table.tHead.rows[0].cells).forEach((cell, col) => {
    cell.addEventListener('click', () => sortTable(table, col));
  });
}
const specs = JSON.parse(document.getElementById('chart-specs').textContent);
for (const [id, spec] of Object.entries(specs)) {
  const target = document.getElementById(id);
  vegaEmbed(target, spec, {actions: false, renderer: 'svg'}).catch((error) => {
    target.textContent = 'This chart could not be drawn: ' + error;
    console.error(error);
  });
}
"""

NAV = (
    ("model", "Model"),
    ("plots", "Plots"),
    ("training", "Training"),
    ("experiments", "Experiments"),
    ("data", "Data"),
    ("research", "Research index"),
    ("pipeline", "Pipeline"),
)


def json_block(value: Any) -> str:
    """JSON that is safe inside a <script> element (no `</script>` nor `<!--` can form)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(report: Report, vega_script: str) -> str:
    """The whole page. `vega_script`: the <script> element that defines `vegaEmbed`
    (`semops.reporting.vega.vega_script()`)."""
    plots, training = model_charts(report.plots), training_charts(report.plots)
    specs = {f"chart-{i}": spec for i, spec in [*plots, *training]}
    body = [
        sections.model(report),
        sections.plots([i for i, _ in plots]),
        sections.training([i for i, _ in training], report.training),
        sections.experiments(report.experiments),
        sections.data(report.data),
        sections.research(report.research),
        sections.pipeline(report.pipeline),
    ]
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in report.notes)
    nav = "".join(f'<a href="#{i}">{escape(label)}</a>' for i, label in NAV)
    subtitle = f"<p>{escape(report.subtitle)}</p>" if report.subtitle else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(report.title)}</title>",
            f"<style>{STYLE}</style>",
            vega_script,
            "</head>",
            "<body>",
            f"<header><h1>{escape(report.title)}</h1>{subtitle}</header>",
            f"<nav>{nav}</nav>",
            "<main>",
            notes,
            *body,
            "</main>",
            f'<script type="application/json" id="chart-specs">{json_block(specs)}</script>',
            f"<script>{SCRIPT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )
