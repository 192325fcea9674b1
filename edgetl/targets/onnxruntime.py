"""ONNX Runtime backend: FP32 and INT8 QDQ static quantization (onnxruntime.quantization)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgetl.calibration import CalibrationSet
from edgetl.config import ConfigError
from edgetl.errors import MissingInputError
from edgetl.onnx_safety import check_onnx_file
from edgetl.runtime.onnxruntime import OnnxRuntimeRunner
from edgetl.targets.base import Artifact, Runner, Target, block_index
from edgetl.targets.bias_correction import correct_biases, spread
from edgetl.targets.profiles import Precision, TargetProfile

MODEL_FILE = "model.onnx"

__all__ = ["MODEL_FILE", "OnnxRuntimeRunner", "OnnxRuntimeTarget", "quantize_qdq"]


class _Reader:
    """CalibrationDataReader over a CalibrationSet (batch 1)."""

    def __init__(self, calib: CalibrationSet, input_name: str) -> None:
        self._items = iter([{input_name: b} for b in calib.batches()])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


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
    moving_average: bool = False,
    bias_correction: int = 0,
    tensorrt: bool = False,
) -> dict[str, Any]:
    """Static QDQ quantization; returns the settings used (for artifact.json).

    ``weights``: int8 (symmetric, what every profile uses) or uint8 (for comparing layouts).
    ``fp32_blocks``: nodes of the first N backbone blocks are left in floating point.
    ``moving_average``: minmax ranges are a moving average of per-image ranges (constant 0.01).
    ``bias_correction``: correct each quantized layer's bias on this many calibration images (0: off); see
    ``edgetl.targets.bias_correction``.
    ``tensorrt``: the layout TensorRT's explicit quantization reads on every version from 8.5: FP32 weights
    with their own Q/DQ pair, one Q/DQ pair per consumer, FP32 biases.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory(prefix="edgetl-ort-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(check_onnx_file(onnx_in)), str(prepared), skip_symbolic_shape=True)
        excluded = [
            n.name
            for n in onnx.load(str(prepared), load_external_data=False).graph.node
            if (b := block_index(n.name)) is not None and b < fp32_blocks
        ]
        quantize_static(
            str(prepared),
            str(onnx_out),
            _Reader(calib, "input"),
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
                **({"AddQDQPairToWeight": True, "DedicatedQDQPair": True, "QuantizeBias": False} if tensorrt else {}),
            },
        )
        corrected = (
            correct_biases(prepared, onnx_out, spread(calib.tensors, bias_correction)) if bias_correction else None
        )
    return {
        "format": "QDQ",
        "method": method,
        "activations": activations,
        "weights": weights.replace("8", "7") + " (reduce_range)" if reduce_range else weights,
        "per_channel": per_channel,
        "symmetric_activations": symmetric_activations,
        "calibration_images": len(calib),
        "fp32_blocks": fp32_blocks,
        "fp32_nodes": len(excluded),
        "moving_average": moving_average,
        "bias_correction": corrected,
        "layout": "tensorrt" if tensorrt else "onnxruntime",
    }


class OnnxRuntimeTarget(Target):
    """ONNX Runtime on the CPU."""

    name: ClassVar[str] = "onnxruntime"
    package: ClassVar[str] = "onnxruntime"
    install_hint: ClassVar[str] = "pip install onnxruntime, or pick another target."

    def compile(
        self,
        onnx: Path,
        profile: TargetProfile,
        out: Path,
        calib: CalibrationSet | None,
        *,
        precision: Precision,
    ) -> Artifact:
        self.require()
        check_onnx_file(onnx)
        details: dict[str, Any] = {}
        if precision == "fp32":
            shutil.copyfile(onnx, out / MODEL_FILE)
        elif precision == "int8":
            if calib is None:
                raise MissingInputError("INT8 needs a calibration set; run 'edgetl calibrate' first.")
            q = profile.quantization
            details = quantize_qdq(
                onnx,
                out / MODEL_FILE,
                calib,
                method=q.method,
                activations=q.activations,
                symmetric_activations=q.symmetric_activations,
                per_channel=q.per_channel,
                reduce_range=q.reduce_range,
                percentile=q.percentile,
                fp32_blocks=q.fp32_blocks,
                moving_average=q.moving_average,
                bias_correction=q.bias_correction,
            )
        else:
            raise ConfigError(f"onnxruntime targets build fp32 or int8, not {precision}.")
        return self.artifact(profile, precision, MODEL_FILE, details)

    def load(self, artifact: Artifact, *, threads: int | None = None) -> Runner:
        return OnnxRuntimeRunner(artifact.model_path, threads=threads)
