"""Per-group quantization sensitivity, measured: how far the logits move when only one group is quantized.

A group is a backbone block or the head (:mod:`edgetl.quantize.groups`). The activation ranges are calibrated
once (onnxruntime's calibration cache), then the model is quantized once per group with every other group left
in floating point, and run on a few gate images. Groups are ranked by the decisions they flip (top-1 agreement
with FP32), then by their error: the mean squared difference to FP32 of the logits centred on each image's mean
(a shift shared by every class changes no decision; quantizing the head's output does little else), relative to
the FP32 centred logits' own mean square. The ranking is a property of the model and its data, so
every layout (OpenVINO's included) takes it from this ONNX Runtime simulation.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.quantize.calibration import CalibrationSet
from edgetl.quantize.evaluate import logits_of
from edgetl.quantize.groups import group_order, node_group
from edgetl.quantize.settings import QuantizationSpec


def model_groups(onnx_path: Path) -> list[str]:
    """The groups of a model's nodes, in graph order."""
    import onnx

    return group_order({node_group(n.name) for n in onnx.load(str(onnx_path), load_external_data=False).graph.node})


def rank_groups(
    onnx_path: Path,
    calib: CalibrationSet,
    images: np.ndarray,
    reference: np.ndarray,
    *,
    settings: QuantizationSpec,
    method: str,
    per_channel: bool,
    tensorrt: bool,
    ranges_cache: Path | None = None,
) -> list[dict[str, Any]]:
    """Every group with its agreement and error when quantized alone, most sensitive first.

    ``ranges_cache``: the activation ranges of ``method`` (onnxruntime's calibration cache), read when it exists
    and written otherwise; None calibrates here.
    """
    from edgetl.quantize.qdq import prepared_model, quantize_qdq

    centred = reference.astype(np.float64) - reference.mean(axis=1, keepdims=True)
    signal = float(np.mean(centred**2)) or 1.0
    results = []
    with tempfile.TemporaryDirectory(prefix="edgetl-sensitivity-") as tmp:
        prepared = prepared_model(onnx_path, Path(tmp) / "prepared.onnx")
        groups = [g for g in model_groups(prepared) if g != "graph"]
        cache = ranges_cache or Path(tmp) / "ranges.json"
        for group in groups:
            out = Path(tmp) / "one-group.onnx"
            quantize_qdq(
                onnx_path,
                out,
                calib,
                method=method,
                activations="int8" if tensorrt else settings.activations,
                symmetric_activations=tensorrt or settings.symmetric_activations,
                per_channel=per_channel,
                reduce_range=not tensorrt and settings.reduce_range,
                percentile=settings.percentile,
                float_groups=[g for g in groups if g != group],
                moving_average=settings.moving_average,
                tensorrt=tensorrt,
                ranges_cache=cache,
                prepared=prepared,
            )
            logits = logits_of(out, images, unfused=tensorrt)
            moved = logits.astype(np.float64) - logits.mean(axis=1, keepdims=True) - centred
            error = float(np.mean(moved**2)) / signal
            agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
            results.append({"group": group, "error": round(error, 6), "agreement": agreement})
    return sorted(results, key=lambda r: (r["agreement"], -r["error"]))
