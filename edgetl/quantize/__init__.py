"""Quantization for every backend and for training: one entry, :func:`quantize`.

Layouts: ``onnxruntime`` (QDQ, uint8 activations x int8 weights, the x86 fast path), ``tensorrt`` (QDQ, symmetric
int8 activations and per-channel symmetric weights, what TensorRT's explicit quantization reads) and ``openvino``
(an INT8 IR from nncf.quantize). The calibration set, range setting, bias correction and the TensorRT QDQ check
live here too. Heavy libraries (onnxruntime, nncf, openvino) are imported inside the functions that use them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgetl.quantize.calibration import CalibrationSet, build_calibration, load_calibration, ranges_file
from edgetl.quantize.gate import GateData
from edgetl.quantize.settings import GateSpec, LadderSpec, QuantizationSpec

Layout = Literal["onnxruntime", "tensorrt", "openvino"]

__all__ = [
    "CalibrationSet",
    "GateData",
    "GateSpec",
    "LadderSpec",
    "Layout",
    "QuantizationSpec",
    "QuantizedModel",
    "build_calibration",
    "load_calibration",
    "quantize",
]


@dataclass
class QuantizedModel:
    """A quantized model file and how it was made (the ``details`` of artifact.json)."""

    path: Path
    layout: str
    details: dict[str, Any] = field(default_factory=dict)


def quantize(
    onnx_path: Path,
    calib: CalibrationSet,
    *,
    out: Path,
    layout: Layout,
    settings: QuantizationSpec,
    gate: GateData | None = None,
    float_groups: Collection[str] = (),
    method: str | None = None,
    per_channel: bool | None = None,
) -> QuantizedModel:
    """Quantize the FP32 model ``onnx_path`` with ``calib`` into the file ``out`` for ``layout``.

    ``settings``: the profile's quantization section. With ``gate`` (the images the accuracy gate scores on and
    the FP32 logits there) the model is checked against ``settings.gate`` and, when it fails, the ladder
    (:mod:`edgetl.quantize.ladder`) climbs until a rung passes; ``details`` then hold ``gate`` and ``ladder``.
    ``float_groups`` (backbone blocks such as ``blocks.0``, or the head) stay in floating point on top of
    ``settings.fp32_blocks``; ``method`` and ``per_channel`` override the settings' calibration recipe. The
    tensorrt layout always uses symmetric int8 activations and per-channel weights at full range.
    """

    with tempfile.TemporaryDirectory(prefix="edgetl-ranges-") as ranges:

        def once(
            path: Path,
            *,
            float_groups: Collection[str] = float_groups,
            method: str | None = method,
            per_channel: bool | None = per_channel,
            bias_correction: bool = True,
        ) -> dict[str, Any]:
            # Activation ranges depend on the calibration method only (the model calibrates in float whatever
            # stays float later): the ladder's rungs of one method calibrate once.
            cache = ranges_file(Path(ranges), method or settings.method)
            return _quantize_once(
                onnx_path,
                calib,
                path,
                layout,
                settings,
                float_groups=float_groups,
                method=method,
                per_channel=per_channel,
                ranges_cache=cache,
                bias_correction=bias_correction,
            )

        if gate is None:
            return QuantizedModel(out, layout, once(out))
        from edgetl.quantize.ladder import climb

        details = climb(
            onnx_path,
            calib,
            out=out,
            layout=layout,
            settings=settings,
            data=gate,
            quantize_once=once,
            ranges=Path(ranges),
        )
        return QuantizedModel(out, layout, details)


def _quantize_once(
    onnx_path: Path,
    calib: CalibrationSet,
    out: Path,
    layout: Layout,
    settings: QuantizationSpec,
    *,
    float_groups: Collection[str],
    method: str | None,
    per_channel: bool | None,
    ranges_cache: Path | None = None,
    bias_correction: bool = True,
) -> dict[str, Any]:
    groups = sorted(set(float_groups))
    if layout == "openvino":
        from edgetl.quantize.nncf_int8 import quantize_openvino

        return quantize_openvino(
            onnx_path, out, calib, preset=settings.preset, fp32_blocks=settings.fp32_blocks, float_groups=groups
        )
    from edgetl.quantize.qdq import quantize_qdq

    tensorrt = layout == "tensorrt"
    return quantize_qdq(
        onnx_path,
        out,
        calib,
        method=method or settings.method,
        activations="int8" if tensorrt else settings.activations,
        symmetric_activations=True if tensorrt else settings.symmetric_activations,
        per_channel=True if tensorrt else settings.per_channel if per_channel is None else per_channel,
        reduce_range=False if tensorrt else settings.reduce_range,
        percentile=settings.percentile,
        fp32_blocks=settings.fp32_blocks,
        float_groups=groups,
        moving_average=settings.moving_average,
        bias_correction=settings.bias_correction if bias_correction else 0,
        tensorrt=tensorrt,
        ranges_cache=ranges_cache,
    )
