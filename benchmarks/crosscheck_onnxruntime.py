"""Cross-check edgetl's latency figure against a plain onnxruntime.InferenceSession loop, in the same sitting.

Usage: python benchmarks/crosscheck_onnxruntime.py runs/demo/targets/cpu/fp32 [--seconds 10] [--rounds 3]
       [--threads 2] [--tolerance 0.10]
Both sides use the CPU execution provider, the same thread count and the same input; they alternate for --rounds
rounds. Prints each p50 and the ratio edgetl / plain loop per round and overall (median of the rounds); exits 1
when the overall ratio is more than --tolerance away from 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgetl.bench.latency import measure_latency
from edgetl.targets import Artifact, get_target


def plain_loop_p50(model: Path, x: np.ndarray, *, seconds: float, threads: int) -> float:
    """Median (ms) of session.run in a bare loop after one second of warm-up."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        session.run(None, feed)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def edgetl_p50(artifact: Artifact, x: np.ndarray, *, seconds: float, threads: int) -> float:
    """p50 (ms) of edgetl's runner and latency code."""
    with get_target("onnxruntime").load(artifact, threads=threads) as runner:
        return float(measure_latency(runner.infer, x, warmup_seconds=1.0, duration_s=seconds)["p50"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="An ONNX Runtime artifact folder (targets/<profile>/<precision>).")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()
    artifact = Artifact.read(args.artifact)
    size = int(artifact.preprocess.get("input_size", 224))
    channels = int(artifact.preprocess.get("channels", 3))
    x = np.random.default_rng(0).normal(size=(1, channels, size, size)).astype(np.float32)
    ratios = []
    for r in range(1, args.rounds + 1):
        ours = edgetl_p50(artifact, x, seconds=args.seconds, threads=args.threads)
        plain = plain_loop_p50(artifact.model_path, x, seconds=args.seconds, threads=args.threads)
        ratios.append(ours / plain)
        print(
            f"round {r}: edgetl p50 {ours:.2f} ms, plain InferenceSession p50 {plain:.2f} ms, ratio {ours / plain:.3f}"
        )
    ratio = statistics.median(ratios)
    ok = abs(ratio - 1) <= args.tolerance
    verdict = "PASS" if ok else "MISS"
    print(f"[{verdict}] {artifact.model_path}: edgetl / plain loop = {ratio:.3f} (tolerance {args.tolerance:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
