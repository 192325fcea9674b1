"""ONNX Runtime backend: FP32, and INT8 QDQ in the onnxruntime layout of :func:`edgetl.quantize.quantize`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edgetl.config import ConfigError
from edgetl.errors import MissingInputError
from edgetl.files import link_or_copy
from edgetl.onnx_safety import check_onnx_file
from edgetl.quantize import CalibrationSet, GateData, quantize
from edgetl.runtime.onnxruntime import OnnxRuntimeRunner
from edgetl.targets.base import Artifact, Runner, Target
from edgetl.targets.profiles import Precision, TargetProfile

MODEL_FILE = "model.onnx"

__all__ = ["MODEL_FILE", "OnnxRuntimeRunner", "OnnxRuntimeTarget"]


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
        gate: GateData | None = None,
    ) -> Artifact:
        self.require()
        check_onnx_file(onnx)
        details: dict[str, Any] = {}
        if precision == "fp32":
            link_or_copy(onnx, out / MODEL_FILE)
        elif precision == "int8":
            if calib is None:
                raise MissingInputError("INT8 needs a calibration set; run 'edgetl calibrate' first.")
            details = quantize(
                onnx, calib, out=out / MODEL_FILE, layout="onnxruntime", settings=profile.quantization, gate=gate
            ).details
        else:
            raise ConfigError(f"onnxruntime targets build fp32 or int8, not {precision}.")
        return self.artifact(profile, precision, MODEL_FILE, details)

    def load(self, artifact: Artifact, *, threads: int | None = None) -> Runner:
        return OnnxRuntimeRunner(artifact.model_path, threads=threads)

    def to_pixel_input(
        self, artifact: Artifact, folder: Path, spec: Any, pixels: Any, *, gate: Any = None, limits: Any = None
    ) -> dict[str, Any] | None:
        from edgetl.pixel_input import gate_passed, onnx_pixel_input, rewrite_checked

        return rewrite_checked(
            folder / artifact.model_file,
            folder / "model.pixels.onnx",
            lambda model, staged: onnx_pixel_input(model, staged, spec),
            lambda path: OnnxRuntimeRunner(path, threads=None),
            pixels,
            spec,
            gate=gate,
            limits=limits,
            float_passed=gate_passed(artifact),
        )
