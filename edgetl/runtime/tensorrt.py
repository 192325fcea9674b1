"""TensorRT runner on the device: a deserialized engine run with ``execute_async_v3`` on device buffers from
cuda-python (``cuda.bindings.runtime``, as NVIDIA's own samples do), so a Jetson needs JetPack's TensorRT and a
few small wheels, no torch.

An engine only runs where it was built: its fingerprint (TensorRT version, GPU, compute capability, platform,
DLA core) is recorded at build time and checked here before it is loaded.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import EdgetlError
from edgetl.runtime.runner import BackendUnavailable, Runner, has_package, static_dims

FINGERPRINT_KEYS = ("tensorrt", "gpu", "compute_capability", "platform", "dla_core")
INSTALL_HINT = (
    "TensorRT comes with JetPack or NVIDIA's TensorRT containers; device buffers need cuda-python "
    "matching the device's CUDA (JetPack 6: pip install 'cuda-python>=12.6,<13')"
)


class EngineError(EdgetlError, RuntimeError):
    """An engine that cannot be built or used here; the message says what to do."""


def cudart() -> Any:
    """The CUDA runtime bindings of cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed here; {INSTALL_HINT}.") from exc
    return runtime


def cuda_call(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple; raise EngineError on a CUDA error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise EngineError(f"CUDA {what} failed: {getattr(error, 'name', error)}; check the driver and the GPU.")
    return values[0] if len(values) == 1 else values or None


def cuda_available() -> bool:
    """True when cuda-python sees at least one NVIDIA GPU (never raises)."""
    if not has_package("cuda"):
        return False
    try:
        error, count = cudart().cudaGetDeviceCount()
    except Exception:  # a broken driver install raises from the bindings' loader
        return False
    return int(error) == 0 and count > 0


def _platform() -> str:
    """``machine`` plus the L4T release on a Jetson (``aarch64 L4T R36.4.0``)."""
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        first = release.read_text(encoding="utf-8", errors="replace").split(",")[:2]
        parts = [p.strip().lstrip("# ") for p in first]
        return f"{platform.machine()} L4T {parts[0]}.{parts[1].replace('REVISION: ', '')}".strip()
    return platform.machine()


def device_fingerprint(dla_core: int | None = None) -> dict[str, Any]:
    """What an engine is tied to: TensorRT version, GPU, compute capability, platform, DLA core."""
    import tensorrt as trt

    runtime = cudart()
    device = cuda_call(runtime.cudaGetDevice(), "cudaGetDevice")
    props = cuda_call(runtime.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {
        "tensorrt": str(trt.__version__),
        "gpu": name.split("\x00")[0].strip(),
        "compute_capability": f"{props.major}.{props.minor}",
        "platform": _platform(),
        "dla_core": dla_core,
    }


def fingerprint_mismatch(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between an engine's fingerprint and this device's."""
    return [
        f"{key}: engine {recorded.get(key)!r}, here {current.get(key)!r}"
        for key in FINGERPRINT_KEYS
        if recorded.get(key) != current.get(key)
    ]


def check_engine(recorded: dict[str, Any], folder: Path) -> None:
    """Refuse an engine built for another TensorRT, GPU, platform or DLA core."""
    differences = fingerprint_mismatch(recorded, device_fingerprint(recorded.get("dla_core")))
    if differences:
        raise EngineError(
            f"the engine in {folder} was built for another device ({'; '.join(differences)}); engines only run "
            "where they were built: rebuild it from the bundle's ONNX with 'edgetl compile BUNDLE'."
        )


def require_tensorrt() -> None:
    """Raise BackendUnavailable unless TensorRT, cuda-python and a GPU are here."""
    if not has_package("tensorrt"):
        raise BackendUnavailable(f"TensorRT is not installed here; {INSTALL_HINT}.")
    cudart()
    if not cuda_available():
        raise BackendUnavailable("no NVIDIA GPU is visible here; run TensorRT engines on the device that built them.")


class TensorRTRunner(Runner):
    """A deserialized engine; input and output live in device buffers that grow with the batch."""

    runtime = "tensorrt"

    def __init__(self, engine_path: Path, *, dla_core: int | None) -> None:
        require_tensorrt()
        import tensorrt as trt

        self._cuda = cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            runtime.DLA_core = dla_core
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT {trt.__version__} cannot load {engine_path}; rebuild it on this device.")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input_name = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self.input_shape = static_dims(tuple(self.engine.get_tensor_shape(self.input_name)))
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.stream = cuda_call(self._cuda.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                cuda_call(self._cuda.cudaFree(pointer), "cudaFree")
            pointer = int(cuda_call(self._cuda.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        cuda, context = self._cuda, self.context
        context.set_input_shape(self.input_name, tuple(batch.shape))
        out = np.empty(tuple(context.get_tensor_shape(self.output_name)), self._output_dtype)
        device_in = self._device_buffer(self.input_name, batch.nbytes)
        device_out = self._device_buffer(self.output_name, out.nbytes)
        context.set_tensor_address(self.input_name, device_in)
        context.set_tensor_address(self.output_name, device_out)
        kind = cuda.cudaMemcpyKind
        cuda_call(
            cuda.cudaMemcpyAsync(device_in, batch.ctypes.data, batch.nbytes, kind.cudaMemcpyHostToDevice, self.stream),
            "copy to device",
        )
        if not context.execute_async_v3(int(self.stream)):
            raise EngineError("TensorRT execute_async_v3 failed; see the log lines above.")
        cuda_call(
            cuda.cudaMemcpyAsync(out.ctypes.data, device_out, out.nbytes, kind.cudaMemcpyDeviceToHost, self.stream),
            "copy to host",
        )
        cuda_call(cuda.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        for pointer, _ in self._buffers.values():
            self._cuda.cudaFree(pointer)
        self._buffers.clear()
        if getattr(self, "stream", None) is not None:
            self._cuda.cudaStreamDestroy(self.stream)
            self.stream = None
        self.__dict__.pop("context", None)
        self.__dict__.pop("engine", None)
