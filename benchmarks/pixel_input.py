"""End-to-end latency from a camera frame against compute, for a bundle whose models take uint8 pixels.

Usage: python benchmarks/pixel_input.py BUNDLE IMAGES_DIR [--precision int8] [--threads 2] [--images 32]
       [--iterations 200] [--rounds 3] [--goal 1.15]

A line camera hands the program a decoded uint8 frame, not a PNG file, so the frames are decoded once up front
(the images of IMAGES_DIR, as numpy arrays) and the timed paths start from them:

- compute: ``model.infer`` on the prepared input, batch 1 (the bench's compute latency);
- end to end: ``model.predict(frame)`` on a frame at its own size: resize, the model's input, infer, softmax,
  verdict (a uint8-input model normalises inside the graph; a float-input one on the host);
- end to end at input size: the same on frames already at the model's input size (a camera ROI set to it);
- host normalisation: what a float-input model of the same bundle adds per image on the host (``normalize`` of
  the resized pixels), timed on the same frames.

Rounds alternate the paths so a busy host slows all alike. Prints each round, the medians of the per-round p50s,
the ratios and the CPU model; exits 1 when end to end / compute is above ``--goal``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import cycle, islice
from pathlib import Path

import numpy as np

from edgetl.runtime import load
from edgetl.runtime.preprocess import decode_image, normalize, resized_uint8
from edgetl.runtime.sources import image_files
from edgetl.versions import host_info


def p50_ms(call, items: list, *, iterations: int) -> float:
    """Median wall time of ``call(item)`` over ``iterations`` calls cycling through ``items``, in ms."""
    for item in items[:5]:
        call(item)
    times = []
    for item in islice(cycle(items), iterations):
        start = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("images", type=Path, help="A folder of images (searched recursively).")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=32, dest="count", help="Frames decoded up front.")
    parser.add_argument("--iterations", type=int, default=200, help="Timed calls per path and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--goal", type=float, default=1.15)
    args = parser.parse_args()

    files = image_files(args.images)[: args.count]
    if not files:
        raise SystemExit(f"no images in {args.images}")
    with load(args.bundle, precision=args.precision, threads=args.threads) as model:
        spec = model.spec
        frames = [np.asarray(decode_image(f)) for f in files]
        resized = [resized_uint8(decode_image(f), spec) for f in files]  # frames at the model's input size
        prepared = [model.prepare(f) for f in frames]
        print(
            f"{args.bundle} {model.precision} on {model.runtime}: input {spec.dtype} {spec.layout} "
            f"({'normalised in the graph' if spec.takes_pixels else 'normalised on the host'}), "
            f"{len(files)} frames of {frames[0].shape}, {args.threads} threads"
        )
        rows: dict[str, list[float]] = {"compute": [], "end_to_end": [], "end_to_end_at_size": [], "normalise": []}
        for r in range(args.rounds):
            rows["compute"].append(p50_ms(model.infer, prepared, iterations=args.iterations))
            rows["end_to_end"].append(p50_ms(model.predict, frames, iterations=args.iterations))
            rows["end_to_end_at_size"].append(p50_ms(model.predict, resized, iterations=args.iterations))
            rows["normalise"].append(p50_ms(lambda x: normalize(x, spec), resized, iterations=args.iterations))
            print(f"round {r + 1}: " + ", ".join(f"{k} p50 {v[-1]:.3f} ms" for k, v in rows.items()))
    median = {k: statistics.median(v) for k, v in rows.items()}
    ratio = median["end_to_end"] / median["compute"]
    ratio_at_size = median["end_to_end_at_size"] / median["compute"]
    print(", ".join(f"{k} {v:.3f} ms" for k, v in median.items()) + " (medians of the round p50s)")
    print(
        f"end to end / compute: {ratio:.3f} (frames at their own size), {ratio_at_size:.3f} (frames at input size); "
        f"goal <= {args.goal}; a float-input model would add about {median['normalise']:.3f} ms of host "
        f"normalisation per image; CPU: {host_info().get('cpu')}"
    )
    return 0 if ratio <= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
