"""MLP inference in numpy: the saved network is Linear layers with ReLU between them (dropout is
the identity at inference), so evaluating it needs no torch import (measured: importing torch
cost the evaluate stage 1-3.5 s)."""

from __future__ import annotations

from typing import Any

import numpy as np

from semops.tabular.metrics import softmax


class MlpClassifier:
    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.layers = layers

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        hidden = features.astype(np.float32)
        for i, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight.T + bias
            if i < len(self.layers) - 1:
                np.maximum(hidden, 0, out=hidden)
        return softmax(hidden.astype(np.float64))


def from_tensors(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> MlpClassifier:
    """Layers in order of their index in the torch Sequential ("0.weight", "3.weight", ...)."""
    indices = sorted({int(name.split(".")[0]) for name in tensors})
    return MlpClassifier([(tensors[f"{i}.weight"], tensors[f"{i}.bias"]) for i in indices])
