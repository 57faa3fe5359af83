"""Every path the pipeline reads or writes, in one place; dvc.yaml declares the same paths
(tests/test_layout.py checks that the two agree).

Paths are relative to the working directory: DVC runs each stage from the repository root,
which for a queued experiment is a temporary copy of the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"
INTERIM = DATA / "interim"
PROCESSED = DATA / "processed"
MODELS = DATA / "models"
# Metrics and plot data, committed to git (DVC outputs with `cache: false`): a clone shows them,
# `dvc metrics diff` compares them with no pull, and a pull request's diff shows their change.
REPORTS = Path("reports")
PLOTS = REPORTS / "plots"
# This machine's own records beside them, git-ignored and no DVC output.
LOCAL_REPORTS = DATA / "reports"

SPLITS = ("train", "val", "test")


def raw_dir(dataset: str) -> Path:
    """Raw data of one data set: written once by download, never modified afterwards."""
    return RAW / dataset


def raw_table(dataset: str) -> Path:
    return raw_dir(dataset) / "table.parquet"


def raw_manifest(dataset: str) -> Path:
    return raw_dir(dataset) / "manifest.json"


def interim_split(split: str) -> Path:
    return INTERIM / f"{split}.parquet"


def processed_split(split: str) -> Path:
    return PROCESSED / f"{split}.parquet"


# The raw columns a model takes, how each is cleaned, and example raw rows (the clean stage's).
INPUT_SCHEMA = INTERIM / "schema.json"
FEATURIZER = PROCESSED / "featurizer.json"
MODEL_DIR = MODELS / "model"
CLEAN_METRICS = REPORTS / "clean.json"
TRAIN_METRICS = REPORTS / "train.json"
TRAIN_HISTORY = REPORTS / "train_history.csv"
# When each epoch ended, for MLflow's metric timestamps: not a DVC output (no two runs agree).
TRAIN_TIMES = LOCAL_REPORTS / "train_times.json"
EVAL_METRICS = REPORTS / "metrics.json"
ROC_PLOT = PLOTS / "roc.csv"
PR_PLOT = PLOTS / "pr.csv"
CALIBRATION_PLOT = PLOTS / "calibration.csv"
CONFUSION_PLOT = PLOTS / "confusion.csv"
# Research RAG: what `semops research add` snapshots (files and crawled pages, never edited in
# place), and what the research-embed stage writes.
RESEARCH_SOURCES = RAW / "research"
RESEARCH = DATA / "research"
RESEARCH_CHUNKS = RESEARCH / "chunks.parquet"
# What the index holds (point ids, text hashes, embedder): DVC's view of the index.
RESEARCH_INDEX_MANIFEST = RESEARCH / "index.json"
# Qdrant's engine files: rebuilt from the chunks and embeddings when missing.
RESEARCH_INDEX = RESEARCH / "index"
RESEARCH_METRICS = REPORTS / "research.json"
# The report as one HTML page (`make report`): made from the files above, git-ignored.
REPORT_PAGE = REPORTS / "index.html"
# DVC's repository lock, held by a dvc command (`dvc repro`) between its stages, and its record
# of the paths that running stages read and write: `research add` waits for both.
DVC_LOCK = Path(".dvc") / "tmp" / "lock"
DVC_RWLOCK = Path(".dvc") / "tmp" / "rwlock"
# The page `dvc plots show/diff` fill, with Vega inline (.dvc/config's plots.html_template,
# relative to .dvc/): generated from the installed package by `make setup`, git-ignored.
DVC_PLOTS_TEMPLATE = Path(".dvc") / "plots.html"

# The result ids the track stage mirrored (content hashes, the same on every machine): committed,
# so a fresh clone finds the stage up to date; their absence makes it run.
TRACKED = LOCAL_REPORTS / "mlflow.json"
# The store that result went to: not a DVC output (a server's URL differs between teammates,
# the sqlite store's path between clones), so dvc.lock is the same for all.
TRACKED_STORE = LOCAL_REPORTS / "mlflow_store.json"


def project_root() -> Path:
    """The main repository: DVC sets DVC_ROOT to it in every stage, also in a queued copy."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def lineage_events() -> Path:
    """The stages' OpenLineage events, one JSON line each, where no other transport is set
    (README: "Lineage"): no DVC output, git-ignored. Queued experiments append to the main
    repository's file, so `semops lineage` there shows them too."""
    return project_root() / DATA / "lineage" / "events.jsonl"


def mlruns_dir() -> Path:
    return project_root() / "mlruns"


def hf_cache_dir() -> Path:
    return project_root() / "data" / ".cache" / "huggingface"


def research_embeddings_dir() -> Path:
    """The embedding store, keyed by embedder and text hash: not a stage output, since the last
    bits of a vector depend on the CPU's instruction set; shared through `dvc add` (README).
    Queued experiments use the main repository's store, so they never embed a text again."""
    return project_root() / RESEARCH / "embeddings"


def research_cache_dir() -> Path:
    """Machine-local research caches (exported ONNX models, converted documents): not outputs."""
    return project_root() / "data" / ".cache" / "research"


def node_models_dir() -> Path:
    """A Ray node's own exported ONNX models (research.engine: ray), where the node does not see
    the stage's research_cache_dir (another machine, no shared filesystem)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "semops" / "models"
