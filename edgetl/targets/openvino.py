"""OpenVINO backend: IR in FP32 and FP16 (compressed weights), INT8 with nncf.quantize."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, ClassVar

from edgetl.calibration import CalibrationSet
from edgetl.errors import MissingInputError
from edgetl.onnx_safety import check_onnx_file
from edgetl.runtime.openvino import OpenVinoRunner
from edgetl.targets.base import Artifact, Runner, Target
from edgetl.targets.profiles import Precision, TargetProfile

MODEL_FILE = "model.xml"

__all__ = ["MODEL_FILE", "OpenVinoRunner", "OpenVinoTarget"]


class OpenVinoTarget(Target):
    """OpenVINO Runtime (Intel CPUs, and GPUs/NPUs by profile device)."""

    name: ClassVar[str] = "openvino"
    package: ClassVar[str] = "openvino"
    install_hint: ClassVar[str] = "pip install openvino nncf, or pick another target."

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
        import openvino as ov

        model = ov.convert_model(str(check_onnx_file(onnx)))
        details: dict[str, Any] = {"ir": "fp16 weights" if precision == "fp16" else precision}
        if precision == "int8":
            if calib is None:
                raise MissingInputError("INT8 needs a calibration set; run 'edgetl calibrate' first.")
            import nncf

            from edgetl.quiet import after_nncf_import

            after_nncf_import()

            preset = {
                "performance": nncf.QuantizationPreset.PERFORMANCE,
                "mixed": nncf.QuantizationPreset.MIXED,
            }[profile.quantization.preset]
            keep = profile.quantization.fp32_blocks
            ignored = nncf.IgnoredScope(patterns=[rf".*/blocks\.{b}/.*" for b in range(keep)], validate=False)
            model = nncf.quantize(
                model, nncf.Dataset(calib.batches()), preset=preset, subset_size=len(calib), ignored_scope=ignored
            )
            details["fp32_blocks"] = keep
            details.update(
                {
                    "tool": "nncf",
                    "nncf": importlib.metadata.version("nncf"),
                    "preset": profile.quantization.preset,
                    "calibration_images": len(calib),
                }
            )
        ov.save_model(model, str(out / MODEL_FILE), compress_to_fp16=precision == "fp16")
        return self.artifact(profile, precision, MODEL_FILE, details)

    def load(self, artifact: Artifact, *, threads: int | None = None) -> Runner:
        return OpenVinoRunner(artifact.model_path, artifact.device, threads=threads)
