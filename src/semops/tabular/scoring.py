"""Scoring raw rows: a trained model's folder holds the input schema, the fitted featurizer and
the weights, so rows as downloaded (or as a user has them) go through the clean stage's rules,
the featurizer and the model in one call. `semops predict` and the MLflow Model both use this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semops.config.schema import ValidRange
from semops.errors import SemopsError
from semops.io import read_json
from semops.tabular.clean import clean_column
from semops.tabular.evaluation import predicted_labels
from semops.tabular.features import feature_columns
from semops.tabular.models import FEATURIZER
from semops.tabular.models.predict import Classifier, load

if TYPE_CHECKING:
    import pandas as pd

PREDICTION = "prediction"
PREDICTION_THRESHOLD = 0.5
PROBABILITY_PREFIX = "proba_"


class InputError(SemopsError):
    """Rows a model cannot score: a column is missing or holds a value of the wrong type."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


def check_columns(names: list[str], schema: dict[str, Any]) -> None:
    """Fail naming the first column the model reads that `names` lacks."""
    wanted = [column["name"] for column in schema["columns"]]
    present = set(names)
    for name in wanted:
        if name not in present:
            raise InputError(
                name, f"column {name!r} is missing; the model reads: {', '.join(wanted)}"
            )


def clean_input(raw: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Raw rows cleaned as the clean stage cleaned the training rows (types, valid ranges set
    missing). A column that was numbers in the raw data must hold numbers (or text that reads as
    one): anything else fails, naming the column and the value, where training never saw such a
    value; a column that was text in the raw data reads unparseable values as missing, as the
    clean stage did."""
    import pandas as pd

    check_columns([str(c) for c in raw.columns], schema)
    cleaned: dict[str, pd.Series] = {}
    for column in schema["columns"]:
        name, kind = column["name"], column["kind"]
        values = raw[name]
        if kind == "numeric" and raw_numbers(column["dtype"]):
            check_numeric(name, values)
        bounds = ValidRange(column["min"], column["max"]) if kind == "numeric" else None
        cleaned[name], _ = clean_column(values, kind, bounds)
    return pd.DataFrame(cleaned, index=raw.index)


def raw_numbers(dtype: str) -> bool:
    """Whether a raw column of this dtype (as the input schema records it) held numbers, not
    true/false."""
    import pandas as pd

    try:
        parsed = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return pd.api.types.is_numeric_dtype(parsed) and not pd.api.types.is_bool_dtype(parsed)


def check_numeric(name: str, values: pd.Series) -> None:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype):
        raise InputError(name, f"column {name!r} is numeric; got true/false values")
    if pd.api.types.is_numeric_dtype(values.dtype):
        return
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna() & (values.astype("string").str.strip() != "")
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            name,
            f"column {name!r} is numeric; row {values.index[position]} holds "
            f"{values.iloc[position]!r}",
        )


def feature_matrix(cleaned: pd.DataFrame, spec: dict[str, Any]) -> np.ndarray:
    """The float32 feature matrix, columns in the order the model was trained on."""
    columns = feature_columns(cleaned, spec)
    matrix = np.empty((len(cleaned), len(spec["features"])), dtype=np.float32)
    for j, name in enumerate(spec["features"]):
        matrix[:, j] = columns[name]
    return matrix


def prediction_columns(classes: list[str]) -> list[str]:
    return [f"{PROBABILITY_PREFIX}{name}" for name in classes] + [PREDICTION]


def prediction_frame(proba: np.ndarray, classes: list[str], index: Any = None) -> pd.DataFrame:
    """One probability column per class (`proba_<class>`) and the predicted class."""
    import pandas as pd

    frame = pd.DataFrame(
        {f"{PROBABILITY_PREFIX}{name}": proba[:, k] for k, name in enumerate(classes)}, index=index
    )
    frame[PREDICTION] = np.asarray(classes, dtype=object)[predicted_index(proba)]
    return frame


def predicted_index(proba: np.ndarray) -> np.ndarray:
    """The predicted class of each row, by evaluate's rule at its default threshold: binary,
    the positive class from probability PREDICTION_THRESHOLD up; else the most probable.
    (evaluate.threshold sets the cut-off of the reported metrics only; the probabilities
    serve any other.)"""
    return predicted_labels(proba, PREDICTION_THRESHOLD)


@dataclass(frozen=True)
class RawScorer:
    """A trained model folder loaded for scoring raw rows."""

    classifier: Classifier
    spec: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> RawScorer:
        path = directory / FEATURIZER
        if not path.exists():
            raise SemopsError(
                f"{directory}: not a trained model folder (no {FEATURIZER}); train one with "
                "`make run`, or give a models:/ URI"
            )
        classifier, _ = load(directory)
        return cls(classifier, read_json(path))

    @property
    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.spec["input"]
        return schema

    @property
    def classes(self) -> list[str]:
        classes: list[str] = self.spec["target"]["classes"]
        return classes

    def predict_proba(self, raw: pd.DataFrame) -> np.ndarray:
        return self.classifier.predict_proba(
            feature_matrix(clean_input(raw, self.schema), self.spec)
        )

    def score(self, raw: pd.DataFrame) -> pd.DataFrame:
        return prediction_frame(self.predict_proba(raw), self.classes, index=raw.index)
