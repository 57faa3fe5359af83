"""The report (`make report`, semops.reporting): one HTML page from typed data (every value
escaped, the same data giving the same bytes), the pipeline graph's layout, what is read from
the stages' files; the page in headless Chromium with the network cut (each chart drawn, by its
pixels; the experiments table sorted by a click; no request leaving the page); end to end on the
built project, with the copy the track stage logged to MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from browserkit import _FLAGS, _NO_NETWORK, CHROMIUM, VIEWPORT, Box, non_blank, render
from conftest import run
from PIL import Image
from playwright.sync_api import sync_playwright
from projectkit import REPO

from semops.errors import SemopsError
from semops.reporting import collect, graph, page
from semops.reporting.content import (
    Cell,
    DataSummary,
    Experiments,
    Feature,
    Metric,
    Pipeline,
    Plots,
    Point,
    Report,
    Research,
    RetrievalScores,
    Sample,
    SamplePassage,
    Stage,
)
from semops.reporting.report import STAGE_EXPERIMENTS
from semops.reporting.samples import PASSAGES_PER_QUERY, QUERIES_PER_SET
from semops.reporting.vega import vega_script
from semops.research.ingest.web.browser import browser_environment

# Markup in every value the page shows: escaped, it stays text; else it runs, or fetches.
HOSTILE = '</script><script>window.pwned=1</script><img src="x.png" onerror="window.pwned=2">'
CHARTS = ("roc", "pr", "calibration", "confusion", "history-loss", "history-other")
# dvc.yaml's stages and the edges `dvc dag` draws (upstream, downstream).
DAG = Pipeline(
    tuple(
        Stage(s)
        for s in (
            "clean",
            "download",
            "evaluate",
            "featurize",
            "research-embed",
            "research-eval",
            "track",
            "train",
        )
    ),
    (
        ("clean", "featurize"),
        ("clean", "track"),
        ("download", "clean"),
        ("download", "track"),
        ("evaluate", "track"),
        ("featurize", "evaluate"),
        ("featurize", "train"),
        ("research-embed", "research-eval"),
        ("research-eval", "track"),
        ("train", "evaluate"),
        ("train", "track"),
    ),
)


def small_report() -> Report:
    curve = (Point(0.0, 0.0), Point(0.2, 0.7), Point(0.5, 0.9), Point(1.0, 1.0))
    epochs = tuple(
        {"epoch": float(e), "train_loss": 1 / e, "val_loss": 1.1 / e, "val_accuracy": 0.7 + e / 50}
        for e in range(1, 6)
    )
    return Report(
        title=f"unit {HOSTILE}",
        metrics=(Metric("roc_auc", 0.85, 0.83), Metric("log_loss", 0.44, 0.45, True)),
        test_rows=20,
        plots=Plots(
            roc=curve,
            pr=(Point(0.0, 1.0), Point(0.5, 0.8), Point(1.0, 0.3)),
            calibration=curve,
            confusion=(Cell("bad", "bad", 5), Cell("bad", HOSTILE, 2), Cell(HOSTILE, "bad", 1)),
            history=epochs,
        ),
        training=(("best_epoch", 4), ("best_val_loss", 0.27)),
        experiments=Experiments(
            columns=("Experiment", "rev", "test.roc_auc", "model.name"),
            # Best first, as `dvc exp show --sort-by` gives them; an experiment without metrics.
            rows=(
                ("exp-c", "c3", "0.9", "gbdt"),
                ("", "workspace", "0.85", "mlp"),
                ("exp-b", "b2", "0.84", "logreg"),
                (HOSTILE, "d4", "", "linear"),
            ),
            sort_column="test.roc_auc",
        ),
        data=DataSummary(
            "credit",
            "Status",
            "bad",
            10,
            9,
            dropped=(("duplicates", 1),),
            classes=(("bad", 3), (HOSTILE, 6)),
            features=(Feature("Age", "numeric", "int64", 18.0, 100.0),),
        ),
        research=Research(
            documents=3,
            chunks=12,
            method="hybrid",
            sets=(("pyfaq", (("passages", 5),)),),
            retrieval=(RetrievalScores("pyfaq", 2, "hybrid", {"recall_at_1": 0.5}),),
            samples=(Sample("pyfaq", HOSTILE, (SamplePassage(HOSTILE, HOSTILE, 0.9, True),)),),
            samples_note=HOSTILE,
        ),
        pipeline=DAG,
        notes=(HOSTILE,),
    )


def test_the_page_is_the_same_bytes_every_time_and_escapes_every_value() -> None:
    report = small_report()
    html = page.render(report, "")
    assert html == page.render(small_report(), "")
    assert HOSTILE not in html and "<img" not in html
    assert html.count("<script") == 2  # the charts' data and the page's own script
    assert "&lt;/script&gt;&lt;script&gt;window.pwned=1" in html
    specs = json.loads(html.split('id="chart-specs">')[1].split("</script>")[0])
    assert sorted(specs) == sorted(f"chart-{c}" for c in CHARTS)
    labels = {v["predicted"] for v in specs["chart-confusion"]["data"]["values"]}
    assert labels == {"bad", HOSTILE}  # carried as data, intact


def test_the_pipeline_graph_puts_each_stage_below_the_stages_it_reads_from() -> None:
    rows = graph.layers(DAG)
    assert rows[0] == ["download", "research-embed"] and rows[-1] == ["track"]
    svg = ET.fromstring(graph.svg(DAG))
    ns = {"s": "http://www.w3.org/2000/svg"}
    top = {
        g.findtext("s:text", "", ns): float(g.find("s:rect", ns).attrib["y"])  # type: ignore[union-attr]
        for g in svg.iterfind("s:g[@class='stage']", ns)
    }
    assert len(top) == 8
    assert all(top[a] < top[b] for a, b in DAG.edges)
    assert len(svg.findall("s:g[@class='edges']/s:path", ns)) == len(DAG.edges)
    with pytest.raises(ValueError, match="cycle"):
        graph.layers(Pipeline((Stage("a"), Stage("b")), (("a", "b"), ("b", "a"))))


def test_collect_reads_what_the_stages_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/plots").mkdir(parents=True)
    (tmp_path / "reports/plots/confusion.csv").write_text(
        "actual,predicted\nbad,bad\ngood,bad\ngood,good\n"
    )
    (tmp_path / "reports/research.json").write_text(
        json.dumps(
            {
                "chunks": 12,
                "documents": 3,
                "method": "hybrid",
                "rdocs": {
                    "files": 2,
                    "chunks": 9,
                    "queries": 4,
                    "dense": {"recall_at_1": 0.5},
                    "user": {"queries": 1, "dense": {"recall_at_1": 1.0}},
                },
            }
        )
    )
    notes: list[str] = []
    plots = collect.plots(notes)
    assert plots.confusion == (
        Cell("bad", "bad", 1),
        Cell("bad", "good", 0),
        Cell("good", "bad", 1),
        Cell("good", "good", 1),
    )
    assert any("reports/plots/roc.csv is not there yet" in n for n in notes)
    research = collect.research(tmp_path / "reports/research.json")
    assert research.sets == (("rdocs", (("chunks", 9), ("files", 2))),)
    assert [(r.evaluation_set, r.queries, r.method) for r in research.retrieval] == [
        ("rdocs", 4, "dense"),
        ("rdocs (user queries)", 1, "dense"),
    ]
    (tmp_path / "reports/metrics.json").write_text('{"tests": {"roc_auc": 0.8}}')
    with pytest.raises(SemopsError, match=r"reports/metrics.json: unexpected content.*'test'"):
        collect.optional(tmp_path / "reports/metrics.json", collect.metrics, notes, "metrics")


def data_pixels(png: Path, box: Box) -> float:
    """The fraction of the box's pixels in the blues the charts draw their data in (Vega's
    default #4c78a8, the confusion matrix's scheme): axes, grid and text are grey or black."""
    with Image.open(png) as image:
        area = np.asarray(
            image.convert("RGB").crop((box.x, box.y, box.x + box.width, box.y + box.height))
        ).astype(np.int16)
    return float((area[..., 2] - area[..., 0] > 40).mean())


