"""Benchmark results: the record each benchmark fills in, and its Markdown rendering."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Target:
    metric: str
    display: str  # the measured value, formatted
    target: str
    met: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "not measured"}[self.met]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    title: str | None = None


@dataclass
class Result:
    name: str
    title: str
    targets: list[Target] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def table(self, columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
        self.tables.append(Table(columns, [[str(c) for c in row] for row in rows], title))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for target, obj in zip(data["targets"], self.targets, strict=True):
            target["verdict"] = obj.verdict
        return data


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_rate(per_s: float | None) -> str:
    if per_s is None:
        return "-"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k/s"
    return f"{per_s:.0f}/s"


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


SUMMARY_CHART = "summary.svg"
VERDICT_COLOURS = {"met": "#3a7d44", "NOT met": "#c0392b", "not measured": "#a0a0a0"}


def summary_chart(results: list[Result]) -> dict[str, Any]:
    """The Targets table as a Vega-Lite bar chart: each benchmark's targets by verdict."""
    values = [{"benchmark": r.title, "verdict": t.verdict} for r in results for t in r.targets]
    return {
        "title": "Benchmark targets: met, not met, not measured",
        "data": {"values": values},
        "mark": "bar",
        "width": 360,
        "height": {"step": 20},
        "encoding": {
            "y": {
                "field": "benchmark",
                "type": "nominal",
                "sort": list(dict.fromkeys(v["benchmark"] for v in values)),
                "title": None,
                "axis": {"labelLimit": 420},
            },
            "x": {
                "aggregate": "count",
                "type": "quantitative",
                "title": "targets",
                "axis": {"tickMinStep": 1},
            },
            "color": {
                "field": "verdict",
                "type": "nominal",
                "title": None,
                "scale": {
                    "domain": list(VERDICT_COLOURS),
                    "range": list(VERDICT_COLOURS.values()),
                },
            },
        },
    }


def render(machine: dict[str, Any], results: list[Result], total_seconds: float, args: str) -> str:
    versions = machine["versions"]
    lines = [
        "# semops benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`); raw figures in `results.json`. "
        "Measurements, not tests: a missed target is reported, not failed.",
        "",
        *_md_table(
            ["date (UTC)", "nproc", "CPU", "memory", "python", "torch", "dvc", "commit"],
            [
                [
                    str(machine["date"]),
                    str(machine["nproc"]),
                    str(machine["cpu_model"]),
                    f"{machine['memory_gib']} GiB",
                    str(machine["python"]),
                    versions["torch"],
                    versions["dvc"],
                    str(machine["git_commit"]),
                ]
            ],
        ),
        "",
        f"Also: pandas {versions['pandas']}, pyarrow {versions['pyarrow']}, numpy "
        f"{versions['numpy']}, scikit-learn {versions['scikit-learn']}, "
        f"mlflow {versions['mlflow']}; "
        f"{machine['os']}; load average at start {machine['load_avg_at_start']}, at the end "
        f"{machine.get('load_avg_now')} (near or above nproc: processes competed for the CPUs). "
        f"Total run {total_seconds:.0f} s{f' ({args})' if args else ''}.",
        "",
        "## Targets",
        "",
        f"![Each benchmark's targets: met, not met, not measured]({SUMMARY_CHART})",
        "",
    ]
    rows = []
    for result in results:
        if result.error and not result.targets:
            rows.append([result.title, "-", "error", "-", "not measured"])
        for target in result.targets:
            rows.append(
                [result.title, target.metric, target.display, target.target, target.verdict]
            )
    lines += _md_table(["benchmark", "metric", "measured", "target", "verdict"], rows)
    for result in results:
        lines += ["", f"## {result.title}", ""]
        if result.error:
            lines += [f"**Error:** `{result.error.strip().splitlines()[0][:300]}`", ""]
        for table in result.tables:
            if table.title:
                lines += [f"{table.title}:", ""]
            lines += [*_md_table(table.columns, table.rows), ""]
        for note in result.notes:
            lines.append(f"- {note}")
        lines += ["", f"_Benchmark took {result.seconds:.0f} s._"]
    return "\n".join(lines).rstrip() + "\n"
