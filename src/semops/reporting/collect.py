"""The report's data, read from what the pipeline wrote (reports/, data/interim/schema.json,
params.yaml, dvc.yaml) and from DVC (`dvc exp show`, the stage graph). A file that is not there
yet leaves its section empty with a note; a file that is there but malformed is an error naming
it and the key."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from semops import paths
from semops.errors import SemopsError
from semops.io import read_csv_rows, read_json
from semops.reporting.content import (
    Cell,
    ClassScores,
    DataSummary,
    Experiments,
    Feature,
    Metric,
    Pipeline,
    Plots,
    Point,
    Research,
    RetrievalScores,
    Stage,
)

LOWER_IS_BETTER = frozenset({"brier", "log_loss"})
# `make show`'s order: best test ROC AUC first. Its test metrics stay even where every
# experiment has the same (`--keep`), the params only where they differ (`--only-changed`).
SORT_BY = "test.roc_auc"
KEEP = r"Experiment|test\."
# Always left out: when each experiment was made (the same experiments give the same page).
ALWAYS_DROP = "Created"
T = TypeVar("T")


def _bad(path: Path, exc: Exception) -> SemopsError:
    return SemopsError(f"{path}: unexpected content ({type(exc).__name__}: {exc})")


def optional(path: Path, read: Callable[[Path], T], notes: list[str], what: str) -> T | None:
    """`read(path)`; None (and a note saying what is missing) where the file is not there."""
    if not path.exists():
        notes.append(f"{what}: {path} is not there yet (run `make run`).")
        return None
    try:
        return read(path)
    except SemopsError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _bad(path, exc) from exc


def metrics(path: Path) -> tuple[tuple[Metric, ...], int | None, tuple[ClassScores, ...]]:
    """reports/metrics.json: each test metric beside the baseline's, the test rows, per class."""
    found = read_json(path)
    test, base = found["test"], found.get("baseline_logreg", {})
    rows = tuple(
        Metric(k, float(v), _float(base.get(k)), k in LOWER_IS_BETTER)
        for k, v in sorted(test.items())
        if isinstance(v, int | float) and not isinstance(v, bool)
    )
    per_class = tuple(
        ClassScores(name, s["precision"], s["recall"], s["f1"], int(s["support"]))
        for name, s in sorted(test.get("per_class", {}).items())
    )
    test_rows = found.get("test_rows")
    return rows, int(test_rows) if test_rows is not None else None, per_class


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _points(path: Path, x: str, y: str) -> tuple[Point, ...]:
    return tuple(Point(float(r[x]), float(r[y])) for r in read_csv_rows(path))


def _cells(path: Path) -> tuple[Cell, ...]:
    """One cell per (actual, predicted) pair of classes, zeros included."""
    counts = Counter((r["actual"], r["predicted"]) for r in read_csv_rows(path))
    labels = sorted({label for pair in counts for label in pair})
    return tuple(Cell(a, p, counts[(a, p)]) for a in labels for p in labels)


def _history(path: Path) -> tuple[dict[str, float], ...]:
    return tuple({k: float(v) for k, v in r.items()} for r in read_csv_rows(path))


def plots(notes: list[str]) -> Plots:
    what = "plots"
    return Plots(
        roc=optional(paths.ROC_PLOT, lambda p: _points(p, "fpr", "tpr"), notes, what) or (),
        pr=optional(paths.PR_PLOT, lambda p: _points(p, "recall", "precision"), notes, what) or (),
        calibration=optional(
            paths.CALIBRATION_PLOT,
            lambda p: _points(p, "mean_predicted", "fraction_positive"),
            notes,
            what,
        )
        or (),
        confusion=optional(paths.CONFUSION_PLOT, _cells, notes, what) or (),
        history=optional(paths.TRAIN_HISTORY, _history, notes, "training curves") or (),
    )


def training(path: Path) -> tuple[tuple[str, float | int], ...]:
    """reports/train.json's values (epochs as integers)."""
    found = read_json(path)
    return tuple((k, v if isinstance(v, int) else float(v)) for k, v in sorted(found.items()))


