"""What clean and featurize both decide about a column: whether it is categorical, and the one
spelling of a category label."""

from __future__ import annotations

import pandas as pd


def is_categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def normalised_label(label: str) -> str:
    return " ".join(str(label).split()).casefold()
