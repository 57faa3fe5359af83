"""Models behind one interface: fit on (train, validation) (`training`), predict class
probabilities (`predict`), saved as a directory of safetensors + JSON (nothing is unpickled).

Each kind lives in its own module, imported only when used: torch to train `mlp` (its prediction
is numpy), scikit-learn to fit `gbdt` and to walk its trees at prediction (its compiled tree
predictor, built from the saved arrays); `logreg` is numpy throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semops.io import atomic_dir, dump_json

KINDS = ("mlp", "logreg", "gbdt")
WEIGHTS = "model.safetensors"
META = "model.json"
# The featurizer the model was trained on, with its input schema: the folder scores raw rows.
FEATURIZER = "featurizer.json"


@dataclass(frozen=True)
class Fitted:
    """A trained model as arrays (what is saved) plus the per-epoch history it produced."""

    kind: str
    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    history: list[dict[str, float]]
    best_epoch: int
    n_features: int
    n_classes: int
    device: str


def save(
    fitted: Fitted, directory: Path, extra: dict[str, Any], featurizer: dict[str, Any]
) -> None:
    """Save the weights, their settings and the featurizer, which makes the folder a model of
    raw rows (`semops.tabular.scoring`)."""
    from safetensors.numpy import save_file

    meta = {
        "kind": fitted.kind,
        "config": fitted.config,
        "n_features": fitted.n_features,
        "n_classes": fitted.n_classes,
        "device": fitted.device,
        **extra,
    }
    with atomic_dir(directory) as tmp:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in fitted.tensors.items()}, str(tmp / WEIGHTS)
        )
        (tmp / META).write_text(dump_json(meta))
        (tmp / FEATURIZER).write_text(dump_json(featurizer))
