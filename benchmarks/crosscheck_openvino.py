"""Cross-check edgetl's latency figure against OpenVINO's own benchmark_app on one IR, in the same sitting.

Usage: python benchmarks/crosscheck_openvino.py runs/demo/targets/intel-cpu/fp32 [--seconds 5] [--rounds 5]
       [--threads 2] [--tolerance 0.10]
The two tools run one after the other, alternating for --rounds rounds (so a busy host slows both alike), on the
same IR with the latency hint and FP32 inference precision (benchmark_app's latency hint uses every core: keep
--threads at the core count, the default). Prints the p50 of each and the
ratio edgetl / benchmark_app per round and overall (median of the rounds); exits 1 when the overall ratio is more
than --tolerance away from 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgetl.bench.latency import measure_latency
from edgetl.targets import Artifact, get_target


def benchmark_app_p50(xml: Path, *, seconds: float) -> float:
    """Median latency (ms) that benchmark_app reports for the IR with the latency hint.

    benchmark_app refuses -nthreads together with a hint; the latency hint uses every core, as edgetl does by default.
    """
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                exe,
                "-m",
                str(xml.resolve()),
                "-d",
                "CPU",
                "-hint",
                "latency",
                "-infer_precision",
                "f32",
                "-t",
                str(max(1, round(seconds))),
                "-report_folder",
                tmp,
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark_app failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    out = proc.stdout
    match = re.search(r"Median:\s+([\d.]+)\s*ms", out)
    if match is None:
        raise RuntimeError(f"benchmark_app printed no median latency:\n{out[-2000:]}")
    return float(match.group(1))


def edgetl_p50(folder: Path, *, seconds: float, threads: int) -> float:
    """p50 (ms) of edgetl's runner and latency code on the same IR (random input, as benchmark_app uses)."""
    artifact = Artifact.read(folder)
    size = int(artifact.preprocess.get("input_size", 224))
    x = np.random.default_rng(0).normal(size=(1, int(artifact.preprocess.get("channels", 3)), size, size))
    with get_target("openvino").load(artifact, threads=threads) as runner:
        result = measure_latency(runner.infer, x.astype(np.float32), warmup_seconds=1.0, duration_s=seconds)
    return float(result["p50"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="An OpenVINO artifact folder (targets/<profile>/<precision>).")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()
    xml = Artifact.read(args.artifact).model_path
    ratios = []
    for r in range(1, args.rounds + 1):
        ours = edgetl_p50(args.artifact, seconds=args.seconds, threads=args.threads)
        theirs = benchmark_app_p50(xml, seconds=args.seconds)
        ratios.append(ours / theirs)
        print(f"round {r}: edgetl p50 {ours:.2f} ms, benchmark_app median {theirs:.2f} ms, ratio {ours / theirs:.3f}")
    ratio = statistics.median(ratios)
    ok = abs(ratio - 1) <= args.tolerance
    print(f"[{'PASS' if ok else 'MISS'}] {xml}: edgetl / benchmark_app = {ratio:.3f} (tolerance {args.tolerance:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
