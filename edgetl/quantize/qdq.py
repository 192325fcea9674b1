"""Static QDQ quantization with onnxruntime.quantization: the ONNX Runtime (u8 x s8) and TensorRT (symmetric s8)
layouts."""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from edgetl.files import atomic_path
from edgetl.onnx_safety import check_onnx_file
from edgetl.quantize.bias_correction import correct_biases, spread
from edgetl.quantize.calibration import CalibrationSet, Feeds
from edgetl.quantize.groups import node_group
from edgetl.quantize.histogram import STORE, histogram_ranges
from edgetl.quiet import prints_muted

__all__ = ["drop_unused_domains", "prepared_model", "quantize_qdq"]


# Histogram calibration (entropy, percentile) keeps every activation of every image it has been given until it
# builds its histograms: 300 MobileNetV2 images at 224 px took 18 GB. Fed in strides of at most this many images,
# the histograms are built stride by stride (edgetl.quantize.histogram), so memory stays at one stride's.
HISTOGRAM_STRIDE = 16


def prepared_model(onnx_in: Path, onnx_out: Path) -> Path:
    """onnxruntime's pre-processing (shape inference, graph optimisation) that quantize_static expects."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(check_onnx_file(onnx_in)), str(onnx_out), skip_symbolic_shape=True)
    return onnx_out


def quantize_qdq(
    onnx_in: Path,
    onnx_out: Path,
    calib: CalibrationSet,
    *,
    method: str = "minmax",
    activations: str = "uint8",
    weights: str = "int8",
    symmetric_activations: bool = False,
    per_channel: bool = True,
    reduce_range: bool = False,
    percentile: float = 99.999,
    fp32_blocks: int = 0,
    float_groups: Collection[str] = (),
    moving_average: bool = False,
    bias_correction: int = 0,
    tensorrt: bool = False,
    ranges_cache: Path | None = None,
    prepared: Path | None = None,
) -> dict[str, Any]:
    """Static QDQ quantization; returns the settings used (for artifact.json).

    ``weights``: int8 (symmetric, what every profile uses) or uint8 (for comparing layouts).
    ``fp32_blocks``: nodes of the first N backbone blocks are left in floating point.
    ``float_groups``: nodes of these groups (:func:`edgetl.quantize.groups.node_group`) are left in floating point.
    ``moving_average``: minmax ranges are a moving average of per-image ranges (constant 0.01).
    ``bias_correction``: correct each quantized layer's bias on this many calibration images (0: off); see
    ``edgetl.quantize.bias_correction``.
    ``tensorrt``: the layout TensorRT's explicit quantization reads on every version from 8.5: FP32 weights
    with their own Q/DQ pair, one Q/DQ pair per consumer, FP32 biases.
    ``ranges_cache``: a JSON file of activation ranges (onnxruntime's calibration cache): read when it exists,
    written otherwise, so several quantizations of one model with one recipe calibrate once.
    ``prepared``: the model already through :func:`prepared_model` (skips that step).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    floating = set(float_groups)
    with tempfile.TemporaryDirectory(prefix="edgetl-ort-") as tmp:
        if prepared is None:
            prepared = prepared_model(onnx_in, Path(tmp) / "prepared.onnx")
        excluded = [
            n.name
            for n in onnx.load(str(prepared), load_external_data=False).graph.node
            if ((g := node_group(n.name)).startswith("blocks.") and int(g.split(".")[1]) < fp32_blocks) or g in floating
        ]
        feeds = [{"input": b} for b in calib.batches()]
        if method != "minmax" and (ranges_cache is None or not ranges_cache.is_file()):
            ranges_cache = ranges_cache or Path(tmp) / "ranges.json"
            with prints_muted():
                histogram_ranges(
                    prepared,
                    feeds,
                    ranges_cache,
                    method=method,
                    symmetric=symmetric_activations,
                    percentile=percentile,
                    stride=HISTOGRAM_STRIDE,
                    store=None if calib.folder is None else calib.folder / STORE,
                )
        with prints_muted():
            quantize_static(
                str(prepared),
                str(onnx_out),
                Feeds(feeds),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                nodes_to_exclude=excluded,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8 if weights == "int8" else QuantType.QUInt8,
                calibrate_method=methods[method],
                extra_options={
                    "ActivationSymmetric": symmetric_activations,
                    "WeightSymmetric": weights == "int8",
                    "CalibPercentile": percentile,
                    "CalibMovingAverage": moving_average,
                    "CalibMovingAverageConstant": 0.01,
                    "CalibTensorRangeSymmetric": symmetric_activations,
                    **(
                        {"AddQDQPairToWeight": True, "DedicatedQDQPair": True, "QuantizeBias": False}
                        if tensorrt
                        else {}
                    ),
                },
                calibration_cache_path=ranges_cache,
            )
        corrected = (
            correct_biases(prepared, onnx_out, spread(calib.tensors, bias_correction), unfused=tensorrt)
            if bias_correction
            else None
        )
    if tensorrt:
        drop_unused_domains(onnx_out)
    return {
        "format": "QDQ",
        "method": method,
        "activations": activations,
        "weights": weights.replace("8", "7") + " (reduce_range)" if reduce_range else weights,
        "per_channel": per_channel,
        "symmetric_activations": symmetric_activations,
        "calibration_images": len(calib),
        "fp32_blocks": fp32_blocks,
        "float_groups": sorted(floating),
        "fp32_nodes": len(excluded),
        "moving_average": moving_average,
        "bias_correction": corrected,
        "layout": "tensorrt" if tensorrt else "onnxruntime",
    }


def drop_unused_domains(path: Path) -> None:
    """Remove opset imports of operator domains no node uses (the quantizer declares several)."""
    import onnx

    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
