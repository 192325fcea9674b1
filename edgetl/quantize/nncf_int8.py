"""INT8 OpenVINO IR with nncf.quantize (the OpenVINO layout)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Collection
from pathlib import Path
from typing import Any

from edgetl.onnx_safety import check_onnx_file
from edgetl.quantize.calibration import CalibrationSet
from edgetl.quantize.groups import openvino_pattern


def quantize_openvino(
    onnx_in: Path,
    ir_out: Path,
    calib: CalibrationSet,
    *,
    preset: str = "performance",
    fp32_blocks: int = 0,
    float_groups: Collection[str] = (),
) -> dict[str, Any]:
    """Convert ``onnx_in`` to OpenVINO, quantize it with NNCF and save the IR as ``ir_out``; returns the settings.

    ``fp32_blocks`` / ``float_groups`` stay in floating point (an nncf.IgnoredScope).
    """
    import nncf
    import openvino as ov

    from edgetl.quiet import after_nncf_import

    after_nncf_import()
    model = ov.convert_model(str(check_onnx_file(onnx_in)))
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    groups = [f"blocks.{b}" for b in range(fp32_blocks)] + sorted(set(float_groups))
    ignored = nncf.IgnoredScope(patterns=[openvino_pattern(g) for g in groups], validate=False)
    model = nncf.quantize(
        model, nncf.Dataset(calib.batches()), preset=presets[preset], subset_size=len(calib), ignored_scope=ignored
    )
    ov.save_model(model, str(ir_out), compress_to_fp16=False)
    return {
        "ir": "int8",
        "fp32_blocks": fp32_blocks,
        "float_groups": sorted(set(float_groups)),
        "tool": "nncf",
        "nncf": importlib.metadata.version("nncf"),
        "preset": preset,
        "calibration_images": len(calib),
    }
