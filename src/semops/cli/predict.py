"""`semops predict`: score a file of raw rows with a trained model, named as a folder, an MLflow
model URI (`models:/name@alias`, `runs:/...`) or a DVC experiment.

Whichever names it, the model is a semops model folder (weights, featurizer, input schema) and is
scored by one code path (`semops.tabular.scoring`); an MLflow Model carries that folder among its
artifacts."""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from semops import paths
from semops.errors import SemopsError
from semops.tabular.models import FEATURIZER

log = logging.getLogger(__name__)
MLFLOW_SCHEMES = ("models:/", "runs:/", "file:", "mlflow-artifacts:")


def model_folder_within(root: Path) -> Path | None:
    """The semops model folder at or under `root` (an MLflow Model holds it among its
    artifacts)."""
    if (root / FEATURIZER).exists():
        return root
    found = sorted(p.parent for p in root.rglob(FEATURIZER))
    return found[0] if found else None


@contextmanager
def resolved_model(name: str) -> Iterator[Path]:
    """The local model folder that `name` means, downloaded into a temporary folder if need be."""
    local = Path(name)
    if local.is_dir():
        folder = model_folder_within(local)
        if folder is None:
            raise SemopsError(f"{local}: holds no trained semops model ({FEATURIZER} not found)")
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="semops-model-") as scratch:
        if name.startswith(MLFLOW_SCHEMES):
            root = download_mlflow_model(name, Path(scratch))
        else:
            root = checkout_experiment_model(name, Path(scratch))
        folder = model_folder_within(root)
        if folder is None:
            raise SemopsError(f"{name}: holds no trained semops model ({FEATURIZER} not found)")
        yield folder


def download_mlflow_model(uri: str, scratch: Path) -> Path:
    from semops.tracking.mirror import configure_client_env, tracking_uri

    configure_client_env()
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri())
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch)))
    except MlflowException as exc:
        raise SemopsError(f"{uri}: cannot fetch the model from MLflow ({exc.message})") from exc


def checkout_experiment_model(name: str, scratch: Path) -> Path:
    """The model folder of DVC experiment `name`, from DVC's cache at the experiment's commit."""
    from dvc.api import DVCFileSystem
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import resolve_name

    root = paths.project_root()
    try:
        repo = Repo(str(root))
    except Exception as exc:  # DVC raises its own NotDvcRepoError and friends
        raise SemopsError(f"{name}: not a folder or model URI, and {root} is no DVC repo") from exc
    with repo:
        ref = resolve_name(repo.scm, name).get(name)
        if ref is None:
            raise SemopsError(
                f"--model {name!r}: not a folder, an MLflow model URI (models:/name@alias) or a "
                "DVC experiment of this repository (`dvc exp list` names them)"
            )
        rev = repo.scm.get_ref(str(ref))
    target = scratch / "model"
    filesystem: Any = DVCFileSystem(str(root), rev=rev)
    try:
        filesystem.get(str(paths.MODEL_DIR), str(target), recursive=True)
    except FileNotFoundError as exc:
        raise SemopsError(
            f"experiment {name}: its model ({paths.MODEL_DIR}) is not in DVC's cache here "
            "(`dvc exp pull` fetches it)"
        ) from exc
    return target


def run_predict(args: argparse.Namespace) -> None:
    from semops.tabular.batchscore import score_file
    from semops.tabular.scoring import RawScorer

    keep = [c for c in args.keep.split(",") if c] if args.keep is not None else None
    with resolved_model(args.model) as folder:
        scorer = RawScorer.load(folder)
        scored = score_file(scorer, Path(args.input), Path(args.output), keep, args.batch_rows)
    print(
        f"predict: {scored.rows} rows scored by {args.model} -> {scored.output} "
        f"(kept: {', '.join(scored.kept) or 'none'}; classes: {', '.join(scorer.classes)})"
    )


def positive_int(text: str) -> int:
    value = int(text) if text.strip().lstrip("+").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of rows of at least 1, not {text!r}")
    return value


def add_parser(commands: Any) -> None:
    from semops.tabular.batchscore import BATCH_ROWS

    parser = commands.add_parser(
        "predict",
        help="score raw rows (CSV or Parquet) with a trained model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=str(paths.MODEL_DIR),
        help="a model folder, models:/NAME@ALIAS, runs:/ID/model, or a DVC experiment name "
        f"(default: {paths.MODEL_DIR}, the workspace's model)",
    )
    parser.add_argument("--input", required=True, help="raw rows: a .csv or .parquet file")
    parser.add_argument("--output", required=True, help="predictions: a .parquet or .csv file")
    parser.add_argument(
        "--keep",
        default=None,
        help="comma-separated input columns to copy to the output (default: the key columns "
        "and every column the model does not read, e.g. ids)",
    )
    parser.add_argument(
        "--batch-rows",
        type=positive_int,
        default=BATCH_ROWS,
        help=f"rows scored at a time: memory follows it (default {BATCH_ROWS:,})",
    )
    parser.set_defaults(func=run_predict)
