"""The project's wiring: dvc.yaml against the code (paths and the modules each stage runs), the
committed params.yaml against conf/, and the Makefile's help."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from projectkit import BIN, REPO

from semops import paths
from semops.config.compose import compose_params

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC["stages"]
SRC = REPO / "src"
# Modules that only shape messages or locations, never a stage's output bytes, and the empty
# __init__.py files that only make folders packages.
NOT_OUTPUT_SHAPING = {
    "semops/environment.py",
    "semops/errors.py",
    "semops/log.py",
    "semops/stage.py",
    "semops/paths.py",
} | {
    str(p.relative_to(SRC))
    for p in SRC.rglob("__init__.py")
    if all(isinstance(node, ast.Expr) for node in ast.parse(p.read_text()).body)
}


def module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """semops modules a file imports, at any depth in the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("semops")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("semops"):
            found.add(node.module)
            found |= {
                f"{node.module}.{a.name}"
                for a in node.names
                if module_file(f"{node.module}.{a.name}")
            }
    return found


def closure(path: Path, extra: set[str]) -> set[str]:
    """Files of all semops modules reachable from `path` (plus `extra`), parents included."""
    todo = imported_modules(path) | extra
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        file = module_file(name)
        if file is None or name in seen:
            continue
        seen.add(name)
        if file.relative_to(SRC) == Path("semops/stage.py"):
            # What runs a stage, not what it computes: what run_stage imports (logging, .env,
            # the lineage events, which observe the stage after the fact) is no dependency, so
            # a change there reruns no stage (tests/test_lineage checks dvc.lock stays the same).
            continue
        parent = name.rpartition(".")[0]
        todo |= imported_modules(file) | ({parent} if parent else set())
    return {str(module_file(n).relative_to(SRC)) for n in seen}  # type: ignore[union-attr]


# Modules run without a static import: semops.tracking.plots and semops.reporting.report,
# subprocesses of the track stage; semops.tracking.pyfunc_model, the code of the MLflow Model
# the track stage logs.
DYNAMIC = {
    "track": {
        "semops.tracking.plots",
        "semops.reporting.report",
        "semops.tracking.pyfunc_model",
    },
}


# config/schema.py validates every section, the research one with config/research.py's classes;
# only the research stages read that section, so that module shapes no other stage's output.
RESEARCH_CONFIG = {"semops/config/research.py"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_are_exactly_the_modules_it_runs(stage: str) -> None:
    script = REPO / "stages" / f"{stage.replace('-', '_')}.py"
    ignored = NOT_OUTPUT_SHAPING | (set() if stage.startswith("research") else RESEARCH_CONFIG)
    needed = {f"src/{f}" for f in closure(script, DYNAMIC.get(stage, set())) - ignored}
    declared = {d for d in STAGES[stage]["deps"] if d.startswith("src/")}
    assert declared == needed
    assert str(script.relative_to(REPO)) in STAGES[stage]["deps"]


def outs(stage: str, kind: str = "outs") -> set[str]:
    return {next(iter(o)) if isinstance(o, dict) else o for o in STAGES[stage].get(kind, [])}


def test_dvc_yaml_paths_are_those_of_paths_py() -> None:
    name = "${data.name}"
    split_files = lambda where: {str(where(s)) for s in paths.SPLITS}  # noqa: E731
    assert outs("download") == {str(paths.raw_dir(name))}
    assert outs("clean") == split_files(paths.interim_split) | {str(paths.INPUT_SCHEMA)}
    assert outs("clean", "metrics") == {str(paths.CLEAN_METRICS)}
    assert outs("featurize") == split_files(paths.processed_split) | {str(paths.FEATURIZER)}
    # Plot data are plain outputs: dvc.yaml's top-level plots draw them (tests/test_plots_offline).
    assert outs("train") == {str(paths.MODEL_DIR), str(paths.TRAIN_HISTORY)}
    assert outs("train", "metrics") == {str(paths.TRAIN_METRICS)}
    assert outs("evaluate", "metrics") == {str(paths.EVAL_METRICS)}
    assert outs("evaluate") == {
        str(p)
        for p in (paths.ROC_PLOT, paths.PR_PLOT, paths.CALIBRATION_PLOT, paths.CONFUSION_PLOT)
    }
    # The vectors' last bits depend on the CPU: the embedding store is no output (no hash of it
    # in dvc.lock), so dvc.lock is the same on every machine.
    assert outs("research-embed") == {
        str(paths.RESEARCH_CHUNKS),
        str(paths.RESEARCH_INDEX_MANIFEST),
    }
    assert paths.research_embeddings_dir().relative_to(paths.project_root()) == (
        paths.RESEARCH / "embeddings"
    )
    assert outs("research-eval", "metrics") == {str(paths.RESEARCH_METRICS)}
    assert "research.retrieval" not in STAGES["research-embed"]["params"]
    assert {str(paths.RESEARCH_SOURCES), "${research.corpus}"} <= set(
        STAGES["research-embed"]["deps"]
    )
    assert outs("track") == {str(paths.TRACKED)}


def test_the_readmes_pipeline_graph_is_dvc_dags() -> None:
    dag = subprocess.run(
        [str(BIN / "dvc"), "dag", "--mermaid"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert f"```mermaid\n{dag}\n```" in (REPO / "README.md").read_text()


def test_committed_params_yaml_is_conf_composed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    composed = tmp_path / "params.yaml"
    compose_params(output=composed)
    assert composed.read_text() == (REPO / "params.yaml").read_text()


def test_make_help_lists_every_target_with_one_line() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):(?!=)", makefile, flags=re.MULTILINE))
    required = {"help", "setup", "run", "repro", "exp", "ui", "test", "lint", "bench", "clean"}
    assert required <= targets
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    names = [line.split()[1] for line in listed.splitlines()]
    assert sorted(names) == sorted(targets)
    assert all(len(line.split(None, 2)) == 3 for line in listed.splitlines())


def test_data_folders_are_kept_and_their_contents_ignored() -> None:
    for folder in ("data/raw", "data/raw/research", "data/interim", "data/processed", "mlruns"):
        assert (REPO / folder / ".gitkeep").exists()
    probe = [
        "data/raw/x.parquet",
        "data/raw/research/files/x.pdf",
        "data/raw/research/sources.json",
        "data/interim/x.parquet",
        "data/processed/x.parquet",
        "mlruns/mlflow.db",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", *probe], cwd=REPO, capture_output=True, text=True
    )
    assert ignored.stdout.split() == probe
    assert sys.version_info >= (3, 11)
