"""TensorRT profiles, the QDQ model and its static checker, engine fingerprints; engine tests need a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgetl.config import ConfigError
from edgetl.quantize.qdq_check import QdqCheckError, check_qdq
from edgetl.targets import Artifact, BackendUnavailable, get_target
from edgetl.targets.profiles import TargetProfile, available_profiles, resolve_profile
from edgetl.targets.tensorrt import TensorRTTarget, fingerprint_mismatch

TRT_PROFILES = ["jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx", "nvidia-gpu"]
needs_gpu = pytest.mark.skipif(
    not TensorRTTarget().is_available(),
    reason="TensorRT engines are built and run only where TensorRT and an NVIDIA GPU exist (a Jetson or GPU box)",
)


def test_tensorrt_profiles_state_their_assumptions():
    profiles = available_profiles()
    for name in TRT_PROFILES:
        p = profiles[name]
        assert p.backend == "tensorrt" and p.tensorrt is not None
        assert p.tensorrt.version and p.tensorrt.workspace_mb > 0 and p.opset >= 17
        assert p.quantization.activations == "int8" and p.quantization.symmetric_activations
        assert p.quantization.per_channel and not p.quantization.reduce_range
        assert (p.tensorrt.jetpack is not None) == (p.tensorrt.platform == "jetson")
    assert resolve_profile("jetson").name == "jetson-orin-nano"
    assert resolve_profile("tensorrt").name == "nvidia-gpu"
    assert profiles["jetson-agx-orin"].tensorrt.dla_core == 0  # type: ignore[union-attr]
    assert "fp32" not in profiles["jetson-agx-orin"].precisions  # DLA runs FP16 / INT8 only


def test_tensorrt_profile_needs_int8_activations_and_engine_settings():
    with pytest.raises(ValueError, match="tensorrt"):
        TargetProfile(name="x", backend="tensorrt")
    with pytest.raises(ValueError, match="int8"):
        TargetProfile.model_validate(
            {"name": "x", "backend": "tensorrt", "tensorrt": {"version": "10.3", "platform": "x86_64"}}
        )
    with pytest.raises(ValueError, match="min_batch"):
        TargetProfile.model_validate(
            {
                "name": "x",
                "backend": "tensorrt",
                "quantization": {"activations": "int8"},
                "tensorrt": {"version": "10.3", "platform": "x86_64", "min_batch": 4, "max_batch": 2},
            }
        )


def test_unknown_target_lists_the_jetson_names():
    with pytest.raises(ConfigError, match="jetson"):
        resolve_profile("jetsn")


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def test_qdq_model_is_symmetric_int8_per_channel(trt_run):
    """Every zero point is int8 0; every quantized Conv weight has one scale per output channel."""
    _, run, _ = trt_run
    artifact = Artifact.read(run.target("jetson-orin-nano", "int8"))
    assert artifact.model_file == "model.qdq.onnx" and artifact.details["engine"] is None
    model = onnx.load(str(artifact.model_path))
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert nodes
    for node in nodes:
        zero = _initializer(model, node.input[2])
        assert zero.dtype == np.int8 and not zero.any(), node.name
    summary = artifact.details["qdq_check"]
    assert summary["per_channel_weights"] > 0 and summary["opset"] <= 20
    assert {d.domain for d in model.opset_import} <= {"", "ai.onnx"}


def test_checker_rejects_the_cpu_profiles_uint8_model(trt_run):
    """The ONNX Runtime CPU INT8 model (uint8, asymmetric activations) is not a TensorRT model."""
    config, run, _ = trt_run
    from edgetl.pipeline import stage_compile

    stage_compile(config, run, resolve_profile("cpu"))
    with pytest.raises(QdqCheckError, match="zero point") as info:
        check_qdq(run.target("cpu", "int8") / "model.onnx", resolve_profile("jetson"))
    assert "model.onnx" in str(info.value)


def test_checker_rejects_opset_and_operators_beyond_the_profile(trt_run, tmp_path: Path):
    _, run, _ = trt_run
    source = run.target("jetson-orin-nano", "int8") / "model.qdq.onnx"
    low = resolve_profile("jetson-xavier-nx").model_copy(update={"opset": 11})
    with pytest.raises(QdqCheckError, match=r"opset \d+ is above 11"):
        check_qdq(source, low)
    model = onnx.load(str(source))
    model.graph.node[-1].op_type = "NonMaxSuppression"
    odd = tmp_path / "odd.onnx"
    onnx.save(model, str(odd))
    with pytest.raises(QdqCheckError, match="NonMaxSuppression"):
        check_qdq(odd, resolve_profile("jetson"))


def test_fingerprint_mismatch_names_every_difference():
    engine = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "platform": "aarch64", "dla_core": None}
    assert fingerprint_mismatch(engine, dict(engine)) == []
    here = dict(engine, tensorrt="10.7.0", gpu="NVIDIA H100", compute_capability="9.0")
    diffs = fingerprint_mismatch(engine, here)
    assert len(diffs) == 3 and any("10.3.0" in d and "10.7.0" in d for d in diffs)


def test_loading_an_artifact_without_engine_says_build_on_device(trt_run):
    _, run, _ = trt_run
    artifact = Artifact.read(run.target("jetson-orin-nano", "fp16"))
    with pytest.raises(BackendUnavailable, match="edgetl compile"):
        get_target("tensorrt").load(artifact)


def _lean_runtime():
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_lean_bindings"):
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    return None


@pytest.mark.skipif(_lean_runtime() is None, reason="no TensorRT Python bindings (lean runtime) installed")
def test_runner_uses_names_the_installed_tensorrt_runtime_has():
    """The runtime half of the API (the lean bindings install without a GPU) has every name the code calls."""
    trt = _lean_runtime()
    assert trt is not None
    for cls, names in {
        trt.Runtime: ["deserialize_cuda_engine", "DLA_core"],
        trt.ICudaEngine: [
            "num_io_tensors",
            "get_tensor_name",
            "get_tensor_mode",
            "get_tensor_shape",
            "get_tensor_dtype",
            "create_execution_context",
        ],
        trt.IExecutionContext: ["set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3"],
    }.items():
        missing = [n for n in names if not hasattr(cls, n)]
        assert not missing, f"{cls.__name__} lacks {missing}"
    assert hasattr(trt.TensorIOMode, "INPUT") and hasattr(trt.TensorIOMode, "OUTPUT")
    assert hasattr(trt.MemoryPoolType, "WORKSPACE") and hasattr(trt.DeviceType, "DLA")
    assert hasattr(trt.BuilderFlag, "GPU_FALLBACK")
    assert trt.nptype(trt.DataType.FLOAT) is np.float32


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python is not installed")
def test_runner_uses_names_the_installed_cuda_python_has():
    """The TensorRT runner's device buffers come from cuda-python, not torch: every call it makes exists."""
    from edgetl.runtime.tensorrt import cuda_available, cuda_call, cudart

    runtime = cudart()
    for name in (
        "cudaGetDeviceCount",
        "cudaGetDevice",
        "cudaGetDeviceProperties",
        "cudaMalloc",
        "cudaFree",
        "cudaMemcpyAsync",
        "cudaStreamCreate",
        "cudaStreamSynchronize",
        "cudaStreamDestroy",
    ):
        assert hasattr(runtime, name), name
    kinds = runtime.cudaMemcpyKind
    assert hasattr(kinds, "cudaMemcpyHostToDevice") and hasattr(kinds, "cudaMemcpyDeviceToHost")
    assert cuda_call((runtime.cudaError_t.cudaSuccess, 3), "probe") == 3
    with pytest.raises(Exception, match="CUDA probe failed"):
        cuda_call((runtime.cudaError_t.cudaErrorInvalidValue,), "probe")
    assert isinstance(cuda_available(), bool)  # False without a driver, never an exception


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_gpu
def test_engine_builds_runs_and_matches_onnx(trt_run, tmp_path: Path):
    """On a GPU box: build every precision, run it, and compare with the bundle's references."""
    from edgetl.bundle import compile_bundle

    _, run, _ = trt_run
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(run.root / "bundle" / "jetson-orin-nano", bundle)
    result = compile_bundle(bundle)
    assert result["verify"]["passed"]
    for precision in ("fp32", "fp16", "int8"):
        assert (bundle / "engines" / precision / "model.engine").is_file()
        assert (bundle / "triton" / f"tiny_trt_{precision}" / "1" / "model.plan").is_file()


def test_engine_from_another_device_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The fingerprint check itself (the device query needs a GPU; here it answers as an H100 box would)."""
    import edgetl.runtime.tensorrt as trt_module

    built_on = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "platform": "aarch64"}
    here = {"tensorrt": "10.13.0", "gpu": "NVIDIA H100", "compute_capability": "9.0", "platform": "x86_64"}
    monkeypatch.setattr(trt_module, "device_fingerprint", lambda dla_core=None: {**here, "dla_core": dla_core})
    with pytest.raises(trt_module.EngineError, match="rebuild it from the bundle's ONNX") as info:
        trt_module.check_engine({**built_on, "dla_core": None}, tmp_path)
    assert "Orin" in str(info.value) and "H100" in str(info.value)
    trt_module.check_engine({**here, "dla_core": None}, tmp_path)  # same device: accepted
