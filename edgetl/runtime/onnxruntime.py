"""ONNX Runtime runner (CPU execution provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from edgetl.errors import InvalidFileError
from edgetl.runtime.onnx_safety import UntrustedFileError, loadable_onnx
from edgetl.runtime.runner import BackendUnavailable, Runner, has_package, static_dims

INSTALL_HINT = "pip install 'edgetl[onnxruntime]' (or pip install onnxruntime)"


class OnnxRuntimeRunner(Runner):
    """An InferenceSession on the CPU execution provider."""

    runtime = "onnxruntime-cpu"
    concurrent = True  # InferenceSession.run is thread-safe

    def __init__(self, path: Path, *, threads: int | None, optimization: Literal["all", "none"] = "all") -> None:
        """``optimization`` "none" runs the graph node by node: the exact arithmetic its Q/DQ nodes describe."""
        if not has_package("onnxruntime"):
            raise BackendUnavailable(f"ONNX Runtime is not installed here; {INSTALL_HINT}.")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if optimization == "all"
            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        model = loadable_onnx(Path(path))
        try:
            self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own classes (Fail, InvalidGraph, ...) with no common base
            if "External data path" in str(exc):
                raise UntrustedFileError(f"{model}: ONNX Runtime refused its external data: {exc}") from exc
            raise InvalidFileError(f"ONNX Runtime cannot load {model}: {exc}") from exc
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = static_dims(first.shape)
        self.input_dtype = np.dtype(np.uint8 if first.type == "tensor(uint8)" else np.float32)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: batch})[0])
