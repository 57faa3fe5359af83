"""benchmarks/results.md's summary chart: the Targets table drawn as bars, committed beside it."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import vl_convert
from projectkit import REPO

sys.path.insert(0, str(REPO))  # benchmarks/ is a package of the repository, not installed
from benchmarks.report import SUMMARY_CHART, Result, Target, summary_chart


def test_the_chart_counts_each_benchmarks_targets_by_verdict() -> None:
    results = [
        Result("a", "A bench", targets=[Target("x", "1 s", "< 2 s", True)] * 2),
        Result(
            "b", "B bench", targets=[Target("y", "3 s", "< 2 s", False), Target("z", "-", "", None)]
        ),
    ]
    spec = summary_chart(results)
    verdicts = [(v["benchmark"], v["verdict"]) for v in spec["data"]["values"]]
    assert verdicts == [
        ("A bench", "met"),
        ("A bench", "met"),
        ("B bench", "NOT met"),
        ("B bench", "not measured"),
    ]
    svg = vl_convert.vegalite_to_svg(spec)
    texts = {t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
    assert {"A bench", "B bench", "met", "NOT met", "not measured"} <= texts


def test_results_md_shows_the_committed_chart_of_its_benchmarks() -> None:
    folder = REPO / "benchmarks"
    assert f"]({SUMMARY_CHART})" in (folder / "results.md").read_text()
    texts = {
        t.text for t in ET.parse(folder / SUMMARY_CHART).iter("{http://www.w3.org/2000/svg}text")
    }
    results = json.loads((folder / "results.json").read_text())["benchmarks"].values()
    assert {r["title"] for r in results if r["targets"]} <= texts