def assert_charts_drawn_offline(html: Path, png: Path) -> None:
    """Every chart drawn in Chromium with the network cut (its area not blank, its data in
    colour), no request leaving the page, no error."""
    rendered = render(html, png, ".chart svg.marks", count=len(CHARTS))
    assert rendered.requests == [] and rendered.console_errors == []
    assert len(rendered.elements) == len(CHARTS)
    for element in rendered.elements:
        assert non_blank(png, element.box) > 0.01, element
        assert data_pixels(png, element.box) > 0.003, element


def first_column_after_clicks(html: Path, headers: list[str]) -> list[list[str]]:
    """The experiments table's first column after each click on a header (by its text), in
    Chromium with the network cut; and that nothing ran the values' markup."""
    orders = []
    with tempfile.TemporaryDirectory(prefix="report-") as home, sync_playwright() as p:
        env: dict[str, str | float | bool] = {**browser_environment(Path(home))}
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*_FLAGS, *_NO_NETWORK], env=env)
        try:
            context = browser.new_context(offline=True, viewport=VIEWPORT)
            tab = context.new_page()
            tab.goto(html.resolve().as_uri(), wait_until="load")
            table = tab.locator("table.experiments")
            for header in headers:
                table.locator("th", has_text=re.compile(f"^{re.escape(header)}$")).click()
                orders.append(table.locator("tbody tr td:first-child").all_inner_texts())
            assert tab.evaluate("window.pwned") is None
        finally:
            browser.close()
    return orders


