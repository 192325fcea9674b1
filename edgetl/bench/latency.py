"""Batch latency after a warm-up: percentiles of wall time per call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def measure_latency(
    infer: Callable[[np.ndarray], Any], batch: np.ndarray, *, warmup: int = 20, iterations: int = 200
) -> dict[str, float]:
    """Time ``iterations`` calls of ``infer(batch)`` after ``warmup`` untimed ones (milliseconds)."""
    for _ in range(warmup):
        infer(batch)
    times = np.empty(iterations, dtype=np.float64)
    for i in range(iterations):
        start = time.perf_counter()
        infer(batch)
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "max": float(ms.max()),
        "iterations": iterations,
        "warmup": warmup,
        "batch": int(batch.shape[0]),
    }


def cold_start(load: Callable[[], Any], first_input: np.ndarray) -> tuple[Any, dict[str, float]]:
    """Load a runner and run its first inference; returns (runner, load and first-inference times in ms)."""
    start = time.perf_counter()
    runner = load()
    loaded = time.perf_counter()
    runner.infer(first_input)
    done = time.perf_counter()
    return runner, {"load_ms": (loaded - start) * 1e3, "first_inference_ms": (done - loaded) * 1e3}
