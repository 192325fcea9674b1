"""Run a candidate model file on the gate's images, and time it: what the ladder scores each rung with.

ONNX files (QDQ or floating point) run in ONNX Runtime on the CPU, OpenVINO IRs in OpenVINO with the precision
the artifact will run in. TensorRT's QDQ files run in ONNX Runtime with graph optimisations off (``unfused``): node
by node, the arithmetic their Q/DQ nodes describe, as TensorRT's explicit quantization computes it. Fused, ONNX
Runtime's x86 int8 kernels would add their own rounding, and on CPUs without VNNI the saturation of 16-bit
pairs of products of full-range weights, which is no property of the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_BATCH = 16
# ONNX Runtime's pool threads spin for a few milliseconds after each run. Timed right after another session ran,
# a model shares the cores with those spinning threads: in alternating blocks a model timed against a copy of
# itself came out 1.5 x slower. A pause before each timed block lets them go to sleep; the runs themselves keep
# the runtime's defaults (spinning on), as the line runs them.
_SETTLE_S = 0.05


def _session(path: Path, threads: int | None, *, unfused: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if unfused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _runner(path: Path, precision: str, threads: int | None, *, unfused: bool = False) -> Any:
    if path.suffix == ".xml":
        # The runtime's own runner, image by image: the gate scores the model as the line runs it (OpenVINO
        # compiles one static shape per batch size, and kernels may differ between them).
        from edgetl.runtime.openvino import OpenVinoRunner

        runner = OpenVinoRunner(path, "CPU", threads=threads, inference_precision=precision)
        return lambda x: np.concatenate([runner.infer(x[i : i + 1]) for i in range(len(x))])
    session = _session(path, threads, unfused=unfused)
    name = session.get_inputs()[0].name
    batch = session.get_inputs()[0].shape[0]
    if isinstance(batch, int):  # a static batch-1 model runs image by image
        return lambda x: np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return lambda x: np.asarray(session.run(None, {name: x})[0])


def logits_fn(
    path: Path, *, precision: str = "f32", threads: int | None = None, unfused: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from images (N, C, H, W) to the logits of ``path`` (an ONNX file or an OpenVINO IR), loading the
    model once for every call (a gate that screens reads a candidate twice); ``unfused``: an ONNX file node by node
    (a TensorRT QDQ model)."""
    run = _runner(path, precision, threads, unfused=unfused)

    def logits(images: np.ndarray) -> np.ndarray:
        return np.concatenate([run(images[i : i + _BATCH]) for i in range(0, len(images), _BATCH)]).astype(np.float32)

    return logits


def logits_of(
    path: Path, images: np.ndarray, *, precision: str = "f32", threads: int | None = None, unfused: bool = False
) -> np.ndarray:
    """Logits of ``path`` on ``images`` (see :func:`logits_fn`)."""
    return logits_fn(path, precision=precision, threads=threads, unfused=unfused)(images)


def times_ms(run: Callable[[np.ndarray], Any], x: np.ndarray, runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls ``run(x)``, after a pause that lets the last session's spinning
    threads go to sleep (see ``_SETTLE_S``)."""
    time.sleep(_SETTLE_S)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _one_image(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[None] if image.ndim == 3 else image[:1])


def p50_ms(
    path: Path, image: np.ndarray, *, precision: str = "f32", threads: int | None = None, runs: int = 40
) -> float:
    """Median batch-1 latency of ``path`` in ms, after a few warm-up runs (a cost figure, not a benchmark)."""
    run = _runner(path, precision, threads)
    x = _one_image(image)
    times_ms(run, x, 5)
    return round(float(np.median(times_ms(run, x, runs))), 3)


def paired_p50_ms(
    path: Path,
    reference: Path,
    image: np.ndarray,
    *,
    precision: str = "f32",
    threads: int | None = None,
    blocks: int = 6,
    runs: int = 15,
) -> tuple[float, float]:
    """Median batch-1 latency in ms of ``path`` (run in ``precision``) and of ``reference`` (f32), timed in
    alternating blocks: a host that gets busier or quieter meanwhile slows both alike, so the two compare (the
    ladder's latency cap). Each figure is the median of its blocks' medians."""
    runs_of = [_runner(path, precision, threads), _runner(reference, "f32", threads)]
    x = _one_image(image)
    medians: list[list[float]] = [[], []]
    for run in runs_of:
        times_ms(run, x, 5)
    for _ in range(blocks):
        for which, run in enumerate(runs_of):
            medians[which].append(float(np.median(times_ms(run, x, runs))))
    return round(float(np.median(medians[0])), 3), round(float(np.median(medians[1])), 3)


def size_bytes(path: Path) -> int:
    """Bytes of a model file (and its weights file, for an IR)."""
    total = path.stat().st_size
    weights = path.with_suffix(".bin")
    return total + (weights.stat().st_size if path.suffix == ".xml" and weights.is_file() else 0)
