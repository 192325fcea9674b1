"""Static checks of a QDQ ONNX model against what a TensorRT profile parses (run on the build host)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import EdgetlError
from edgetl.onnx_safety import check_onnx_file
from edgetl.targets.profiles import TargetProfile

# ONNX operators TensorRT's parser handles (onnx-tensorrt operators.md, 8.5 to 10.x) that edgetl's backbones
# and their QDQ forms use. An operator outside this list is reported, not guessed about.
TENSORRT_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv",
        "DequantizeLinear", "Div", "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "GlobalMaxPool",
        "HardSigmoid", "HardSwish", "Identity", "MatMul", "MaxPool", "Mul", "Pad", "QuantizeLinear",
        "ReduceMean", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Squeeze", "Sub",
        "Transpose", "Unsqueeze",
    }
)  # fmt: skip

_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}


class QdqCheckError(EdgetlError, ValueError):
    """A QDQ model TensorRT would reject or quantize differently; the message lists every problem."""


def check_qdq(path: Path, profile: TargetProfile) -> dict[str, Any]:
    """Check zero points, per-channel weight axes, operator set and opset; raise QdqCheckError on problems.

    Returns a summary (counts) for the bundle manifest.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(check_onnx_file(path)))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems: list[str] = []

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > profile.opset:
        problems.append(f"opset {opset} is above {profile.opset}, the highest TensorRT {_trt(profile)} parses")
    for domain in sorted({n.domain for n in graph.node} - {"", "ai.onnx"}):
        problems.append(f"custom operator domain {domain!r}: TensorRT needs a plugin for it")

    unknown = sorted({n.op_type for n in graph.node} - TENSORRT_OPS)
    if unknown:
        problems.append(f"operators outside the TensorRT list edgetl checks: {', '.join(unknown)}")

    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    if not quantize:
        problems.append("no QuantizeLinear node: this is not a QDQ model")
    per_channel = 0
    for node in quantize + dequantize:
        zero_name = node.input[2] if len(node.input) > 2 else ""
        if not zero_name or zero_name not in inits:
            if node.op_type == "QuantizeLinear":
                problems.append(f"{node.name}: no int8 zero point (QuantizeLinear would produce uint8)")
            continue
        zero = numpy_helper.to_array(inits[zero_name])
        if zero.dtype != np.int8:
            problems.append(f"{node.name}: zero point is {zero.dtype}, TensorRT needs int8")
        elif np.any(zero != 0):
            problems.append(f"{node.name}: zero point {zero.ravel()[:4].tolist()} is not 0 (asymmetric)")
        if node.op_type != "DequantizeLinear":
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        for consumer in consumers.get(node.output[0], []):
            if consumer.op_type in _WEIGHT_AXIS and len(consumer.input) > 1 and consumer.input[1] == node.output[0]:
                weight = _weight_shape(node, inits, producers)
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                want = _WEIGHT_AXIS[consumer.op_type]
                if scale is None or scale.ndim != 1 or weight is None or scale.shape[0] != weight[want]:
                    problems.append(f"{consumer.name}: weights are not quantized per output channel")
                elif axis != want:
                    problems.append(f"{consumer.name}: weight scales on axis {axis}, expected {want}")
                else:
                    per_channel += 1
    if problems:
        raise QdqCheckError(f"{path} is not a TensorRT-ready QDQ model:\n  - " + "\n  - ".join(problems))
    return {
        "opset": opset,
        "quantize_nodes": len(quantize),
        "dequantize_nodes": len(dequantize),
        "per_channel_weights": per_channel,
        "operators": sorted({n.op_type for n in graph.node}),
    }


def _weight_shape(dq: Any, inits: dict[str, Any], producers: dict[str, Any]) -> list[int] | None:
    """Shape of the weight behind a weight DequantizeLinear (int8 initializer, or FP32 through a Q node)."""
    source = dq.input[0]
    if source in inits:
        return list(inits[source].dims)
    q = producers.get(source)
    if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits:
        return list(inits[q.input[0]].dims)
    return None


def _trt(profile: TargetProfile) -> str:
    return profile.tensorrt.version if profile.tensorrt else "?"
