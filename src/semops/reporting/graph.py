"""The pipeline graph as inline SVG: stages in layers top-down (each one below every stage it
reads from, as `dvc dag` draws them), edges as curves with arrowheads. Drawn here rather than
by a library so that the page needs no script for it and the same graph gives the same bytes."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from semops.reporting.content import Pipeline

CHAR_W, BOX_H, PAD_X = 7.6, 30, 14
GAP_X, GAP_Y, MARGIN = 28, 46, 12


@dataclass(frozen=True)
class Box:
    name: str
    x: float
    y: float
    width: float

    @property
    def centre(self) -> float:
        return self.x + self.width / 2


def layers(pipeline: Pipeline) -> list[list[str]]:
    """Stages by depth (the longest path from a stage that reads from none); within a depth,
    by the mean position of their upstream stages, then by name (fewer crossings)."""
    upstream: dict[str, list[str]] = {s.name: [] for s in pipeline.stages}
    for a, b in pipeline.edges:
        upstream[b].append(a)
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: tuple[str, ...] = ()) -> int:
        if name not in depth:
            if name in seen:
                raise ValueError(f"the pipeline has a cycle through {name!r}")
            depth[name] = 1 + max((depth_of(u, (*seen, name)) for u in upstream[name]), default=-1)
        return depth[name]

    rows: list[list[str]] = [[] for _ in range(max(map(depth_of, upstream), default=-1) + 1)]
    position: dict[str, float] = {}
    for name in sorted(upstream):
        rows[depth[name]].append(name)
    for row in rows:

        def key(name: str) -> tuple[float, str]:
            ups = [position[u] for u in upstream[name]]
            return (sum(ups) / len(ups) if ups else 0.0, name)

        row.sort(key=key)
        position.update({name: float(i) for i, name in enumerate(row)})
    return rows


def place(rows: list[list[str]]) -> tuple[dict[str, Box], float, float]:
    """Each stage's box, each row centred; and the drawing's width and height."""
    widths = {n: len(n) * CHAR_W + 2 * PAD_X for row in rows for n in row}
    row_widths = [sum(widths[n] for n in row) + GAP_X * (len(row) - 1) for row in rows]
    width = max(row_widths, default=0.0) + 2 * MARGIN
    boxes = {}
    for depth, (row, row_width) in enumerate(zip(rows, row_widths, strict=True)):
        x = (width - row_width) / 2
        for name in row:
            boxes[name] = Box(name, x, MARGIN + depth * (BOX_H + GAP_Y), widths[name])
            x += widths[name] + GAP_X
    height = 2 * MARGIN + len(rows) * BOX_H + max(len(rows) - 1, 0) * GAP_Y
    return boxes, width, height


Edge = tuple[str, str]


def _ports(edges: list[Edge], boxes: dict[str, Box], end: int) -> dict[Edge, float]:
    """Where each edge leaves its upstream box (`end` 0: along its bottom) or enters its
    downstream one (1: along its top): spread in the order of the other ends, so that edges
    share no point."""
    by_box: dict[str, list[Edge]] = {}
    for edge in edges:
        by_box.setdefault(edge[end], []).append(edge)
    ports = {}
    for name, own in by_box.items():
        box = boxes[name]
        own.sort(key=lambda e: (boxes[e[1 - end]].centre, e[1 - end]))
        for i, edge in enumerate(own):
            ports[edge] = box.x + box.width * (i + 1) / (len(own) + 1)
    return ports


def _edge(a: Box, b: Box, x1: float, x2: float) -> str:
    y1, y2 = a.y + BOX_H, b.y - 2
    bend = (y2 - y1) / 2
    return (
        f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} '
        f'{x2:.1f},{y2:.1f}" marker-end="url(#arrow)"/>'
    )


def svg(pipeline: Pipeline) -> str:
    """The graph as one <svg> element; each stage's box has its outputs as a tooltip."""
    boxes, width, height = place(layers(pipeline))
    edges = sorted(pipeline.edges)
    leave, enter = _ports(edges, boxes, 0), _ports(edges, boxes, 1)
    outs = {s.name: s.outs for s in pipeline.stages}
    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        'aria-label="pipeline graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
        '<g class="edges">',
        *(_edge(boxes[a], boxes[b], leave[(a, b)], enter[(a, b)]) for a, b in edges),
        "</g>",
    ]
    for name in sorted(boxes):
        box = boxes[name]
        tip = f"{name}: " + (", ".join(outs[name]) if outs[name] else "no outputs")
        parts.append(
            f'<g class="stage"><title>{escape(tip)}</title>'
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{BOX_H}" '
            f'rx="6"/><text x="{box.centre:.1f}" y="{box.y + BOX_H / 2 + 4:.1f}">'
            f"{escape(name)}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
