"""Is the INT8 ladder's latency yardstick fair? Time a run's FP32 ONNX against a byte-identical copy of itself.

Usage: python benchmarks/paired_timing.py runs/demo [--repeats 5]

The ladder's latency cap (``quantization.ladder.max_latency_ratio``) times each mixed-precision rung against FP32
in alternating blocks (:func:`edgetl.quantize.evaluate.paired_p50_ms`). Two copies of one model must come out
alike, whichever is timed first: each repeat prints both p50s and their ratio, then the ratios' range. A ratio far
from 1 means the cap would keep or drop rungs for the order they were timed in, not for their speed. A script,
not a test.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from edgetl.quantize import load_calibration
from edgetl.quantize.evaluate import paired_p50_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = args.run / "export" / "model.onnx"
    image = load_calibration(args.run / "calibration").tensors[0]
    ratios = []
    with tempfile.TemporaryDirectory(prefix="edgetl-paired-") as tmp:
        copy = Path(tmp) / "copy.onnx"
        shutil.copyfile(model, copy)
        for r in range(args.repeats):
            first, second = paired_p50_ms(copy, model, image)
            ratios.append(first / second)
            print(f"repeat {r + 1}: copy {first:.2f} ms, original {second:.2f} ms, ratio {ratios[-1]:.3f}", flush=True)
    print(f"ratio copy / original over {len(ratios)} repeats: {min(ratios):.3f} to {max(ratios):.3f}")


if __name__ == "__main__":
    main()
