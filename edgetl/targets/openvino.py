"""OpenVINO backend: IR in FP32 and FP16 (compressed weights), INT8 in the openvino layout of
:func:`edgetl.quantize.quantize` (nncf.quantize)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edgetl.errors import MissingInputError
from edgetl.onnx_safety import check_onnx_file
from edgetl.quantize import CalibrationSet, GateData, quantize
from edgetl.runtime.openvino import OpenVinoRunner, precision_options, require_bf16
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
        gate: GateData | None = None,
    ) -> Artifact:
        self.require()
        if precision == "int8":
            if calib is None:
                raise MissingInputError("INT8 needs a calibration set; run 'edgetl calibrate' first.")
            details = quantize(
                onnx, calib, out=out / MODEL_FILE, layout="openvino", settings=profile.quantization, gate=gate
            ).details
            return self.artifact(profile, precision, MODEL_FILE, details)
        reason = require_bf16(f"profile {profile.name}") if precision == "bf16" else None
        import openvino as ov

        model = ov.convert_model(str(check_onnx_file(onnx)))
        ov.save_model(model, str(out / MODEL_FILE), compress_to_fp16=precision == "fp16")
        details = {"ir": "fp16 weights" if precision == "fp16" else precision}
        if precision == "bf16":
            # The FP32 IR, run with OpenVINO's bf16 inference precision: gated like INT8 (its own gate, no ladder;
            # the fp32 artifact is the fallback).
            details.update({"ir": "fp32", "inference_precision": "bf16", "bf16": reason})
            if gate is not None:
                from edgetl.quantize.evaluate import logits_fn
                from edgetl.quantize.gate import gate_line, screened_gate

                scored = screened_gate(logits_fn(out / MODEL_FILE, precision="bf16"), gate, profile.quantization.gate)
                limits = profile.quantization.gate.model_dump()
                details["gate"] = {**scored, "limits": limits, "line": gate_line(scored)}
        return self.artifact(profile, precision, MODEL_FILE, details)

    def load(self, artifact: Artifact, *, threads: int | None = None) -> Runner:
        options = precision_options(artifact.details)
        return OpenVinoRunner(artifact.model_path, artifact.device, threads=threads, **options)

    def to_pixel_input(
        self, artifact: Artifact, folder: Path, spec: Any, pixels: Any, *, gate: Any = None, limits: Any = None
    ) -> dict[str, Any] | None:
        from edgetl.pixel_input import gate_passed, openvino_pixel_input, rewrite_checked

        options = precision_options(artifact.details)
        return rewrite_checked(
            folder / artifact.model_file,
            folder / "model.pixels.xml",
            lambda model, staged: openvino_pixel_input(model, staged, spec),
            lambda path: OpenVinoRunner(path, artifact.device, threads=None, **options),
            pixels,
            spec,
            gate=gate,
            limits=limits,
            float_passed=gate_passed(artifact),
            companions=(".bin",),
        )
