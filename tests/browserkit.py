"""Headless Chromium for the tests that look at a page: a local HTML file opened with the network
cut, drawn, screenshot; what it tried to fetch and what it logged as errors; and a pixel check
that an element's area is not blank.

    rendered = render(Path("index.html"), tmp_path / "page.png", ".vega-embed svg", count=5)
    assert not rendered.requests and not rendered.console_errors
    for element in rendered.elements:
        assert non_blank(rendered.png, element.box) > 0.05

Debian's Chromium (`make browser`) through Playwright, with the flags the web ingest starts it
with (semops.research.ingest.web.browser: none of Chromium's own background traffic).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import BrowserContext, Page, Request, Route, ViewportSize, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from semops.research.ingest.web.browser import (
    CHROMIUM_FLAGS,
    _pids_mentioning,
    browser_environment,
)

CHROMIUM = "/usr/bin/chromium"
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
# The page is drawn once its elements are there and its DOM has not changed for this long.
QUIET_MS = 300
# Playwright drives Chromium over its own pipe and headless switch.
_FLAGS = [f for f in CHROMIUM_FLAGS if f not in ("--headless", "--remote-debugging-pipe")]
# Whatever escapes the routing below meets a proxy that is not there.
_NO_NETWORK = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
_WATCH_MUTATIONS = """
window.__lastMutation = performance.now();
new MutationObserver(() => { window.__lastMutation = performance.now(); })
  .observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""
_DRAWN = """([selector, count, quiet]) =>
  document.querySelectorAll(selector).length >= count
  && performance.now() - window.__lastMutation > quiet"""
_ELEMENTS = """([selector, parts]) => [...document.querySelectorAll(selector)].map(e => ({
  box: e.getBoundingClientRect().toJSON(),
  text: e.textContent,
  parts: parts ? [...e.querySelectorAll(parts)].map(p => p.getBoundingClientRect().toJSON()) : [],
}))"""


@dataclass(frozen=True)
class Box:
    """An element's area in the screenshot's pixels (one pixel a CSS pixel; page not scrolled)."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Element:
    box: Box
    text: str  # its textContent: an SVG plot's title, axis labels and ticks
    parts: list[Box]  # its descendants that match `parts`, e.g. a plot's marks


@dataclass(frozen=True)
class Rendered:
    png: Path  # the whole page
    elements: list[Element]  # those matching the selector, in document order
    requests: list[str]  # every URL the page asked for besides the file itself (each aborted)
    console_errors: list[str]  # console.error messages and uncaught exceptions

    @property
    def boxes(self) -> list[Box]:
        return [e.box for e in self.elements]


def _box(rect: dict[str, float]) -> Box:
    return Box(round(rect["x"]), round(rect["y"]), round(rect["width"]), round(rect["height"]))


def render(
    html: Path,
    png: Path,
    selector: str,
    *,
    count: int = 1,
    parts: str | None = None,
    timeout_s: float = 60,
    full_page: bool = True,
) -> Rendered:
    """Open `html` with no network, wait until `count` elements match `selector` and the page
    has settled, screenshot the whole page (or the viewport) to `png`; Chromium is gone when
    this returns."""
    url = html.resolve().as_uri()
    requests: list[str] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="browserkit-") as home:
        env: dict[str, str | float | bool] = {**browser_environment(Path(home))}
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                Path(home) / "profile",
                executable_path=CHROMIUM,
                args=[*_FLAGS, *_NO_NETWORK],
                env=env,
                offline=True,
                viewport=VIEWPORT,
                device_scale_factor=1,
                service_workers="block",
            )
            try:
                page = _watched_page(context, url, requests, errors)
                page.goto(url, wait_until="load", timeout=timeout_s * 1000)
                try:
                    page.wait_for_function(
                        _DRAWN, arg=[selector, count, QUIET_MS], timeout=timeout_s * 1000
                    )
                except PlaywrightError as e:
                    raise AssertionError(
                        f"{html}: fewer than {count} {selector!r} within {timeout_s:g} s "
                        f"(console errors: {errors}, requests: {requests})"
                    ) from e
                found = page.evaluate(_ELEMENTS, [selector, parts])
                page.screenshot(path=str(png), full_page=full_page)
            finally:
                context.close()
        left = _pids_mentioning(home)
        assert not left, f"Chromium processes left running: {left}"
    elements = [Element(_box(e["box"]), e["text"], [_box(b) for b in e["parts"]]) for e in found]
    return Rendered(png, elements, requests, errors)


def _watched_page(
    context: BrowserContext, url: str, requests: list[str], errors: list[str]
) -> Page:
    """A page whose requests other than `url` are recorded and aborted, whose console errors
    and uncaught exceptions are recorded, and which notes when its DOM last changed."""

    def refuse(route: Route, request: Request) -> None:
        if request.url == url:
            route.continue_()
        else:
            route.abort("internetdisconnected")

    context.route("**/*", refuse)
    context.on("request", lambda r: requests.append(r.url) if r.url != url else None)
    page = context.pages[0] if context.pages else context.new_page()
    page.on("websocket", lambda ws: requests.append(ws.url))
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.add_init_script(_WATCH_MUTATIONS)
    return page


def non_blank(png: Path, box: Box, tolerance: int = 48) -> float:
    """The fraction of the box's pixels that differ from its background (its most common
    colour) by more than `tolerance` (0-255) in some channel: 0.0 for an empty area. The default
    passes over faint strokes such as Vega's grid lines (#ddd on white: 34) and counts text,
    axes and data marks."""
    with Image.open(png) as image:
        area = np.asarray(
            image.convert("RGB").crop((box.x, box.y, box.x + box.width, box.y + box.height))
        )
    pixels = area.reshape(-1, 3).astype(np.int16)
    if not len(pixels):
        return 0.0
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return float((np.abs(pixels - background).max(axis=1) > tolerance).mean())


if __name__ == "__main__":
    # `make screenshot`: the README's picture of the report, its first screen drawn offline.
    import sys

    page_path, png_path = map(Path, sys.argv[1:3])
    shot = render(page_path, png_path, ".chart svg.marks", full_page=False)
    if shot.requests or shot.console_errors:
        raise SystemExit(f"{page_path}: requests {shot.requests}, errors {shot.console_errors}")
    print(f"screenshot: {png_path} ({page_path} as it opens, offline)")
