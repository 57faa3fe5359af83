"""Where the passes of clean and featurize run: this process (`local`, the default) or a Ray
cluster (`ray`, at RAY_ADDRESS), chosen by data.engine."""

from __future__ import annotations

from semops.tabular.stream import Engine, LocalEngine


def engine_for(name: str) -> Engine:
    if name == "ray":
        from semops.tabular.rayengine import RayEngine

        return RayEngine()
    return LocalEngine()
