"""Latency of one runner: warm-up, timed run, percentiles, deadline share, cold start and throughput."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

# Raw samples kept in the report for the latency-distribution plots (evenly thinned beyond this).
MAX_SAMPLES_KEPT = 500
# Consecutive blocks the timed calls are cut into, to show how much a figure moves within one measurement.
BLOCKS = 5


def block_spread(ms: np.ndarray, *, blocks: int = BLOCKS) -> dict[str, Any]:
    """p50 and p99 of each of ``blocks`` consecutive blocks of the timed calls: their median, min and max.

    A figure that moves from block to block moves from run to run: the spread is the least noise a comparison
    has to clear (fewer blocks when there are fewer calls than blocks).
    """
    parts = np.array_split(np.asarray(ms, dtype=np.float64), max(1, min(blocks, len(ms))))

    def over_blocks(q: float) -> dict[str, float]:
        values = [float(np.percentile(part, q)) for part in parts]
        return {"median": float(np.median(values)), "min": min(values), "max": max(values)}

    return {"blocks": len(parts), "calls_per_block": len(parts[-1]), "p50": over_blocks(50), "p99": over_blocks(99)}


def summarize(ms: np.ndarray, *, deadline_ms: float | None = None, blocks: int = BLOCKS) -> dict[str, Any]:
    """Percentiles and spread of per-call times in milliseconds.

    ``jitter`` is p99 - p50: how much later than usual a slow frame arrives (std hides rare stalls).
    ``over_deadline`` is the share of calls slower than ``deadline_ms`` (None without a deadline).
    ``spread`` holds the p50 and p99 of ``blocks`` consecutive blocks (:func:`block_spread`).
    """
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    kept = ms if len(ms) <= MAX_SAMPLES_KEPT else ms[np.linspace(0, len(ms) - 1, MAX_SAMPLES_KEPT).astype(int)]
    return {
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": float(ms.max()),
        "min": float(ms.min()),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "jitter": p99 - p50,
        "iterations": len(ms),
        "deadline_ms": deadline_ms,
        "over_deadline": None if deadline_ms is None else float(np.mean(ms > deadline_ms)),
        "spread": block_spread(ms, blocks=blocks),
        "samples_ms": [round(float(v), 4) for v in kept],
    }


def _warm_up(call: Callable[[], Any], *, count: int, seconds: float | None) -> int:
    """Run ``call`` ``count`` times, or for ``seconds`` when given; returns the number of calls."""
    done = 0
    if seconds is not None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            call()
            done += 1
        return done
    for _ in range(count):
        call()
    return count


def time_calls(
    call: Callable[[], Any],
    *,
    warmup: int = 20,
    warmup_seconds: float | None = None,
    iterations: int = 200,
    duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Per-call wall times (ms) of ``call`` after a warm-up; returns (times, warm-up calls).

    The measured run is ``iterations`` calls, or as many as fit in ``duration_s`` when that is given
    (at least one).
    """
    warmed = _warm_up(call, count=warmup, seconds=warmup_seconds)
    times: list[float] = []
    end = None if duration_s is None else time.perf_counter() + duration_s
    while (len(times) < iterations) if end is None else (not times or time.perf_counter() < end):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1e3, warmed


def measure_latency(
    infer: Callable[[np.ndarray], Any],
    batch: np.ndarray,
    *,
    warmup: int = 20,
    warmup_seconds: float | None = None,
    iterations: int = 200,
    duration_s: float | None = None,
    deadline_ms: float | None = None,
    blocks: int = BLOCKS,
) -> dict[str, Any]:
    """Latency summary (ms) of ``infer(batch)`` after a warm-up, see :func:`time_calls` and :func:`summarize`."""
    ms, warmed = time_calls(
        lambda: infer(batch),
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        iterations=iterations,
        duration_s=duration_s,
    )
    summary = summarize(ms, deadline_ms=deadline_ms, blocks=blocks)
    return {**summary, "warmup": warmed, "batch": int(batch.shape[0])}


def cold_start(load: Callable[[], Any], first_input: np.ndarray) -> tuple[Any, dict[str, float]]:
    """Load a runner and run its first inference; returns (runner, load and first-inference times in ms)."""
    start = time.perf_counter()
    runner = load()
    loaded = time.perf_counter()
    runner.infer(first_input)
    done = time.perf_counter()
    return runner, {
        "load_ms": (loaded - start) * 1e3,
        "first_inference_ms": (done - loaded) * 1e3,
        "total_ms": (done - start) * 1e3,
    }


def throughput(
    infer: Callable[[np.ndarray], Any],
    sample: np.ndarray,
    *,
    batch_sizes: Sequence[int] = (1, 4, 8, 16),
    seconds: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Images per second at each batch size (one warm-up call, then ``seconds`` of calls).

    A batch size the artifact refuses (a static batch-1 model) is recorded with the backend's error
    instead of a figure.
    """
    out: dict[str, dict[str, Any]] = {}
    for size in batch_sizes:
        batch = np.repeat(sample[:1], size, axis=0)
        try:
            infer(batch)
        except Exception as exc:
            out[str(size)] = {"supported": False, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        ms, _ = time_calls(partial(infer, batch), warmup=0, iterations=1, duration_s=seconds)
        out[str(size)] = {
            "supported": True,
            "images_per_s": float(size * len(ms) / (ms.sum() / 1e3)),
            "batch_p50_ms": float(np.percentile(ms, 50)),
            "calls": len(ms),
        }
    return out
