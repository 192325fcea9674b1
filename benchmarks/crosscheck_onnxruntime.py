"""Cross-check edgetl's latency figure against a plain onnxruntime.InferenceSession loop, in the same sitting.

Usage: python benchmarks/crosscheck_onnxruntime.py runs/demo/targets/cpu/fp32 [--seconds 10] [--rounds 3]
       [--threads 2] [--block 10] [--tolerance 0.10]
Both sides use the CPU execution provider, the same thread count and the same input, in this one process. They
alternate in blocks of --block calls (so a busy host slows both alike) for about --seconds each per round. Prints
each p50 and the ratio edgetl / plain loop per round and overall (median of the rounds); exits 1 when the overall
ratio is more than --tolerance away from 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.bench.latency import time_calls
from edgetl.targets import Artifact, get_target


def plain_session(model: Path, *, threads: int) -> Any:
    """A bare InferenceSession: CPU provider, the thread count, nothing else set."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def plain_block(session: Any, feed: dict[str, np.ndarray], calls: int) -> list[float]:
    """Per-call times (ms) of session.run in a bare loop."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="An ONNX Runtime artifact folder (targets/<profile>/<precision>).")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--block", type=int, default=10, help="Calls per side before switching.")
    args = parser.parse_args()
    artifact = Artifact.read(args.artifact)
    size = int(artifact.preprocess.get("input_size", 224))
    channels = int(artifact.preprocess.get("channels", 3))
    x = np.random.default_rng(0).normal(size=(1, channels, size, size)).astype(np.float32)
    session = plain_session(artifact.model_path, threads=args.threads)
    feed = {session.get_inputs()[0].name: x}
    ratios = []
    with get_target("onnxruntime").load(artifact, threads=args.threads) as runner:
        plain_block(session, feed, 20)
        time_calls(lambda: runner.infer(x), warmup=20, iterations=1)
        for r in range(1, args.rounds + 1):
            # Blocks of a few calls, alternating, so both sides see the same load on a shared host.
            ours, plain = [], []
            end = time.perf_counter() + 2 * args.seconds
            while time.perf_counter() < end:
                ours.extend(time_calls(lambda: runner.infer(x), warmup=0, iterations=args.block)[0].tolist())
                plain.extend(plain_block(session, feed, args.block))
            a, b = float(np.median(ours)), float(np.median(plain))
            ratios.append(a / b)
            print(f"round {r}: edgetl p50 {a:.2f} ms, plain InferenceSession p50 {b:.2f} ms, ratio {a / b:.3f}")
    ratio = statistics.median(ratios)
    ok = abs(ratio - 1) <= args.tolerance
    verdict = "PASS" if ok else "MISS"
    print(f"[{verdict}] {artifact.model_path}: edgetl / plain loop = {ratio:.3f} (tolerance {args.tolerance:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