def data_summary(clean_path: Path, schema_path: Path, data_cfg: Any) -> DataSummary:
    """reports/clean.json and data/interim/schema.json, with params.yaml's data section."""
    clean = read_json(clean_path)
    missing = tuple(
        (rule, column, int(n))
        for rule, columns in sorted(clean.get("set_missing", {}).items())
        for column, n in sorted(columns.items())
        if n
    )
    features: tuple[Feature, ...] = ()
    if schema_path.exists():
        try:
            columns = read_json(schema_path)["columns"]
            features = tuple(
                Feature(c["name"], c["kind"], c["dtype"], _float(c["min"]), _float(c["max"]))
                for c in columns
            )
        except (KeyError, TypeError) as exc:
            raise _bad(schema_path, exc) from exc
    return DataSummary(
        dataset=data_cfg.name,
        target=data_cfg.target,
        positive=str(data_cfg.positive),
        rows_raw=int(clean["rows"]["raw"]),
        rows_clean=int(clean["rows"]["clean"]),
        dropped=tuple((k, int(v)) for k, v in sorted(clean["dropped"].items())),
        set_missing=missing,
        classes=tuple((k, int(v)) for k, v in sorted(clean["classes"].items())),
        splits=tuple((s, int(clean["split"][s])) for s in paths.SPLITS if s in clean["split"]),
        features=features,
        left_out=tuple(data_cfg.drop),
    )


def _is_scores(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, float | int) for v in value.values())


def _scores(name: str, found: dict[str, Any]) -> list[RetrievalScores]:
    """One evaluation set's (or one kind of its queries') metrics, a row per method."""
    queries = int(found.get("queries", 0))
    rows = [
        RetrievalScores(name, queries, method, scores)
        for method, scores in sorted(found.items())
        if _is_scores(scores)
    ]
    for kind, sub in sorted(found.items()):
        if isinstance(sub, dict) and "queries" in sub and not _is_scores(sub):
            rows += _scores(f"{name} ({kind} queries)", sub)
    return rows


def research(path: Path) -> Research:
    """reports/research.json: the index's size and each evaluation set's metrics per method."""
    found = read_json(path)
    sets = sorted(k for k, v in found.items() if isinstance(v, dict))
    return Research(
        documents=int(found["documents"]),
        chunks=int(found["chunks"]),
        method=str(found["method"]),
        sets=tuple(
            (name, tuple((k, int(v)) for k, v in sorted(found[name].items()) if _is_count(k, v)))
            for name in sets
        ),
        retrieval=tuple(row for name in sets for row in _scores(name, found[name])),
    )


def _is_count(key: str, value: Any) -> bool:
    return key != "queries" and isinstance(value, int) and not isinstance(value, bool)


def pipeline(root: Path) -> Pipeline:
    """dvc.yaml's stages (with .dvc files' ones) and their edges, as DVC itself resolves them
    (`${...}` filled from params.yaml); reading it takes no lock, so a running stage may."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            graph = repo.index.graph
            stages = sorted(
                (Stage(s.addressing, tuple(sorted(str(o) for o in s.outs))) for s in graph.nodes),
                key=lambda s: s.name,
            )
            # DVC's edge (a, b): stage a reads what b writes.
            edges = sorted((b.addressing, a.addressing) for a, b in graph.edges)
    except DvcException as exc:
        raise SemopsError(f"{root / 'dvc.yaml'}: DVC could not read the pipeline ({exc})") from exc
    return Pipeline(tuple(stages), tuple(edges))


def experiments(root: Path, drop: str | None) -> Experiments:
    """`dvc exp show` as `make show` runs it (`drop`: the columns it leaves out), as a table."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--csv", "--only-changed"]
    command += ["--drop", f"{ALWAYS_DROP}|{drop}" if drop else ALWAYS_DROP, "--keep", KEEP]
    command += ["--sort-by", SORT_BY, "--sort-order", "desc"]
    shown = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if shown.returncode != 0:
        reason = (shown.stderr.strip().splitlines() or ["no message"])[-1]
        return Experiments(note=f"`dvc exp show` failed here: {reason}")
    rows = list(csv.reader(io.StringIO(shown.stdout)))
    if not rows:
        return Experiments(note="`dvc exp show` listed no experiment.")
    return Experiments(
        columns=tuple(rows[0]),
        rows=tuple(tuple(r) for r in rows[1:]),
        sort_column=SORT_BY if SORT_BY in rows[0] else None,
    )
