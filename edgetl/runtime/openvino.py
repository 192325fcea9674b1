"""OpenVINO runner: a compiled model per batch size, latency hint, an infer request per calling thread, FP32
inference precision on CPUs unless the artifact is BF16."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import EdgetlError, InvalidFileError, MissingInputError
from edgetl.runtime.onnx_safety import check_onnx_file
from edgetl.runtime.runner import BackendUnavailable, Runner, has_package

INSTALL_HINT = "pip install 'edgetl[openvino]' (or pip install openvino)"


class Bf16Unavailable(EdgetlError, RuntimeError):
    """BF16 inference asked of a CPU without native BF16 (AMX or AVX512-BF16)."""


def require_bf16(what: Path | str) -> str:
    """The reason BF16 runs here; raise Bf16Unavailable (with the reason and a fix) where it does not."""
    from edgetl.runtime.cpu_features import bf16_support

    supported, reason = bf16_support()
    if not supported:
        raise Bf16Unavailable(
            f"{what}: bf16 needs an Intel CPU with AMX or AVX512-BF16, and {reason}.",
            hint="use the fp32 or int8 artifact on this CPU, or build and run bf16 on a Xeon with AMX "
            "(Sapphire Rapids or later) or AVX512-BF16; drop bf16 from the profile's precisions otherwise.",
        )
    return reason


PRECISION_FACTS = ("inference_precision", "bf16_fallback")  # what an artifact's details hand a bundle's manifest


def precision_options(facts: Mapping[str, Any], *, precision: str = "fp32") -> dict[str, Any]:
    """The runner's precision keywords from an artifact's details or a bundle's model entry: the inference
    precision they name (else bf16 for a ``precision`` of bf16, f32 otherwise), and whether a CPU without BF16 may
    run it in f32 (the INT8 ladder's BF16 rung) instead of refusing."""
    hint = facts.get("inference_precision", "bf16" if precision == "bf16" else "f32")
    return {"inference_precision": str(hint), "bf16_fallback": facts.get("bf16_fallback") == "f32"}


def _cores() -> int:
    """CPU cores this process may run on (its affinity, as containers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OpenVinoRunner(Runner):
    """An IR (model.xml + model.bin) or ONNX file compiled for one OpenVINO device."""

    runtime = "openvino"
    concurrent = True  # one infer request per calling thread

    def __init__(
        self,
        xml: Path,
        device: str,
        *,
        threads: int | None,
        inference_precision: str = "f32",
        bf16_fallback: bool = False,
    ) -> None:
        """``bf16_fallback``: where the CPU has no native BF16, run a bf16 model in f32 (the INT8 ladder's BF16
        rung: the FP32 IR, so f32 is closer to FP32 still) instead of refusing; ``inference_precision`` then says
        f32."""
        if not has_package("openvino"):
            raise BackendUnavailable(f"OpenVINO is not installed here; {INSTALL_HINT}.")
        import openvino as ov

        xml = Path(xml)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if inference_precision == "bf16" and device == "CPU":
            if bf16_fallback:
                from edgetl.runtime.cpu_features import bf16_support

                inference_precision = "bf16" if bf16_support()[0] else "f32"
            else:
                require_bf16(xml)
        self.inference_precision = inference_precision
        if device == "CPU":
            # f32 unless the artifact is bf16: on CPUs with bf16 units OpenVINO would otherwise pick bf16 silently.
            config["INFERENCE_PRECISION_HINT"] = inference_precision
            if threads:
                # ``threads`` per request, as in ONNX Runtime; enough streams that concurrent callers (predict's
                # workers) each run on their own instead of queueing on the latency hint's single stream.
                streams = max(1, _cores() // threads)
                config.update({"INFERENCE_NUM_THREADS": threads * streams, "NUM_STREAMS": streams})
        if xml.suffix.lower() == ".onnx":
            check_onnx_file(xml)
        elif not xml.is_file() or not xml.with_suffix(".bin").is_file():
            raise MissingInputError(f"{xml} or its weights {xml.with_suffix('.bin').name} are missing.")
        self._source = (str(xml), device, config)
        self._core = ov.Core()
        self._static: dict[int, Any] = {}
        try:
            self._model = self._core.read_model(str(xml))
            shape = self._model.input(0).get_partial_shape()
            self.input_shape = tuple(d.get_length() if d.is_static else None for d in shape)
            self.input_dtype = np.dtype(self._model.input(0).get_element_type().to_dtype())
            self.compiled = self._compile(self.input_shape[0] or 1)
        except RuntimeError as exc:
            raise InvalidFileError(f"OpenVINO cannot compile {xml} for {device}: {exc}") from exc
        self._lock = threading.Lock()
        self._local = threading.local()
        self.runtime = f"openvino-{device}"

    def _compile(self, size: int, config: dict[str, Any] | None = None) -> Any:
        """The model compiled for batches of ``size``. A dynamic batch axis is made static first: OpenVINO's CPU
        plugin has given a dynamic-batch INT8 model other logits at batch 1 than at batch 2 (AVX-512 VNNI host,
        OpenVINO 2026.4), and a static shape is the one its kernels are chosen and checked for."""
        model = self._model
        if self.input_shape and self.input_shape[0] is None:
            import openvino as ov

            model = self._model.clone()
            model.reshape({0: ov.PartialShape([size, *self.input_shape[1:]])})
        return self._core.compile_model(model, self._source[1], config or self._source[2])

    def _compiled_for(self, size: int) -> Any:
        if size == 1 or not self.input_shape or self.input_shape[0] is not None:
            return self.compiled
        with self._lock:
            if size not in self._static:
                self._static[size] = self._compile(size)
            return self._static[size]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        by_size = getattr(self._local, "by_size", None)
        if by_size is None:
            by_size = self._local.by_size = {}  # this thread's infer request per batch size
        size = len(batch)
        request = by_size.get(size)
        if request is None:
            request = by_size[size] = self._compiled_for(size).create_infer_request()
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data)

    def throughput_hint(
        self, sample: np.ndarray, *, batch_sizes: Sequence[int], seconds: float
    ) -> dict[str, dict[str, Any]]:
        """Images per second at each batch size with OpenVINO's THROUGHPUT hint: the model compiled again for
        streams, and as many infer requests in flight as it asks for (an AsyncInferQueue)."""
        import openvino as ov

        _, device, latency_config = self._source
        # The hint picks the streams (an explicit NUM_STREAMS would override it); the cores stay as loaded.
        config = {k: v for k, v in latency_config.items() if k != "NUM_STREAMS"} | {"PERFORMANCE_HINT": "THROUGHPUT"}
        out: dict[str, dict[str, Any]] = {}
        for size in batch_sizes:
            batch = np.ascontiguousarray(np.repeat(sample[:1], size, axis=0))
            try:
                compiled = self._compile(size, config)  # one static shape per batch size, as in _infer
                compiled(batch)
            except RuntimeError as exc:
                out[str(size)] = {"supported": False, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
                continue
            requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            streams = str(compiled.get_property("NUM_STREAMS")) if device == "CPU" else "-"
            queue = ov.AsyncInferQueue(compiled, requests)
            for _ in range(requests):
                queue.start_async({0: batch})
            queue.wait_all()
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                queue.start_async({0: batch})  # blocks while every request is busy
                calls += 1
            queue.wait_all()
            elapsed = time.perf_counter() - started
            out[str(size)] = {
                "supported": True,
                "images_per_s": float(size * calls / elapsed),
                "requests": requests,
                "streams": streams,
            }
        return out
