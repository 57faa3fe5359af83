"""The package's shape: layers that only import downwards, modules and functions of a readable
size, and docs/architecture.md naming exactly the folders there are."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from projectkit import REPO

SRC = REPO / "src"
PACKAGE = SRC / "semops"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Lowest first. A module may import its own layer and those below it, never one above; the two
# capabilities on one level (tabular and research) never import each other.
LAYERS: list[tuple[str, ...]] = [
    (
        "semops",
        "semops.errors",
        "semops.paths",
        "semops.io",
        "semops.log",
        "semops.progress",
        "semops.redaction",
        "semops.environment",
        "semops.netread",
        "semops.raycluster",
    ),
    ("semops.config",),
    ("semops.tabular", "semops.research.documents"),
    ("semops.research.ingest",),
    ("semops.research.index",),
    ("semops.research.query",),
    ("semops.research",),
    ("semops.reporting",),
    ("semops.tracking",),
    ("semops.lineage",),
    ("semops.stage", "semops.cli"),
]
SIBLINGS = ("semops.tabular", "semops.research")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer(name: str) -> int:
    """The layer of the longest prefix that names `name` (semops.research.index before
    semops.research)."""
    matches = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if (name == prefix if prefix == "semops" else within(name, prefix))
    ]
    assert matches, f"{name} is in no layer of tests/test_architecture.py"
    return max(matches)[1]


def semops_imports(path: Path) -> set[str]:
    """semops modules a file imports, lazy imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("semops")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("semops"):
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return found


def resolved(name: str) -> str:
    """`semops.tabular.models.mlp` stays; `semops.paths.SPLITS` becomes `semops.paths`."""
    while name.count(".") and not (
        (SRC / Path(*name.split("."))).with_suffix(".py").exists()
        or (SRC / Path(*name.split("."))).is_dir()
    ):
        name = name.rpartition(".")[0]
    return name


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    here = module_name(path)
    upward = sorted(
        target
        for target in map(resolved, semops_imports(path))
        if layer(target) > layer(here)
        or any(within(here, a) and within(target, b) for a in SIBLINGS for b in SIBLINGS if a != b)
    )
    assert upward == [], f"{here} imports {upward}"


def test_modules_and_functions_stay_readable() -> None:
    too_long = []
    for path in MODULES:
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {length}")
    assert too_long == []


def test_architecture_doc_lists_every_package_folder() -> None:
    doc = (REPO / "docs/architecture.md").read_text()
    listed = set(re.findall(r"`(semops(?:/\w+)*/)`", doc))
    folders = {str(init.parent.relative_to(SRC)) + "/" for init in PACKAGE.rglob("__init__.py")}
    assert listed == folders
