"""TensorRT backend: the build host prepares the ONNX inputs (FP32, FP16, INT8 QDQ); engines are built on the
device that runs them (a Jetson or an x86 GPU box) with the TensorRT Python API, 8.5 to 11.x.

Engines run through the line runtime's :class:`~edgetl.runtime.tensorrt.TensorRTRunner` (device buffers from
cuda-python, no torch). Engine-building and running code only executes where TensorRT and an NVIDIA GPU exist;
elsewhere the target prepares the ONNX files and says what to run on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edgetl.config import ConfigError
from edgetl.errors import MissingInputError
from edgetl.files import atomic_path, link_or_copy, write_bytes_atomic
from edgetl.onnx_safety import check_onnx_file
from edgetl.quantize import CalibrationSet, GateData, quantize
from edgetl.quantize.fp16 import to_fp16_onnx
from edgetl.quantize.qdq_check import check_qdq
from edgetl.runtime.tensorrt import (
    FINGERPRINT_KEYS,
    EngineError,
    TensorRTRunner,
    check_engine,
    cuda_available,
    device_fingerprint,
    fingerprint_mismatch,
)
from edgetl.targets.base import Artifact, BackendUnavailable, Runner, Target
from edgetl.targets.profiles import Precision, TargetProfile, TensorRTSpec

ENGINE_FILE = "model.engine"
ONNX_FILES: dict[str, str] = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.qdq.onnx"}

__all__ = [
    "ENGINE_FILE",
    "FINGERPRINT_KEYS",
    "ONNX_FILES",
    "EngineError",
    "TensorRTRunner",
    "TensorRTTarget",
    "build_engine",
    "check_engine",
    "cuda_available",
    "device_fingerprint",
    "fingerprint_mismatch",
    "prepare_onnx",
    "weakly_typed",
]


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: Precision,
    spec: TensorRTSpec,
    timing_cache: Path | None = None,
) -> dict[str, Any]:
    """Parse ``onnx_path``, build a serialized engine and write it atomically; returns build facts.

    Weakly typed TensorRT (8.x, 10.x) gets FP16 / INT8 builder flags; strongly typed TensorRT (no such flags)
    takes its precision from the ONNX file itself (FP16 weights, or the Q/DQ scales of the INT8 model).
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = not weakly_typed()
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(check_onnx_file(onnx_path))):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = spec.builder_optimization_level
    if not strongly_typed and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left in floating point run in FP16
    if not strongly_typed and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if spec.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = spec.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    cache_in = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_in), False)

    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if shape[0] == -1:
        profile = builder.create_optimization_profile()
        chw = shape[1:]
        profile.set_shape(tensor.name, (spec.min_batch, *chw), (spec.opt_batch, *chw), (spec.max_batch, *chw))
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {onnx_path}; see the log lines above.")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(memoryview(serialized)))
    if timing_cache is not None:
        write_bytes_atomic(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return {
        "strongly_typed": strongly_typed,
        "input_shape": list(shape),
        "dynamic_batch": shape[0] == -1,
        "timing_cache_reused": bool(cache_in),
    }


class TensorRTTarget(Target):
    """TensorRT on an NVIDIA GPU or Jetson (GPU or DLA)."""

    name: ClassVar[str] = "tensorrt"
    package: ClassVar[str] = "tensorrt"
    compiles_without_backend: ClassVar[bool] = True
    install_hint: ClassVar[str] = (
        "TensorRT builds engines only on the device: run 'edgetl compile BUNDLE' on the Jetson or GPU box "
        "(JetPack or NVIDIA's TensorRT container provide it)."
    )

    def is_available(self) -> bool:
        """TensorRT importable and an NVIDIA GPU visible."""
        return super().is_available() and cuda_available()

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
        """Prepare the precision's ONNX file; build the engine too when TensorRT and a GPU are here."""
        details = prepare_onnx(onnx, profile, out, calib, precision=precision, gate=gate)
        onnx_file = ONNX_FILES[precision]
        if self.is_available():
            assert profile.tensorrt is not None
            source = out / ("model.onnx" if precision == "fp16" and weakly_typed() else onnx_file)
            details["engine_build"] = build_engine(
                source, out / ENGINE_FILE, precision=precision, spec=profile.tensorrt
            )
            details["engine"] = device_fingerprint(profile.tensorrt.dla_core)
            return self.artifact(profile, precision, ENGINE_FILE, details)
        details["engine"] = None
        return self.artifact(profile, precision, onnx_file, details)

    def load(self, artifact: Artifact, *, threads: int | None = None) -> Runner:
        recorded = artifact.details.get("engine")
        if not recorded:
            raise BackendUnavailable(
                f"{artifact.folder} holds the ONNX input but no TensorRT engine; engines are built on the device: "
                "run 'edgetl compile BUNDLE' there."
            )
        self.require()
        check_engine(recorded, artifact.folder or Path("."))
        return TensorRTRunner(artifact.model_path, dla_core=recorded.get("dla_core"))


def weakly_typed() -> bool:
    """True when this TensorRT takes precision from builder flags (8.x, 10.x), False when strongly typed."""
    import tensorrt as trt

    return hasattr(trt.BuilderFlag, "FP16")


def prepare_onnx(
    onnx: Path,
    profile: TargetProfile,
    out: Path,
    calib: CalibrationSet | None,
    *,
    precision: Precision,
    gate: GateData | None = None,
) -> dict[str, Any]:
    """Write the ONNX file(s) TensorRT builds a precision from into ``out``: the build host's share of the work.

    fp32: the exported model; fp16: it plus an FP16 copy (strongly typed TensorRT); int8: a QDQ model with
    symmetric int8 activations and per-channel symmetric weights, checked statically for the profile.
    """
    if precision not in profile.precisions:
        raise ConfigError(f"profile {profile.name} builds {', '.join(profile.precisions)}, not {precision}.")
    if precision in ("fp32", "fp16"):
        link_or_copy(onnx, out / ONNX_FILES["fp32"])
    if precision == "fp32":
        return {"onnx": ONNX_FILES["fp32"]}
    if precision == "fp16":
        to_fp16_onnx(onnx, out / ONNX_FILES["fp16"])
        return {"onnx": ONNX_FILES["fp16"], "weakly_typed_onnx": ONNX_FILES["fp32"]}
    if calib is None:
        raise MissingInputError("INT8 needs a calibration set; run 'edgetl calibrate' first.")
    details = quantize(
        onnx, calib, out=out / ONNX_FILES["int8"], layout="tensorrt", settings=profile.quantization, gate=gate
    ).details
    details["onnx"] = ONNX_FILES["int8"]
    details["qdq_check"] = check_qdq(out / ONNX_FILES["int8"], profile)
    return details