def test_the_page_draws_its_charts_offline_and_sorts_experiments_on_click(
    tmp_path: Path,
) -> None:
    html = tmp_path / "report.html"
    html.write_text(page.render(small_report(), vega_script()))
    assert_charts_drawn_offline(html, tmp_path / "report.png")
    ascending, descending, by_model = first_column_after_clicks(
        html, ["test.roc_auc", "test.roc_auc", "model.name"]
    )
    # The rows came best first (descending): a click sorts ascending, the next reverses; the
    # experiment without the metric stays last either way.
    assert ascending == ["exp-b", "", "exp-c", HOSTILE]
    assert descending == ["exp-c", "", "exp-b", HOSTILE]
    assert by_model == ["exp-c", HOSTILE, "exp-b", ""]


def test_make_report_on_the_built_project_and_the_copy_track_logged(
    built_project: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    made = run(["make", "report"], built_project).stdout
    assert "report: reports/index.html" in made
    html = built_project / "reports/index.html"
    assert_charts_drawn_offline(html, tmp_path / "index.png")
    text = html.read_text()
    assert text.count('<g class="stage">') == 8  # dvc.yaml's stages
    assert "<td>workspace</td>" in text and ">test.roc_auc</th>" in text
    # Sample retrievals from the research index: each set's first queries, with citations.
    assert text.count('class="cite"') == 2 * QUERIES_PER_SET * PASSAGES_PER_QUERY

    client = MlflowClient(tracking_uri=f"sqlite:///{built_project / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("semops")
    assert experiment is not None
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert "report.html" in {a.path for a in client.list_artifacts(tracked.info.run_id)}
    logged = Path(client.download_artifacts(tracked.info.run_id, "report.html", str(tmp_path)))
    # The track stage's copy, made again by another process from the same files: the same bytes.
    again = tmp_path / "again.html"
    subprocess.run(
        [sys.executable, "-m", "semops.reporting.report", "--out", str(again)],
        cwd=built_project,
        check=True,
    )
    assert logged.read_bytes() == again.read_bytes()
    assert STAGE_EXPERIMENTS.split(":")[0] in logged.read_text()


def test_the_readme_shows_a_screenshot_of_the_report() -> None:
    """`make screenshot` writes it; here: it is there, a whole first screen of the page."""
    picture = REPO / "docs" / "images" / "report.png"
    assert f"]({picture.relative_to(REPO)})" in (REPO / "README.md").read_text()
    with Image.open(picture) as image:
        assert image.format == "PNG"
        assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 100  # drawn, not a blank page
