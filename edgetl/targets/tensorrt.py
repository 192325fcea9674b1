"""TensorRT backend: the build host prepares the ONNX inputs (FP32, FP16, INT8 QDQ); engines are built on the
device that runs them (a Jetson or an x86 GPU box) with the TensorRT Python API, 8.5 to 11.x.

Device buffers are torch CUDA tensors (torch is already an edgetl dependency and ships with NVIDIA's
containers for Jetson and x86). Engine-building and running code only executes where TensorRT and an NVIDIA
GPU exist; elsewhere the target prepares the ONNX files and says what to run on the device.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgetl.calibration import CalibrationSet
from edgetl.config import ConfigError
from edgetl.errors import EdgetlError, MissingInputError
from edgetl.files import atomic_path, write_bytes_atomic
from edgetl.onnx_safety import check_onnx_file
from edgetl.targets.base import Artifact, BackendUnavailable, Runner, Target
from edgetl.targets.profiles import Precision, TargetProfile, TensorRTSpec

ENGINE_FILE = "model.engine"
ONNX_FILES: dict[str, str] = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.qdq.onnx"}
FINGERPRINT_KEYS = ("tensorrt", "gpu", "compute_capability", "platform", "dla_core")


class EngineError(EdgetlError, RuntimeError):
    """An engine that cannot be built or used here; the message says what to do."""


def cuda_available() -> bool:
    """True when torch sees an NVIDIA GPU (never raises)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def device_fingerprint(dla_core: int | None = None) -> dict[str, Any]:
    """What an engine is tied to: TensorRT version, GPU, compute capability, platform, DLA core."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {
        "tensorrt": str(trt.__version__),
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "platform": _platform(),
        "dla_core": dla_core,
    }


def _platform() -> str:
    """``machine`` plus the L4T release on a Jetson (``aarch64 L4T R36.4.0``)."""
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        first = release.read_text(encoding="utf-8", errors="replace").split(",")[:2]
        parts = [p.strip().lstrip("# ") for p in first]
        return f"{platform.machine()} L4T {parts[0]}.{parts[1].replace('REVISION: ', '')}".strip()
    return platform.machine()


def fingerprint_mismatch(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between an engine's fingerprint and this device's."""
    return [
        f"{key}: engine {recorded.get(key)!r}, here {current.get(key)!r}"
        for key in FINGERPRINT_KEYS
        if recorded.get(key) != current.get(key)
    ]


def to_fp16_onnx(onnx_in: Path, onnx_out: Path) -> None:
    """FP16 weights and compute with FP32 inputs and outputs, for strongly typed TensorRT (10.12 and later)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(check_onnx_file(onnx_in))), keep_io_types=True)
    with atomic_path(onnx_out) as tmp:
        onnx.save(model, str(tmp))


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


class TensorRTRunner(Runner):
    """A deserialized engine run with execute_async_v3 on torch CUDA buffers."""

    def __init__(self, engine_path: Path, *, dla_core: int | None) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            runtime.DLA_core = dla_core
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT {trt.__version__} cannot load {engine_path}; rebuild it on this device.")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input_name = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self.stream = torch.cuda.Stream()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to("cuda", non_blocking=True)
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError("TensorRT execute_async_v3 failed; see the log lines above.")
            out = y.cpu()
        self.stream.synchronize()
        return out.numpy()

    def close(self) -> None:
        del self.context
        del self.engine


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
    ) -> Artifact:
        """Prepare the precision's ONNX file; build the engine too when TensorRT and a GPU are here."""
        details = prepare_onnx(onnx, profile, out, calib, precision=precision)
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


def check_engine(recorded: dict[str, Any], folder: Path) -> None:
    """Refuse an engine built for another TensorRT, GPU, platform or DLA core."""
    differences = fingerprint_mismatch(recorded, device_fingerprint(recorded.get("dla_core")))
    if differences:
        raise EngineError(
            f"the engine in {folder} was built for another device ({'; '.join(differences)}); engines only run "
            "where they were built: rebuild it from the bundle's ONNX with 'edgetl compile BUNDLE'."
        )


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
) -> dict[str, Any]:
    """Write the ONNX file(s) TensorRT builds a precision from into ``out``: the build host's share of the work.

    fp32: the exported model; fp16: it plus an FP16 copy (strongly typed TensorRT); int8: a QDQ model with
    symmetric int8 activations and per-channel symmetric weights, checked statically for the profile.
    """
    from edgetl.targets.onnxruntime import quantize_qdq
    from edgetl.targets.qdq_check import check_qdq

    if precision not in profile.precisions:
        raise ConfigError(f"profile {profile.name} builds {', '.join(profile.precisions)}, not {precision}.")
    if precision in ("fp32", "fp16"):
        shutil.copyfile(onnx, out / ONNX_FILES["fp32"])
    if precision == "fp32":
        return {"onnx": ONNX_FILES["fp32"]}
    if precision == "fp16":
        to_fp16_onnx(onnx, out / ONNX_FILES["fp16"])
        return {"onnx": ONNX_FILES["fp16"], "weakly_typed_onnx": ONNX_FILES["fp32"]}
    if calib is None:
        raise MissingInputError("INT8 needs a calibration set; run 'edgetl calibrate' first.")
    q = profile.quantization
    details = quantize_qdq(
        onnx,
        out / ONNX_FILES["int8"],
        calib,
        method=q.method,
        activations="int8",
        symmetric_activations=True,
        per_channel=True,
        reduce_range=False,
        percentile=q.percentile,
        fp32_blocks=q.fp32_blocks,
        moving_average=q.moving_average,
        bias_correction=q.bias_correction,
        tensorrt=True,
    )
    _drop_unused_domains(out / ONNX_FILES["int8"])
    details["onnx"] = ONNX_FILES["int8"]
    details["qdq_check"] = check_qdq(out / ONNX_FILES["int8"], profile)
    return details


def _drop_unused_domains(path: Path) -> None:
    """Remove opset imports of operator domains no node uses (the quantizer declares several)."""
    import onnx

    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
