"""OpenVINO runner: a compiled model with one infer request, latency hint, FP32 inference precision on CPUs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import InvalidFileError, MissingInputError
from edgetl.runtime.onnx_safety import check_onnx_file
from edgetl.runtime.runner import BackendUnavailable, Runner, has_package

INSTALL_HINT = "pip install 'edgetl[openvino]' (or pip install openvino)"


class OpenVinoRunner(Runner):
    """An IR (model.xml + model.bin) or ONNX file compiled for one OpenVINO device."""

    runtime = "openvino"
    concurrent = True  # one infer request per calling thread

    def __init__(self, xml: Path, device: str, *, threads: int | None) -> None:
        if not has_package("openvino"):
            raise BackendUnavailable(f"OpenVINO is not installed here; {INSTALL_HINT}.")
        import openvino as ov

        xml = Path(xml)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU":
            # Keep FP32 math: on CPUs with bf16 units OpenVINO would otherwise pick bf16 silently.
            config["INFERENCE_PRECISION_HINT"] = "f32"
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
        if xml.suffix.lower() == ".onnx":
            check_onnx_file(xml)
        elif not xml.is_file() or not xml.with_suffix(".bin").is_file():
            raise MissingInputError(f"{xml} or its weights {xml.with_suffix('.bin').name} are missing.")
        try:
            self.compiled = ov.Core().compile_model(str(xml), device, config)
        except RuntimeError as exc:
            raise InvalidFileError(f"OpenVINO cannot compile {xml} for {device}: {exc}") from exc
        self.request = self.compiled.create_infer_request()
        self._local = threading.local()
        self._local.request = self.request
        shape = self.compiled.input(0).get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else None for d in shape)
        self.runtime = f"openvino-{device}"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data)
