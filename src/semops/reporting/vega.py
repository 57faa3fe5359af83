"""Vega, Vega-Lite and vega-embed as one local script, and the page `dvc plots show/diff` fill
with it: DVC's own page loads the three from a CDN, so with no network it draws nothing.

The JavaScript comes from the installed vl-convert-python package (its bundle of the three and
their dependencies), so a page needs nothing beyond itself; the same package version gives the
same bytes on every run and machine.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import sys
from pathlib import Path

from semops import paths
from semops.errors import SemopsError
from semops.io import write_bytes

log = logging.getLogger("semops.reporting.vega")  # its name also when run as `python -m`

# DVC's plot templates are Vega-Lite v5 specs (the confusion matrix uses v5's `selection`): the
# newest v5 that vl-convert bundles draws them without a version-mismatch warning.
VEGA_LITE_VERSION = "5.21"
# What the bundle exposes: the names DVC's plot divs call (`vegaEmbed`), and the two libraries.
_EXPORTS = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
# DVC fills a template by plain replacement of these; the bundle must not contain them, nor
# anything that ends an inline <script> early.
_DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")
_NOT_INLINE = ("</script", "<!--")

# No `{scripts}` placeholder: DVC then adds none of its CDN <script> tags.
_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<!-- {versions}: drawn with no network -->
{script}
<style>
body { font-family: system-ui, sans-serif; margin: 16px; display: flex; flex-wrap: wrap;
  gap: 24px; align-items: flex-start; }
body > div { border: 1px solid #e2e2e2; border-radius: 6px; padding: 8px; }
</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def versions() -> str:
    """The libraries the bundle holds, e.g. 'Vega 6.2.0, Vega-Lite 5.21, vega-embed 7.0.2'."""
    import vl_convert

    return (
        f"Vega {vl_convert.get_vega_version()}, Vega-Lite {VEGA_LITE_VERSION}, "
        f"vega-embed {vl_convert.get_vega_embed_version()} (vl-convert-python {_package()})"
    )


def _package() -> str:
    return importlib.metadata.version("vl-convert-python")


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed with all their dependencies as one classic script that sets
    `window.vegaEmbed`, `window.vega` and `window.vegaLite` (about 0.9 MB; built once per
    process, about a second)."""
    try:
        import vl_convert
    except ImportError as e:
        raise SemopsError(
            "vl-convert-python is not installed: it ships the Vega JavaScript the plots use"
            " (make setup installs it)"
        ) from e
    if VEGA_LITE_VERSION not in vl_convert.get_vegalite_versions():
        raise SemopsError(
            f"vl-convert-python {_package()} bundles no Vega-Lite {VEGA_LITE_VERSION}"
            f" (it has {', '.join(vl_convert.get_vegalite_versions())}): install the version"
            " constraints.txt pins (make setup)"
        )
    bundle = vl_convert.javascript_bundle(_EXPORTS, f"v{VEGA_LITE_VERSION}")
    found = [s for s in _DVC_PLACEHOLDERS + _NOT_INLINE if s in bundle]
    if found:
        raise SemopsError(
            f"the Vega bundle of vl-convert-python {_package()} contains {found}:"
            " it cannot be inlined in an HTML page as is"
        )
    return bundle


def vega_script() -> str:
    """The bundle as an inline <script> element, for the <head> of a page that calls
    `vegaEmbed` (a classic script: it runs before the body's scripts that use it)."""
    # In a function of its own, strict as the ES module it was built from: its top-level names
    # (`t`, `n`, ...) stay out of the page's global scope, where DVC's `var spec` lives.
    return (
        '<script>\n(function () {\n"use strict";\n'
        + vega_bundle()
        + "\n}).call(undefined);\n</script>"
    )


def dvc_template() -> str:
    """The HTML template for `dvc plots show/diff` (`--html-template`, or `plots.html_template`
    in .dvc/config): the bundle inline, DVC's `{plot_divs}` and `{refresh_tag}` left to fill."""
    # The script last: nothing is replaced inside it.
    return _TEMPLATE.replace("{versions}", versions()).replace("{script}", vega_script())


def write_dvc_template(path: Path = paths.DVC_PLOTS_TEMPLATE) -> Path:
    """Write the template (atomically: `dvc plots` may read it meanwhile) and return its path."""
    write_bytes(path, dvc_template().encode())
    log.info("plots template: %s (%s)", path, versions())
    return path


if __name__ == "__main__":
    # `make setup` runs this: the template is generated from the installed package, not committed.
    from semops.log import configure

    configure()
    try:
        write_dvc_template(*(Path(a) for a in sys.argv[1:2]))
    except SemopsError as e:
        sys.exit(f"plots template: {e}")
