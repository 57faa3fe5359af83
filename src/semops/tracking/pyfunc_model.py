"""The MLflow Model's code ("models from code"): MLflow runs this file when it loads the model,
so nothing is unpickled. It scores raw rows with the trained model folder logged beside it
(`semops.tabular.scoring`), the code path of `semops predict`.

Nothing imports this module: `semops.tracking.mlmodel` names the file when it logs a model."""

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel


class RawRowsModel(PythonModel):
    """Raw rows (a DataFrame with the columns of the input schema) in; one `proba_<class>`
    column per class and `prediction` out. Rows the model cannot read (a column missing, a
    value of the wrong type) raise INVALID_PARAMETER_VALUE, which the scoring server answers
    with 400 and a message naming the column."""

    def load_context(self, context: Any) -> None:
        from semops.tabular.scoring import RawScorer
        from semops.tracking.mlmodel import MODEL_ARTIFACT

        self.scorer = RawScorer.load(Path(context.artifacts[MODEL_ARTIFACT]))

    # A DataFrame type hint: MLflow infers no signature from it (the logged one stands).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from semops.tabular.scoring import InputError

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        try:
            return self.scorer.score(model_input)
        except InputError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from exc


mlflow.models.set_model(RawRowsModel())
