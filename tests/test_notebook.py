"""The notebooks: committed without outputs, and run headless without errors.

Each is executed in memory (never written back), as Jupyter would run it. 00-environment-test
runs from notebooks/ with MLFLOW_TRACKING_URI pointed at a fresh sqlite store under tmp_path;
01-results runs in the project `make repro` built (tests/conftest.py `built_project`), finding
its store as the pipeline does. Neither touches the real mlruns/mlflow.db.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from nbclient import NotebookClient
from PIL import Image

from semops.tabular.scoring import RawScorer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00-environment-test.ipynb"
RESULTS = ROOT / "notebooks" / "01-results.ipynb"
CELL_TIMEOUT_S = 300
# Appended to 01-results when the test runs it (never to the file): what it loaded and scored.
PROBE = """import json
print("PROBE " + json.dumps({
    "model_uri": model_uri,
    "rows": rows.to_dict(orient="records"),
    "scored": scored.to_dict(orient="list"),
}))"""


def read_notebook(path: Path = NOTEBOOK) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def execute(nb: nbformat.NotebookNode, cwd: Path) -> None:
    """Run `nb` in memory from `cwd` in a python3 kernel, which inherits this process's
    environment; errors are recorded in the outputs (cell_errors reports them)."""
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()


def cell_errors(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"cell {index}: {output['ename']}: {output['evalue']}\n{cell.source}"
        for index, cell in enumerate(nb.cells)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def stdout_lines(nb: nbformat.NotebookNode) -> list[str]:
    """Everything the cells printed, as lines (a kernel may split one line over several outputs)."""
    text = "".join(
        output["text"]
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )
    return text.splitlines()


@pytest.mark.parametrize("path", [NOTEBOOK, RESULTS], ids=lambda path: path.stem)
def test_committed_notebook_is_valid_and_has_no_outputs(path: Path) -> None:
    nb = read_notebook(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for index, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {index} has committed outputs: clear them"
        assert cell.execution_count is None, f"code cell {index} has an execution count"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    """The notebook, run once from notebooks/ against a temporary MLflow store."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        # The kernel inherits this process's environment.
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        mp.delenv("DVC_ROOT", raising=False)  # semops.paths would prefer it over the cwd
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences jupyter_core's migration warning
        nb = read_notebook()
        before = nbformat.writes(nb)
        execute(nb, NOTEBOOK.parent)
    # Executed in memory only: the file on disk keeps its empty outputs.
    assert nbformat.writes(read_notebook()) == before
    return nb, db


def test_no_cell_errored(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    assert cell_errors(executed[0]) == []


def test_expected_lines_are_printed(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    lines = stdout_lines(executed[0])
    for prefix in ("Repo root:", "Python:", "torch:", "CUDA:", "DVC:", "MLflow:", "Environment OK"):
        assert any(line.startswith(prefix) for line in lines), f"no {prefix!r} line in {lines}"
    assert f"Repo root: {ROOT}" in lines, "the notebook did not find the repository root"
    cuda = next(line for line in lines if line.startswith("CUDA:"))
    assert cuda == "CUDA: not available, running on CPU" or "(" in cuda, cuda
    for folder in ("data/raw", "data/interim", "data/processed"):
        assert any(line.startswith(f"{folder}: ok") for line in lines), f"{folder} not checked"


def test_kernel_is_this_interpreter(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    """kernel_name='python3' must run the venv's Python, not some other python on PATH."""
    lines = stdout_lines(executed[0])
    assert f"Interpreter: {sys.executable}" in lines, lines


def test_mlflow_store_is_the_temporary_one(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    nb, db = executed
    lines = stdout_lines(nb)
    assert any(line.endswith(f"tracking URI: sqlite:///{db}") for line in lines), lines
    assert db.is_file(), "the notebook did not open the MLflow store it was pointed at"


# --- 01-results: against a built project ---------------------------------------------------------


@pytest.fixture(scope="module")
def results(built_project: Path) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
    """01-results run once in the built project (as from its root), with the PROBE cell after
    it; returns the notebook with its outputs and what the probe printed."""
    with pytest.MonkeyPatch.context() as mp:
        # The store the notebook finds must be the project's own, as the pipeline finds it.
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("DVC_ROOT", raising=False)
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        nb = read_notebook(RESULTS)
        nb.cells.append(nbformat.v4.new_code_cell(PROBE))
        execute(nb, built_project)
    assert cell_errors(nb) == []
    (line,) = [line for line in stdout_lines(nb) if line.startswith("PROBE ")]
    return nb, json.loads(line.removeprefix("PROBE "))


def test_results_notebook_loads_the_newest_version_from_the_project_store(
    built_project: Path, results: tuple[nbformat.NotebookNode, dict[str, Any]]
) -> None:
    nb, probe = results
    lines = stdout_lines(nb)
    store = f"sqlite:///{built_project / 'mlruns' / 'mlflow.db'}"
    assert f"Repo root: {built_project}" in lines
    assert f"Tracking URI: {store}" in lines, lines
    client = MlflowClient(tracking_uri=store)
    (model,) = client.search_registered_models()
    newest = max(int(v.version) for v in client.search_model_versions(f"name = '{model.name}'"))
    champion = model.aliases["champion"]
    assert f"Model: {model.name} version {newest} (champion: version {champion})" in lines, lines
    assert probe["model_uri"] == f"models:/{model.name}/{newest}"
    assert f"Loaded {probe['model_uri']}" in lines


def test_results_notebook_scores_the_schema_rows_as_raw_scorer_does(
    built_project: Path, results: tuple[nbformat.NotebookNode, dict[str, Any]]
) -> None:
    nb, probe = results
    schema = json.loads((built_project / "data" / "interim" / "schema.json").read_text())
    assert probe["rows"] == schema["example"]
    rows = pd.DataFrame(schema["example"])
    expected = RawScorer.load(built_project / "data" / "models" / "model").score(rows)
    scored = pd.DataFrame(probe["scored"])
    assert list(scored.columns) == list(expected.columns)
    assert scored["prediction"].tolist() == expected["prediction"].tolist()
    probabilities = [c for c in expected.columns if c.startswith("proba_")]
    # The same code on the same CPU; the tolerance only allows for JSON's round trip.
    np.testing.assert_allclose(scored[probabilities], expected[probabilities], rtol=0, atol=1e-12)
    shown = [
        output["data"]["text/html"]
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "execute_result" and "text/html" in output["data"]
    ]
    assert len(shown) == 1 and all(f"<th>{c}</th>" in shown[0] for c in expected.columns)


def test_results_notebook_draws_the_plots(
    results: tuple[nbformat.NotebookNode, dict[str, Any]],
) -> None:
    """Three figures (ROC, PR and calibration; confusion; training curves), each with data
    drawn: axes, text and the diagonals are black or grey, the data in colour (an empty figure
    has no coloured pixel; these had 0.9%, 15% and 1.6%)."""
    nb, _ = results
    images = [
        Image.open(io.BytesIO(base64.b64decode(output["data"]["image/png"]))).convert("RGB")
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 3
    for image in images:
        pixels = np.asarray(image).reshape(-1, 3).astype(int)
        coloured = (pixels.max(axis=1) - pixels.min(axis=1)) > 60
        assert coloured.mean() > 0.003, image.size
