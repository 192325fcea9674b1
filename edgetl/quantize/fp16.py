"""FP16 ONNX: weights and compute in half precision, inputs and outputs in FP32."""

from __future__ import annotations

from pathlib import Path

from edgetl.files import atomic_path
from edgetl.onnx_safety import check_onnx_file


def to_fp16_onnx(onnx_in: Path, onnx_out: Path) -> None:
    """FP16 weights and compute with FP32 inputs and outputs (strongly typed TensorRT reads precision from it)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(check_onnx_file(onnx_in))), keep_io_types=True)
    with atomic_path(onnx_out) as tmp:
        onnx.save(model, str(tmp))
