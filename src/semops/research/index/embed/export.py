"""Exporting all-MiniLM-L6-v2 to an ONNX graph, and quantizing it to int8, once per weights and
export settings; torch, transformers and onnx are imported only here, only when exporting."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from semops.errors import SemopsError
from semops.io import atomic_path, read_json, sha256_file, write_json
from semops.research.index.embed.base import EmbedderError

# What the exported file depends on besides the weights: a change here exports again (and
# changes the embedder's key, so cached vectors of the previous graph are not reused).
EXPORT_SETTINGS: dict[str, Any] = {
    "format": 1,
    "exporter": "torch.onnx.export(dynamo=False)",
    "opset": 17,
    "inputs": ["input_ids", "attention_mask"],
    "output": "last_hidden_state",
}
# int8: dynamic quantization (weights int8 per output channel, activations uint8 per tensor,
# quantized at run time) of these projections only. The inputs of the FFN output, value and
# attention-output projections carry outlier activations that one uint8 scale per tensor cannot
# resolve. Measured here on the evaluation corpus (2,971 passages, 175 queries) against fp32:
# every projection quantized, mean cosine 0.993 and nDCG@10 -0.015; these three, 0.998 and
# -0.005.
QUANTIZATION: dict[str, Any] = {
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "projections": ["attention/self/query", "attention/self/key", "intermediate/dense"],
}


def weights_sha256(weights: Path, stamp_dir: Path) -> str:
    """sha256 of the weights file, remembered beside the exported models by size and mtime:
    hashing 90 MB on every query would cost a quarter of a second."""
    stat = weights.stat()
    stamp = stamp_dir / "weights-sha256.json"
    try:
        known = read_json(stamp) if stamp.exists() else {}
    except SemopsError:  # a damaged stamp: hash again and rewrite it
        known = {}
    entry = known.get(str(weights), {})
    if entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = sha256_file(weights)
    known[str(weights)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    write_json(stamp, known)
    return digest


def export_fingerprint(weights_digest: str, precision: str) -> str:
    settings = {"export": EXPORT_SETTINGS, "weights": weights_digest}
    if precision == "int8":
        settings["quantization"] = QUANTIZATION
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def hide_broken_torchvision() -> None:
    """A torchvision wheel built for another torch fails on import (`operator torchvision::nms
    does not exist`), and transformers (so sentence-transformers too) imports torchvision
    whenever it is installed, although a text model never uses it: hide such a torchvision."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        sys.modules["torchvision"] = None  # type: ignore[assignment]


def export_onnx(model_path: Path, target: Path) -> None:
    """The BERT encoder as an fp32 ONNX graph: input_ids and attention_mask of any batch size and
    length in, the last hidden state out (pooling happens in numpy, as sentence-transformers
    pools). token_type_ids are all zero for single texts, so the graph makes them itself."""
    import torch

    hide_broken_torchvision()
    from transformers import BertModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # its load report lists the unused pooler weights
    transformers_logging.disable_progress_bar()
    bert = BertModel.from_pretrained(
        str(model_path), local_files_only=True, add_pooling_layer=False, attn_implementation="eager"
    ).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state

    example = torch.ones((2, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with atomic_path(target) as tmp, warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-side shape checks in transformers' mask code; the graph
        # is checked against sentence-transformers with padded batches in the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(),
            (example, example),
            str(tmp),
            input_names=EXPORT_SETTINGS["inputs"],
            output_names=[EXPORT_SETTINGS["output"]],
            dynamic_axes={name: axes for name in [*EXPORT_SETTINGS["inputs"], "last_hidden_state"]},
            opset_version=EXPORT_SETTINGS["opset"],
            dynamo=False,
            do_constant_folding=True,
        )


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the projections QUANTIZATION names (6 layers each)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    nodes = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[1] in weights
        and any(f"/{part}/" in node.name for part in QUANTIZATION["projections"])
    ]
    expected = 6 * len(QUANTIZATION["projections"])
    if len(nodes) != expected:
        raise EmbedderError(
            f"{source}: found {len(nodes)} projections to quantize, expected {expected} "
            "(the exported graph's node names changed); delete it to export again"
        )
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it suggests pre-processing, which we do not need, at WARNING
    try:
        with atomic_path(target) as tmp:
            quantize_dynamic(
                str(source),
                str(tmp),
                weight_type=getattr(QuantType, QUANTIZATION["weight_type"]),
                per_channel=QUANTIZATION["per_channel"],
                reduce_range=QUANTIZATION["reduce_range"],
                nodes_to_quantize=nodes,
                op_types_to_quantize=["MatMul"],
            )
    finally:
        root.setLevel(level)
