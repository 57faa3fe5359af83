"""notebooks/00-environment-test.ipynb: committed without outputs, and runs headless without errors.

The notebook is executed in memory (never written back) from notebooks/, as Jupyter would run
it, with MLFLOW_TRACKING_URI pointed at a fresh sqlite store under tmp_path so that the real
mlruns/mlflow.db is not touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00-environment-test.ipynb"
CELL_TIMEOUT_S = 300


def read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def stdout_lines(nb: nbformat.NotebookNode) -> list[str]:
    """Everything the cells printed, as lines (a kernel may split one line over several outputs)."""
    text = "".join(
        output["text"]
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )
    return text.splitlines()


def test_committed_notebook_is_valid_and_has_no_outputs() -> None:
    nb = read_notebook()
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
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT_S,
            kernel_name="python3",
            allow_errors=True,  # record errors in the outputs; test_no_cell_errored reports them
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        )
        client.execute()
    # Executed in memory only: the file on disk keeps its empty outputs.
    assert nbformat.writes(read_notebook()) == before
    return nb, db


def test_no_cell_errored(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    nb, _ = executed
    errors = [
        f"cell {index}: {output['ename']}: {output['evalue']}\n{cell.source}"
        for index, cell in enumerate(nb.cells)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []


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
