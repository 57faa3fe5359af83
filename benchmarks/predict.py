"""Benchmark 9: batch scoring. `semops predict` on a file of raw rows (the credit raw table
repeated) with each model kind, beside scikit-learn's own Pipeline(ColumnTransformer, model)
doing the same work: file to file, each as a fresh process, and predict_proba in memory; and the
peak memory of `semops predict` at two file sizes and three batch sizes, which should follow the
batch, not the file.

`run` drives it from benchmarks/run.py. The timed parts run in their own processes inside a
project copy, each printing one JSON line (`python -m benchmarks.predict <step> ...`):

  generate      the raw table repeated to --rows rows, as Parquet (and CSV with --csv)
  score         score_file in-process: import, model load and scoring timed apart, with the time
                per phase (read, clean, features, model, prediction columns, to pandas +
                assemble, write)
  sklearn       scikit-learn pipelines fitted on the training split and saved with joblib (as
                scikit-learn users ship one); predict_proba timed on the rows read into memory,
                and semops' RawScorer.predict_proba on the same DataFrame
  sklearn-file  what `semops predict` does, the scikit-learn way: load a saved pipeline, read
                the Parquet file, predict_proba, write the predictions as Parquet

`semops predict` and `sklearn-file` are each timed as a subprocess, from process start to the
output written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import GIB, PYTHON, Context, Timed, helper_env, mem_available, timed
from benchmarks.report import Result, Target, fmt_bytes, fmt_rate, fmt_s

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TITLE = "9. Batch scoring: `semops predict` vs scikit-learn"
KINDS = ("mlp", "logreg", "gbdt")
TARGET_KINDS = ("logreg", "gbdt")  # the issue's target: at least scikit-learn's rows/s
SKLEARN_PIPELINE = "sklearn-pipeline.joblib"  # saved by `sklearn` in each model folder
MEMORY_KIND = "logreg"  # file sizes and batch sizes for peak memory, CSV input
SMALL_BATCH, LARGE_BATCH = 8_192, 262_144
RAW = Path("data/raw/credit/table.parquet")


# ---- helpers run in their own process ----------------------------------------------------------


def generate(raw: Path, rows: int, out: Path, csv: Path | None) -> dict[str, Any]:
    """The raw table repeated to `rows` rows, 'rownames' renumbered 1..rows (an id column, copied
    to the output by `semops predict`); written by pyarrow with its default row groups."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    start = time.perf_counter()
    table = pq.read_table(raw)
    copies = -(-rows // table.num_rows)
    big = pa.concat_tables([table] * copies).slice(0, rows)
    ids = pa.array(np.arange(1, rows + 1, dtype=np.int64))
    big = big.set_column(big.schema.get_field_index("rownames"), "rownames", ids)
    pq.write_table(big, out, compression="zstd")
    info: dict[str, Any] = {
        "rows": rows,
        "arrow_bytes": table.nbytes * rows // table.num_rows,
        "raw_rows": table.num_rows,
        "columns": table.num_columns,
        "file_bytes": out.stat().st_size,
        "row_groups": pq.ParquetFile(out).metadata.num_row_groups,
    }
    if csv is not None:
        pv.write_csv(big, csv)
        info["csv_bytes"] = csv.stat().st_size
    info["seconds"] = time.perf_counter() - start
    return info


class _Phases:
    """Seconds per phase of score_file, by wrapping the functions it calls (looked up in their
    modules' globals at call time). A name the code no longer has is skipped, not an error."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, module: Any, name: str, phase: str) -> None:
        original = getattr(module, name, None)
        if original is None:
            return
        seconds = self.seconds

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - start

        setattr(module, name, timed_call)

    def wrap_iterator(self, module: Any, name: str, phase: str) -> None:
        original = getattr(module, name, None)
        if original is None:
            return
        seconds = self.seconds

        def timed_iterator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            items = iter(original(*args, **kwargs))
            while True:
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    seconds[phase] += time.perf_counter() - start
                yield item

        setattr(module, name, timed_iterator)

    def wrap_writer(self, module: Any, name: str, phase: str) -> None:
        """open_writer: the writer's write_table and close are timed too."""
        original = getattr(module, name, None)
        if original is None:
            return
        wrap = self.wrap

        def opened(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            writer = original(*args, **kwargs)
            self.seconds[phase] += time.perf_counter() - start
            proxy = _Proxy(writer)
            wrap(proxy, "write_table", phase)
            wrap(proxy, "close", phase)
            return proxy

        setattr(module, name, opened)


class _Proxy:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TimedClassifier:
    def __init__(self, inner: Any, seconds: dict[str, float]) -> None:
        self.inner, self.seconds = inner, seconds

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            proba: np.ndarray = self.inner.predict_proba(features)
            return proba
        finally:
            self.seconds["model"] += time.perf_counter() - start


def score(model: Path, source: Path, output: Path, repeats: int) -> dict[str, Any]:
    """score_file in this process: imports, model load, then `repeats` scorings of the whole
    file (the best is reported), the last one with its time per phase."""
    start = time.perf_counter()
    from semops.tabular import batchscore, scoring
    from semops.tabular.batchscore import score_file
    from semops.tabular.scoring import RawScorer

    imports = time.perf_counter() - start
    start = time.perf_counter()
    scorer = RawScorer.load(model)
    load = time.perf_counter() - start
    runs = []
    for _ in range(max(1, repeats - 1)):
        start = time.perf_counter()
        rows = score_file(scorer, source, output).rows
        runs.append(time.perf_counter() - start)
    phases = _Phases()
    phases.wrap_iterator(batchscore, "read_batches", "read")
    phases.wrap(scoring, "clean_input", "clean")
    phases.wrap(scoring, "feature_matrix", "features")
    phases.wrap(batchscore, "prediction_arrays", "prediction columns")
    phases.wrap(batchscore, "scored_table", "scored_table")
    phases.wrap_writer(batchscore, "open_writer", "write")
    timed_scorer = RawScorer(_TimedClassifier(scorer.classifier, phases.seconds), scorer.spec)
    start = time.perf_counter()
    score_file(timed_scorer, source, output)
    runs.append(time.perf_counter() - start)
    split = dict(phases.seconds)
    inner = sum(split.get(k, 0.0) for k in ("clean", "features", "model", "prediction columns"))
    if "scored_table" in split:  # the rest of scored_table: Arrow batch -> pandas, output table
        split["to pandas + assemble"] = split.pop("scored_table") - inner
    split["other"] = runs[-1] - sum(split.values())
    return {
        "rows": rows,
        "import_seconds": imports,
        "load_seconds": load,
        "score_seconds": runs,
        "phases": split,
        "output_bytes": output.stat().st_size,
    }


def _pipeline(
    kind: str,
    meta: dict[str, Any],
    tensors: dict[str, Any],
    numeric: list[str],
    categorical: list[str],
) -> Any:
    """scikit-learn's own pipeline, its model the size of ours (config from model.json; gbdt:
    as many boosting rounds as our early stopping kept)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cfg = meta["config"]
    model: Any
    if kind == "logreg":
        model = LogisticRegression(C=cfg.get("C", 1.0), max_iter=1000)
    elif kind == "gbdt":
        rounds = len(tensors["roots"]) // max(1, len(tensors["baseline"]))
        model = HistGradientBoostingClassifier(
            max_iter=rounds,
            learning_rate=cfg["learning_rate"],
            max_leaf_nodes=cfg["max_leaf_nodes"],
            min_samples_leaf=cfg["min_samples_leaf"],
            l2_regularization=cfg["l2_regularization"],
            early_stopping=False,
            random_state=0,
        )
    else:
        model = MLPClassifier(
            hidden_layer_sizes=(cfg["hidden"],) * cfg["layers"],
            alpha=cfg.get("weight_decay", 1e-4),
            batch_size=cfg.get("batch_size", 256),
            learning_rate_init=cfg.get("lr", 1e-3),
            max_iter=50,
            random_state=0,
        )
    prep = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return Pipeline([("prep", prep), ("model", model)])


def _as_object(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Text columns as object arrays of str/None: scikit-learn's encoders work on those."""
    frame = frame.copy()
    for name in columns:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _best(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sklearn(models: Path, source: Path, repeats: int) -> dict[str, Any]:
    """Per kind: scikit-learn's pipeline fitted on the training split (data/interim, the rows
    our models were trained on, cleaned) and saved with joblib beside our model
    (<models>/<kind>/sklearn-pipeline.joblib, for `sklearn-file`); predict_proba on `source`'s
    rows read into memory beforehand; our RawScorer.predict_proba on the same DataFrame; their
    agreement."""
    import warnings

    import joblib
    import numpy as np
    import pandas as pd
    import threadpoolctl
    from safetensors.numpy import load_file
    from sklearn.exceptions import ConvergenceWarning

    from semops.io import read_json
    from semops.tabular.scoring import RawScorer

    schema = read_json(Path("data/interim/schema.json"))
    numeric = [c["name"] for c in schema["columns"] if c["kind"] == "numeric"]
    categorical = [c["name"] for c in schema["columns"] if c["kind"] == "categorical"]
    train = pd.read_parquet("data/interim/train.parquet")
    x_train = _as_object(train[numeric + categorical], categorical)
    y_train = train[schema["target"]].astype(str).to_numpy()
    start = time.perf_counter()
    rows = pd.read_parquet(source)
    read_seconds = time.perf_counter() - start
    start = time.perf_counter()
    rows_object = _as_object(rows, categorical)
    to_object_seconds = time.perf_counter() - start
    raw = pd.read_parquet(RAW)
    out: dict[str, Any] = {
        "rows": len(rows),
        "read_seconds": read_seconds,
        "to_object_seconds": to_object_seconds,
        "train_rows": len(train),
        "threads": {i["user_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()},
        "kinds": {},
    }
    for kind in KINDS:
        folder = models / kind
        meta = read_json(folder / "model.json")
        pipeline = _pipeline(
            kind, meta, load_file(str(folder / "model.safetensors")), numeric, categorical
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(x_train, y_train)
        fit_seconds = time.perf_counter() - start
        saved = folder / SKLEARN_PIPELINE
        joblib.dump(pipeline, saved)
        sk_seconds = _best(partial(pipeline.predict_proba, rows_object), repeats)
        with threadpoolctl.threadpool_limits(limits=1):
            sk_one_thread = _best(partial(pipeline.predict_proba, rows_object), repeats)
        scorer = RawScorer.load(folder)
        ours_seconds = _best(partial(scorer.predict_proba, rows), repeats)
        # Agreement on the raw table's rows: P(positive class) of each.
        positive = scorer.classes[-1]
        column = list(pipeline.classes_).index(positive)
        theirs = pipeline.predict_proba(_as_object(raw, categorical))[:, column]
        ours = scorer.predict_proba(raw)[:, -1]
        out["kinds"][kind] = {
            "sklearn_model": repr(pipeline.named_steps["model"]),
            "fit_seconds": fit_seconds,
            "pipeline_bytes": saved.stat().st_size,
            "sklearn_predict_proba_seconds": sk_seconds,
            "sklearn_one_thread_seconds": sk_one_thread,
            "ours_in_memory_seconds": ours_seconds,
            "mean_abs_proba_diff": float(np.mean(np.abs(theirs - ours))),
            "same_class_share": float(np.mean((theirs >= 0.5) == (ours >= 0.5))),
        }
    return out


def sklearn_file(pipeline_path: Path, source: Path, output: Path) -> dict[str, Any]:
    """`semops predict`'s work the scikit-learn way, in this fresh process: import pandas and
    joblib, load the fitted pipeline, read the whole Parquet file, text columns as object arrays
    (as `_as_object`), predict_proba, then write the columns the pipeline does not read (the id
    and the target, as ours keeps them), one probability column per class and the most probable
    class, as zstd Parquet. The seconds of each part, in order, are returned."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def lap(part: str) -> None:
        nonlocal start
        now = time.perf_counter()
        seconds[part] = now - start
        start = now

    import joblib
    import pandas as pd

    lap("imports")
    pipeline = joblib.load(pipeline_path)  # imports the scikit-learn modules it names
    lap("load")
    rows = pd.read_parquet(source)
    lap("read")
    features = [str(name) for name in pipeline.feature_names_in_]
    by_name = {name: columns for name, _, columns in pipeline.named_steps["prep"].transformers_}
    x = _as_object(rows[features], list(by_name["categorical"]))
    lap("to object")
    proba = pipeline.predict_proba(x)
    lap("predict_proba")
    frame = rows.drop(columns=features)
    for k, name in enumerate(pipeline.classes_):
        frame[f"proba_{name}"] = proba[:, k]
    frame["prediction"] = pipeline.classes_[proba.argmax(axis=1)]
    lap("output frame")
    frame.to_parquet(output, compression="zstd", index=False)
    lap("write")
    return {
        "rows": len(rows),
        "columns": [str(name) for name in frame.columns],
        "seconds": seconds,
        "output_bytes": output.stat().st_size,
    }


# ---- the driver ---------------------------------------------------------------------------------


def train_models(ctx: Context) -> tuple[Path, dict[str, Path], dict[str, float]]:
    """A fresh project; `dvc repro train` composed with each model kind (the first runs download,
    clean and featurize too); each trained model folder copied out."""
    project = ctx.fresh_project("predict")
    store = project.parent / "models"
    folders, seconds = {}, {}
    for kind in KINDS:
        timed(["semops", "compose", f"model={kind}"], project)
        seconds[kind] = timed(["dvc", "repro", "train"], project, timeout=900).seconds
        folders[kind] = store / kind
        shutil.copytree(project / "data" / "models" / "model", folders[kind])
    timed(["git", "checkout", "params.yaml"], project)
    return project, folders, seconds


def semops_predict(
    project: Path,
    model: Path,
    source: Path,
    output: Path,
    repeats: int,
    rss_limit: int,
    batch_rows: int | None = None,
) -> dict[str, Any]:
    cmd = [
        "semops",
        "predict",
        "--model",
        str(model),
        "--input",
        str(source),
        "--output",
        str(output),
    ]
    if batch_rows is not None:
        cmd += ["--batch-rows", str(batch_rows)]
    runs: list[Timed] = [
        timed(cmd, project, timeout=900, rss_limit=rss_limit) for _ in range(repeats)
    ]
    columns = _output_columns(output)
    output.unlink(missing_ok=True)
    best = min(runs, key=lambda r: r.seconds)
    return {
        "cmd": " ".join([*cmd[:2], "--model", f"<{model.name}>", *cmd[4:]]),
        "seconds": [r.seconds for r in runs],
        "best_seconds": best.seconds,
        "cpu_seconds": best.cpu_seconds,
        "peak_rss": max(r.max_rss_bytes for r in runs),
        "columns": columns,
        "printed": best.stdout.strip().splitlines()[-1] if best.stdout.strip() else "",
    }


def _output_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [str(name) for name in pq.read_schema(path).names] if path.suffix == ".parquet" else []


def sklearn_predict(
    project: Path, pipeline: Path, source: Path, output: Path, repeats: int, rss_limit: int
) -> dict[str, Any]:
    """The `sklearn-file` step as a subprocess, timed as `semops predict` is; the seconds of
    its parts are those of the fastest run."""
    cmd = [PYTHON, "-m", __name__, "sklearn-file", "--pipeline", str(pipeline)]
    cmd += ["--input", str(source), "--output", str(output)]
    env = helper_env(project)
    runs = [timed(cmd, project, env=env, timeout=900, rss_limit=rss_limit) for _ in range(repeats)]
    output.unlink(missing_ok=True)
    best = min(runs, key=lambda r: r.seconds)
    return {
        "seconds": [r.seconds for r in runs],
        "best_seconds": best.seconds,
        "cpu_seconds": best.cpu_seconds,
        "peak_rss": max(r.max_rss_bytes for r in runs),
        "inside": best.last_json(),
    }


def _helper(project: Path, args: list[str], rss_limit: int) -> Any:
    cmd = [PYTHON, "-m", __name__, *args]
    return timed(
        cmd, project, env=helper_env(project), timeout=1800, rss_limit=rss_limit
    ).last_json()


def measure(ctx: Context) -> dict[str, Any]:
    rows = ctx.args.predict_rows
    big_rows = ctx.args.predict_big_rows
    repeats = ctx.args.predict_repeats
    rss_limit = int(min(16 * GIB, mem_available() - GIB))
    project, models, train_seconds = train_models(ctx)
    work = project.parent / "files"
    work.mkdir()
    source, csv, big = work / "rows.parquet", work / "rows.csv", work / "rows-big.parquet"
    raw = str(project / RAW)
    data: dict[str, Any] = {
        "rows": rows,
        "big_rows": big_rows,
        "repeats": repeats,
        "train_seconds": train_seconds,
    }
    data["input"] = _helper(
        project,
        ["generate", "--raw", raw, "--rows", str(rows), "--out", str(source), "--csv", str(csv)],
        rss_limit,
    )
    startup = timed(["semops", "predict", "--help"], project)
    data["help"] = {"seconds": startup.seconds, "peak_rss": startup.max_rss_bytes}
    out = work / "predictions.parquet"
    data["predict"] = {
        kind: semops_predict(project, models[kind], source, out, repeats, rss_limit)
        for kind in KINDS
    }
    data["score"] = {
        kind: _helper(
            project,
            [
                "score",
                "--model",
                str(models[kind]),
                "--input",
                str(source),
                "--output",
                str(out),
                "--repeats",
                str(repeats),
            ],
            rss_limit,
        )
        for kind in KINDS
    }
    out.unlink(missing_ok=True)
    data["sklearn"] = _helper(
        project,
        [
            "sklearn",
            "--models",
            str(models["logreg"].parent),
            "--input",
            str(source),
            "--repeats",
            str(repeats),
        ],
        rss_limit,
    )
    data["sklearn_file"] = {
        kind: sklearn_predict(
            project, models[kind] / SKLEARN_PIPELINE, source, out, repeats, rss_limit
        )
        for kind in KINDS
    }
    model = models[MEMORY_KIND]
    memory: dict[str, Any] = {"kind": MEMORY_KIND}
    memory["csv"] = semops_predict(project, model, csv, out, 1, rss_limit)
    for batch in (SMALL_BATCH, LARGE_BATCH):
        memory[f"batch_{batch}"] = semops_predict(project, model, source, out, 1, rss_limit, batch)
    csv.unlink()
    data["big_input"] = _helper(
        project, ["generate", "--raw", raw, "--rows", str(big_rows), "--out", str(big)], rss_limit
    )
    memory["big"] = semops_predict(project, model, big, out, 1, rss_limit)
    big.unlink()
    data["memory"] = memory
    return data


def _ratios(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per kind, rows/s of each and ours / scikit-learn's, like with like: both processes file
    to file, both predict_proba calls in memory."""
    rows = data["rows"]
    ratios = {}
    for kind in KINDS:
        sk = data["sklearn"]["kinds"][kind]
        r = {
            "ours_process_rows_per_s": rows / data["predict"][kind]["best_seconds"],
            "sklearn_process_rows_per_s": rows / data["sklearn_file"][kind]["best_seconds"],
            "ours_in_memory_rows_per_s": rows / sk["ours_in_memory_seconds"],
            "sklearn_in_memory_rows_per_s": rows / sk["sklearn_predict_proba_seconds"],
            "score_file_rows_per_s": rows / min(data["score"][kind]["score_seconds"]),
        }
        r["process_ratio"] = r["ours_process_rows_per_s"] / r["sklearn_process_rows_per_s"]
        r["in_memory_ratio"] = r["ours_in_memory_rows_per_s"] / r["sklearn_in_memory_rows_per_s"]
        ratios[kind] = r
    return ratios


def _rate(rows: int, seconds: float) -> str:
    return f"{fmt_rate(rows / seconds)} ({fmt_s(seconds)})"


def _speed_table(data: dict[str, Any], ratios: dict[str, dict[str, float]], result: Result) -> None:
    n, rows = data["rows"], []
    for kind in KINDS:
        p, f, s, r = (
            data["predict"][kind],
            data["sklearn_file"][kind],
            data["score"][kind],
            ratios[kind],
        )
        sk = data["sklearn"]["kinds"][kind]
        rows.append(
            [
                kind,
                _rate(n, p["best_seconds"]),
                _rate(n, f["best_seconds"]),
                f"{r['process_ratio']:.2f}x",
                _rate(n, sk["ours_in_memory_seconds"]),
                _rate(n, sk["sklearn_predict_proba_seconds"]),
                f"{r['in_memory_ratio']:.2f}x",
                _rate(n, sk["sklearn_one_thread_seconds"]),
                _rate(n, min(s["score_seconds"])),
                f"{fmt_bytes(p['peak_rss'])} / {fmt_bytes(f['peak_rss'])}",
                f"{sk['mean_abs_proba_diff']:.3f} ({sk['same_class_share']:.1%})",
            ]
        )
    result.table(
        [
            "model",
            "`semops predict` process (file to file)",
            "scikit-learn process (file to file)",
            "ours / scikit-learn, process",
            "ours in memory (RawScorer.predict_proba)",
            "scikit-learn in memory (Pipeline.predict_proba)",
            "ours / scikit-learn, in memory",
            "scikit-learn in memory, 1 thread",
            "score_file alone (in-process)",
            "peak RSS: `semops predict` / scikit-learn process",
            "mean abs P(bad) difference to scikit-learn (same class)",
        ],
        rows,
        title=f"{n:,} raw rows, rows/s (seconds), best of {data['repeats']}; processes: "
        "Parquet in, Parquet out",
    )


PHASES = (
    "read",
    "clean",
    "features",
    "model",
    "prediction columns",
    "to pandas + assemble",
    "write",
    "other",
)
SKLEARN_PARTS = (
    "imports",
    "load",
    "read",
    "to object",
    "predict_proba",
    "output frame",
    "write",
)


def _share(seconds: float, total: float) -> str:
    return f"{fmt_s(seconds)} ({seconds / total:.0%})"


def _phase_table(data: dict[str, Any], result: Result) -> None:
    rows = []
    for kind in KINDS:
        s = data["score"][kind]
        total = s["score_seconds"][-1]
        phases = s["phases"]
        rows.append(
            [
                kind,
                fmt_s(s["import_seconds"]),
                fmt_s(s["load_seconds"]),
                fmt_s(total),
                *(_share(phases[k], total) if k in phases else "-" for k in PHASES),
            ]
        )
    result.table(
        ["model", "imports", "model load", "score_file", *PHASES],
        rows,
        title="Where score_file's time goes (in-process, the last run, timed per call)",
    )


def _sklearn_file_table(data: dict[str, Any], result: Result) -> None:
    rows = []
    for kind in KINDS:
        f = data["sklearn_file"][kind]
        total, parts = f["best_seconds"], f["inside"]["seconds"]
        rest = total - sum(parts.values())
        rows.append(
            [
                kind,
                fmt_s(total),
                *(_share(parts[k], total) if k in parts else "-" for k in SKLEARN_PARTS),
                _share(rest, total),
            ]
        )
    result.table(
        ["model", "process", *SKLEARN_PARTS, "interpreter start, exit, rest"],
        rows,
        title="Where the scikit-learn process's time goes (its fastest run)",
    )


def _memory_table(data: dict[str, Any], result: Result) -> None:
    memory, rows, big = data["memory"], data["rows"], data["big_rows"]
    default = "65,536 (default)"
    entries = [
        (rows, "Parquet", default, data["predict"][memory["kind"]], data["input"]),
        (big, "Parquet", default, memory["big"], data["big_input"]),
        (rows, "Parquet", f"{SMALL_BATCH:,}", memory[f"batch_{SMALL_BATCH}"], data["input"]),
        (rows, "Parquet", f"{LARGE_BATCH:,}", memory[f"batch_{LARGE_BATCH}"], data["input"]),
        (rows, "CSV", default, memory["csv"], data["input"]),
    ]
    table_rows = [
        [f"{n:,}", fmt, batch, fmt_bytes(gen["arrow_bytes"]), fmt_bytes(entry["peak_rss"]),
         _rate(n, entry["best_seconds"])]
        for n, fmt, batch, entry, gen in entries
    ]  # fmt: skip
    result.table(
        ["rows", "input", "--batch-rows", "the whole file in memory (Arrow)", "peak RSS",
         "rows/s (wall)"],
        table_rows,
        title=f"Peak memory of `semops predict` ({memory['kind']}): file size vs batch size",
    )  # fmt: skip


def run(ctx: Context, result: Result) -> None:
    data = measure(ctx)
    ratios = _ratios(data)
    data["ratios"] = ratios
    result.raw = data
    n = data["rows"]
    for kind in TARGET_KINDS:
        r = ratios[kind]
        ours, theirs = (
            data["predict"][kind]["best_seconds"],
            data["sklearn_file"][kind]["best_seconds"],
        )
        result.targets.append(
            Target(
                f"{kind}: `semops predict` / scikit-learn, file to file as processes "
                f"(rows/s, {n:,} rows)",
                f"{r['process_ratio']:.2f}x ({fmt_s(ours)} vs {fmt_s(theirs)})",
                ">= 1x",
                r["process_ratio"] >= 1,
            )
        )
        sk = data["sklearn"]["kinds"][kind]
        ours, theirs = sk["ours_in_memory_seconds"], sk["sklearn_predict_proba_seconds"]
        result.targets.append(
            Target(
                f"{kind}: RawScorer.predict_proba / scikit-learn Pipeline.predict_proba, in "
                f"memory (rows/s, {n:,} rows)",
                f"{r['in_memory_ratio']:.2f}x ({fmt_s(ours)} vs {fmt_s(theirs)})",
                ">= 1x",
                r["in_memory_ratio"] >= 1,
            )
        )
    memory = data["memory"]
    growth = memory["big"]["peak_rss"] / data["predict"][memory["kind"]]["peak_rss"]
    result.targets.append(
        Target(
            f"peak RSS of `semops predict`, {data['big_rows']:,} vs {n:,} rows",
            f"{growth:.2f}x ({fmt_bytes(memory['big']['peak_rss'])})",
            "~1x: bounded by the batch, not the file (<= 1.2x)",
            growth <= 1.2,
        )
    )
    _speed_table(data, ratios, result)
    _phase_table(data, result)
    _sklearn_file_table(data, result)
    _memory_table(data, result)
    result.notes += _notes(data)


def _notes(data: dict[str, Any]) -> list[str]:
    sk, gen, memory = data["sklearn"], data["input"], data["memory"]
    ours_columns = data["predict"][MEMORY_KIND]["columns"]
    their_columns = data["sklearn_file"][MEMORY_KIND]["inside"]["columns"]
    same = "the same columns" if sorted(ours_columns) == sorted(their_columns) else "OTHER columns"
    return [
        f"Reproduce: `python -m benchmarks.run --only predict` (sizes: `--predict-rows "
        f"{data['rows']} --predict-big-rows {data['big_rows']} --predict-repeats "
        f"{data['repeats']}`). Times are the best of {data['repeats']} runs each.",
        f"Input: data/raw/credit/table.parquet ({gen['raw_rows']:,} rows, {gen['columns']} "
        f"columns) repeated to {data['rows']:,} rows, 'rownames' renumbered; Parquet (zstd, "
        f"{gen['row_groups']} row group(s), {fmt_bytes(gen['file_bytes'])}); CSV "
        f"{fmt_bytes(gen['csv_bytes'])}. Both processes write zstd Parquet with {same} "
        f"(ours: {', '.join(ours_columns)}; scikit-learn's: {', '.join(their_columns)}): the "
        "columns the model does not read, one probability per class, the most probable class.",
        "Models: `semops compose model=<kind>` + `dvc repro train` in a fresh project on "
        "`data=credit` (conf/model/*.yaml); the folder data/models/model of each.",
        "`semops predict` process: `semops predict --model <folder> --input <file> --output "
        "<file>` as a subprocess, timed from spawn to exit: interpreter start, the CLI's "
        "imports, model load, the file read in batches of 65,536 rows, clean, features, model, "
        "Parquet written and renamed into place. Peak RSS is its ru_maxrss.",
        "scikit-learn process: `python -m benchmarks.predict sklearn-file --pipeline "
        f"<models>/<kind>/{SKLEARN_PIPELINE} --input <file> --output <file>`, timed the same "
        "way: interpreter start, importing pandas and joblib (and this module: argparse, json, "
        "benchmarks.common, about 10 ms beside those libraries), joblib.load of the pipeline "
        "fitted and dumped by the `sklearn` step (which imports scikit-learn), pd.read_parquet "
        "of the whole file, the categorical columns as object arrays of str/None, "
        "Pipeline.predict_proba, a DataFrame of the columns the pipeline does not read plus "
        "proba_<class> per class and classes_[argmax] as 'prediction', to_parquet(zstd). "
        "It reads the whole file at once, as a plain scikit-learn script does, so its peak "
        "RSS grows with the file; ours is bounded by the batch.",
        "In memory, in one process (the `sklearn` step), on the DataFrame pd.read_parquet gave: "
        "ours is RawScorer.predict_proba (clean + features + model; no file, no output "
        "columns); scikit-learn's is Pipeline.predict_proba (ColumnTransformer + model) on the "
        "same rows with the categorical columns already object arrays (that conversion took "
        f"{fmt_s(sk['to_object_seconds'])}, not counted; reading the file took "
        f"{fmt_s(sk['read_seconds'])}, not counted for either).",
        f"Threads: scikit-learn's defaults ({sk['threads']}); the 1-thread column is its "
        "in-memory call under threadpoolctl's limit. gbdt: ours walks the trees with "
        "scikit-learn's compiled tree predictor, on as many OpenMP threads as CPUs this process "
        "may use, as HistGradientBoostingClassifier does; logreg and mlp: numpy, BLAS for the "
        "matrix products.",
        "score_file alone: the same function in a process that has already imported semops and "
        "loaded the model. Its phases come from one more run with each function wrapped in a "
        "timer: read = iterating read_batches (Parquet decoding to Arrow record batches); "
        "clean = scoring.clean_input; features = scoring.feature_matrix; model = the "
        "classifier's predict_proba; prediction columns = batchscore.prediction_arrays (one "
        "Arrow column per class and the predicted label); to pandas + assemble = the rest of "
        "batchscore.scored_table (the model's columns to pandas, the output Arrow table of the "
        "kept columns and the predictions); write = opening the ParquetWriter, write_table, "
        "close; other = score_file minus all of these (column checks, progress, the rename).",
        "scikit-learn's pipeline: Pipeline(ColumnTransformer([numeric: SimpleImputer(median) + "
        "StandardScaler, categorical: OneHotEncoder(handle_unknown='ignore')]), model), fitted "
        f"on the same {sk['train_rows']:,} training rows (data/interim/train.parquet); models "
        "of our sizes: LogisticRegression(C from the config), HistGradientBoostingClassifier "
        "with our hyperparameters and as many rounds as our early stopping kept, "
        "MLPClassifier with our hidden layers.",
        "Agreement: P(bad) of both on the 4,454 raw rows (different fits of the same model "
        "families; a sanity check, not a quality measure).",
        f"Peak memory: the {memory['kind']} model; {data['big_rows']:,} rows is a file "
        f"{data['big_rows'] / data['rows']:.0f}x larger "
        f"({fmt_bytes(data['big_input']['file_bytes'])}, "
        f"{data['big_input']['row_groups']} row groups, pyarrow's default of at most 1,048,576 "
        "rows each). 'The whole file in memory' is the Arrow size of its rows (what reading it "
        "whole would hold, before pandas' copies). Peak RSS includes the interpreter and "
        f"libraries: `semops predict --help` peaks at {fmt_bytes(data['help']['peak_rss'])} "
        f"and takes {fmt_s(data['help']['seconds'])}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    gen = steps.add_parser("generate")
    gen.add_argument("--raw", type=Path, required=True)
    gen.add_argument("--rows", type=int, required=True)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--csv", type=Path)
    sco = steps.add_parser("score")
    sco.add_argument("--model", type=Path, required=True)
    sco.add_argument("--input", type=Path, required=True)
    sco.add_argument("--output", type=Path, required=True)
    sco.add_argument("--repeats", type=int, default=2)
    skl = steps.add_parser("sklearn")
    skl.add_argument("--models", type=Path, required=True)
    skl.add_argument("--input", type=Path, required=True)
    skl.add_argument("--repeats", type=int, default=2)
    skf = steps.add_parser("sklearn-file")
    skf.add_argument("--pipeline", type=Path, required=True)
    skf.add_argument("--input", type=Path, required=True)
    skf.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "generate":
        result = generate(args.raw, args.rows, args.out, args.csv)
    elif args.step == "score":
        result = score(args.model, args.input, args.output, args.repeats)
    elif args.step == "sklearn":
        result = sklearn(args.models, args.input, args.repeats)
    else:
        result = sklearn_file(args.pipeline, args.input, args.output)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
