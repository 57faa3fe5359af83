"""Exporting all-MiniLM-L6-v2 to an ONNX graph, and quantizing it to int8, once per weights and
export settings; torch, transformers and onnx are imported only here, only when exporting."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semops.errors import SemopsError
from semops.io import atomic_path, read_json, sha256_file, write_json
from semops.research.index.embed.base import EmbedderError

# What the exported file depends on besides the weights: a change here exports again (and
# changes the embedder's key, so cached vectors of the previous graph are not reused).
EXPORT_SETTINGS: dict[str, Any] = {
    "format": 2,
    "exporter": "torch.onnx.export(dynamo=False)",
    "opset": 17,
    "inputs": ["input_ids", "attention_mask"],
    "output": "last_hidden_state",
    # onnxruntime's BERT fusions, saved (sessions load them ready): EmbedLayerNormalization,
    # Attention (the mask as per-text lengths: texts are padded on the right), BiasGelu,
    # SkipLayerNormalization. opt_level 0: only these, so the file suits every execution provider.
    "optimizer": {"model_type": "bert", "num_heads": 12, "hidden_size": 384, "opt_level": 0},
}
# int8: dynamic quantization (weights int8 per output channel, activations uint8 with one scale
# per tensor, computed per batch at run time) of the fused graph's nodes named here; the others
# stay fp32. Each projection's cost, measured alone (1 - cosine to fp32, 400 chunks of the
# evaluation corpus): the FFN output projections of layers 0-2 0.0012/0.0006/0.0010 and the FFN
# inputs of layers 0-3 0.0003 each (their inputs carry outlier activations that one uint8 scale
# per tensor cannot resolve); the rest 0.00005-0.0002. All quantized: mean cosine 0.9946, 2.3x
# fp32's speed; these: 0.9986 (min 0.9972), 1.5x. u8s8 (QInt8 weights): AVX-512 VNNI, AVX-VNNI
# and AMX multiply without saturation; onnxruntime's guidance for AVX2 without VNNI (vpmaddubsw
# may saturate) is reduce_range, which cost 0.0007 of cosine here: not taken (see README).
QUANTIZATION: dict[str, Any] = {
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "attention_layers": [0, 1, 2, 3, 4, 5],
    "projections": {
        "attention/output/dense": [0, 1, 2, 3, 4, 5],
        "intermediate/dense": [4, 5],
        "output/dense": [3, 4, 5],
    },
}
# fp16 (for CUDA): every weight and activation in half precision, inputs and output as fp32.
FP16: dict[str, Any] = {"keep_io_types": True}


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
    elif precision == "fp16":
        settings["fp16"] = FP16
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
    """The BERT encoder as an fp32 ONNX graph with onnxruntime's BERT fusions: input_ids and
    attention_mask of any batch size and length in, the last hidden state out (pooling happens
    in numpy, as sentence-transformers pools). token_type_ids are all zero for single texts, so
    the graph makes them itself."""
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
        traced = tmp.with_name(tmp.name + ".traced.onnx")
        # The tracer warns about Python-side shape checks in transformers' mask code; the graph
        # is checked against sentence-transformers with padded batches in the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(),
            (example, example),
            str(traced),
            input_names=EXPORT_SETTINGS["inputs"],
            output_names=[EXPORT_SETTINGS["output"]],
            dynamic_axes={name: axes for name in [*EXPORT_SETTINGS["inputs"], "last_hidden_state"]},
            opset_version=EXPORT_SETTINGS["opset"],
            dynamo=False,
            do_constant_folding=True,
        )
        try:
            _fuse(traced, tmp)
        finally:
            traced.unlink(missing_ok=True)


def _fuse(source: Path, target: Path) -> None:
    """onnxruntime's BERT fusions of the traced graph, checked complete: a partial fusion (a new
    transformers that traces attention otherwise) would run, only slower."""
    from onnxruntime.transformers.optimizer import optimize_model

    settings = EXPORT_SETTINGS["optimizer"]
    expected = {"Attention": 6, "SkipLayerNormalization": 12, "BiasGelu": 6}
    with _quiet_loggers():
        model = optimize_model(str(source), **settings)
        fused = model.get_fused_operator_statistics()
        if any(fused.get(op, 0) != n for op, n in expected.items()):
            raise EmbedderError(f"{source}: onnxruntime fused {fused}, expected {expected}")
        model.save_model_to_file(str(target))


def to_fp16(source: Path, target: Path) -> None:
    """The fused fp32 graph in half precision (weights and activations), fp32 in and out."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    with _quiet_loggers(), atomic_path(target) as tmp:
        model.convert_float_to_float16(**FP16)
        model.save_model_to_file(str(tmp))


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """onnxruntime's tools log advice (pre-processing) and progress (fusion counts, saving) at
    INFO and WARNING, on the root logger and their own: we act on (or check) it ourselves."""
    loggers = [logging.getLogger(name) for name in ("", "onnx_model", "fusion_utils")]
    loggers += [logging.getLogger(name) for name in logging.root.manager.loggerDict
                if name.startswith(("onnxruntime", "fusion_", "onnx_model"))]  # fmt: skip
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the fused graph's nodes QUANTIZATION names."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    nodes = _quantized_nodes(graph)
    with _quiet_loggers(), atomic_path(target) as tmp:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=getattr(QuantType, QUANTIZATION["weight_type"]),
            per_channel=QUANTIZATION["per_channel"],
            reduce_range=QUANTIZATION["reduce_range"],
            nodes_to_quantize=nodes,
            op_types_to_quantize=["MatMul", "Attention"],
            # the fused ops' outputs have no inferred type: they are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _quantized_nodes(graph: Any) -> list[str]:
    """The names of the Attention and MatMul nodes QUANTIZATION names, all found or an error."""
    weights = {init.name for init in graph.initializer}
    attention = [node.name for node in graph.node if node.op_type == "Attention"]
    nodes = [attention[i] for i in QUANTIZATION["attention_layers"] if i < len(attention)]
    # "/layer.3/output/dense/" is the FFN's output, never ".../attention/output/dense/"
    wanted = [
        f"/layer.{layer}/{part}/"
        for part, layers in QUANTIZATION["projections"].items()
        for layer in layers
    ]
    nodes += [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[1] in weights
        and any(key in node.name for key in wanted)
    ]
    expected = len(QUANTIZATION["attention_layers"]) + sum(
        len(layers) for layers in QUANTIZATION["projections"].values()
    )
    if len(nodes) != expected:
        raise EmbedderError(
            f"found {len(nodes)} nodes to quantize, expected {expected} (the exported graph's "
            "node names changed); delete the model folder's .onnx files to export again"
        )
    return nodes
