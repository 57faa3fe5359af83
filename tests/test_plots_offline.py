"""`dvc plots show` and `dvc plots diff <exp>` draw every plot of dvc.yaml with the network cut:
the page .dvc/config names (plots.html_template, written by `make setup`/`make repro` from the
installed vl-convert-python) carries Vega, Vega-Lite and vega-embed inline, and DVC adds no CDN
script to it. Checked in real Chromium: the pixels of each plot and of its marks, its title and
axis labels, no request leaving the page, no console error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from browserkit import Rendered, non_blank, render
from conftest import run
from projectkit import REPO

from semops import paths
from semops.reporting import vega

# dvc.yaml's plots, by id: each one's title and axis labels must show.
DEFINITIONS = {
    plot_id: props
    for plot in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    for plot_id, props in plot.items()
}
PLOT = ".vega-embed svg.marks"
# What draws the data: the curves' lines, the confusion matrix's cells.
MARKS = ".role-mark.mark-line, .role-mark.mark-rect"


def test_template_is_generated_the_same_every_time_and_loads_nothing(tmp_path: Path) -> None:
    target = tmp_path / "plots.html"
    subprocess.run([sys.executable, "-m", "semops.reporting.vega", str(target)], check=True)
    page = vega.dvc_template()
    assert target.read_bytes() == page.encode()  # another process, the same bytes
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC adds no CDN <script>
    assert "<script src" not in page and vega.vega_bundle() in page
    config = (REPO / ".dvc" / "config").read_text()
    assert f"html_template = {paths.DVC_PLOTS_TEMPLATE.relative_to('.dvc')}" in config


def _check_page(rendered: Rendered) -> dict[str, str]:
    """Every plot drawn, nothing fetched, no error; each plot's text by its dvc.yaml id."""
    assert rendered.requests == []
    assert rendered.console_errors == []
    assert len(rendered.elements) == len(DEFINITIONS)  # each once (none a stage's default too)
    texts = {}
    for element in rendered.elements:
        (plot_id,) = [i for i, props in DEFINITIONS.items() if props["title"] in element.text]
        # Drawn here: text and axes cover about 3% of a plot, a curve 1-3% of its marks' box.
        assert non_blank(rendered.png, element.box) > 0.02, plot_id
        assert max((non_blank(rendered.png, b) for b in element.parts), default=0) > 0.008, plot_id
        assert DEFINITIONS[plot_id]["x_label"] in element.text, plot_id
        assert DEFINITIONS[plot_id]["y_label"] in element.text, plot_id
        texts[plot_id] = element.text
    assert texts.keys() == DEFINITIONS.keys()
    return texts


def test_dvc_plots_show_and_diff_draw_every_plot_offline(
    project_copy: Path, tmp_path: Path
) -> None:
    assert (project_copy / paths.DVC_PLOTS_TEMPLATE).is_file()  # make repro wrote it
    run(["dvc", "plots", "show", "-o", str(tmp_path / "show")], project_copy)
    shown = render(
        tmp_path / "show" / "index.html",
        tmp_path / "show.png",
        PLOT,
        count=len(DEFINITIONS),
        parts=MARKS,
    )
    _check_page(shown)

    # --temp: the workspace stays the baseline's, so `dvc plots diff <exp>` compares the two.
    run(["dvc", "exp", "run", "--temp", "-n", "plots-logreg", "-S", "model=logreg"], project_copy)
    run(["dvc", "plots", "diff", "plots-logreg", "-o", str(tmp_path / "diff")], project_copy)
    diffed = render(
        tmp_path / "diff" / "index.html",
        tmp_path / "diff.png",
        PLOT,
        count=len(DEFINITIONS),
        parts=MARKS,
    )
    texts = _check_page(diffed)
    # Both revisions in each plot: the legend of the curves, the columns of the matrix.
    assert all("plots-logreg" in t and "workspace" in t for t in texts.values()), texts
