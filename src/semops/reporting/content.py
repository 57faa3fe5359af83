"""What the report shows, as typed data: `collect` reads it from the pipeline's files, `page`
turns it into HTML. Nothing here reads a file or knows HTML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    """One test metric of the model beside the logistic-regression baseline's."""

    name: str
    model: float
    baseline: float | None
    lower_is_better: bool = False


@dataclass(frozen=True)
class ClassScores:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Cell:
    """How many test rows of class `actual` the model predicted as `predicted`."""

    actual: str
    predicted: str
    count: int


@dataclass(frozen=True)
class Plots:
    """The evaluate stage's plot data (reports/plots/*.csv) and train's per-epoch history."""

    roc: tuple[Point, ...] = ()
    pr: tuple[Point, ...] = ()
    calibration: tuple[Point, ...] = ()
    confusion: tuple[Cell, ...] = ()
    # One row per epoch: `epoch` and each value the train stage recorded (losses, accuracy).
    history: tuple[Mapping[str, float], ...] = ()


@dataclass(frozen=True)
class Experiments:
    """`make show`'s table: each experiment's values as DVC prints them, best first. `rows` is
    empty and `note` says why when the table could not be read here."""

    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    sort_column: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Feature:
    """A raw column the model reads, as the clean stage describes it (data/interim/schema.json):
    valid values lie within [low, high] where a bound is given."""

    name: str
    kind: str
    dtype: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class DataSummary:
    dataset: str
    target: str
    positive: str
    rows_raw: int
    rows_clean: int
    # Rows the clean stage dropped, by reason; values it set missing, by rule and column.
    dropped: tuple[tuple[str, int], ...] = ()
    set_missing: tuple[tuple[str, str, int], ...] = ()
    classes: tuple[tuple[str, int], ...] = ()
    splits: tuple[tuple[str, int], ...] = ()
    features: tuple[Feature, ...] = ()
    # Columns params.yaml leaves out (data.drop).
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrievalScores:
    """One retrieval method's metrics on one evaluation set (or one kind of its queries)."""

    evaluation_set: str
    queries: int
    method: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class SamplePassage:
    citation: str
    text: str
    score: float
    # Whether the evaluation set's judgements count this passage's unit as relevant.
    relevant: bool


@dataclass(frozen=True)
class Sample:
    evaluation_set: str
    query: str
    passages: tuple[SamplePassage, ...]


@dataclass(frozen=True)
class Research:
    documents: int
    chunks: int
    method: str
    # Each evaluation set's name with its sizes (passages, files, chunks).
    sets: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    retrieval: tuple[RetrievalScores, ...] = ()
    samples: tuple[Sample, ...] = ()
    # Why `samples` holds what it holds (or nothing).
    samples_note: str = ""


@dataclass(frozen=True)
class Stage:
    name: str
    outs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    """dvc.yaml's stages and the edges `dvc dag` draws: (upstream, downstream)."""

    stages: tuple[Stage, ...]
    edges: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Report:
    title: str
    metrics: tuple[Metric, ...] = ()
    test_rows: int | None = None
    per_class: tuple[ClassScores, ...] = ()
    plots: Plots = field(default_factory=Plots)
    # reports/train.json: best epoch, epochs run, best validation values.
    training: tuple[tuple[str, float | int], ...] = ()
    experiments: Experiments = field(default_factory=Experiments)
    data: DataSummary | None = None
    research: Research | None = None
    pipeline: Pipeline | None = None
    # What could not be shown and why (a missing file, say), one sentence each.
    notes: tuple[str, ...] = ()
    # A line for the page's header (who made it, when): only what the caller gives, so that the
    # same inputs give the same bytes.
    subtitle: str = ""
