"""Folder prediction throughput against the same artifact's compute-only throughput, in the same sitting.

Usage: python benchmarks/predict_throughput.py BUNDLE IMAGES_DIR [--precision int8] [--threads 2]
       [--seconds 10] [--rounds 3] [--goal 0.8]

Both sides get ``--threads`` CPU threads. Folder prediction is what ``edgetl predict BUNDLE IMAGES_DIR`` does:
every file read, decoded, preprocessed and inferred, verdict included (``LineModel.predict_folder``, as many
workers as threads, each decoding and inferring its own image on a single-threaded backend). Compute only is
the bench's figure: one preprocessed image inferred back to back, batch 1, by a backend with all the threads.
The two alternate round by round, so a busy host slows both alike. Prints each round, the median of the
per-round ratios, both medians and the CPU model; exits 1 when the median ratio is below ``--goal``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import cycle, islice
from pathlib import Path

from edgetl.runtime import load
from edgetl.runtime.sources import image_files
from edgetl.versions import host_info


def compute_only(model, sample, *, seconds: float) -> float:
    """Images per second of back-to-back ``infer`` calls on one preprocessed image."""
    for _ in range(5):
        model.infer(sample)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.infer(sample)
        calls += 1
    return calls / (time.perf_counter() - start)


def folder_prediction(model, files: list[Path], *, seconds: float, workers: int) -> float:
    """Images per second of predict_iter over the folder's files (cycled), decode to verdict."""
    count = max(len(files), int(seconds * 1000))  # far more than fit in ``seconds``: stopped by time
    done, start = 0, time.perf_counter()
    for prediction in model.predict_iter(islice(cycle(files), count), workers=workers):
        if prediction.error is not None:
            raise SystemExit(f"{prediction.source}: {prediction.error}")
        done += 1
        if time.perf_counter() - start >= seconds:
            break
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("images", type=Path, help="A folder of images (searched recursively).")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="Per side and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--goal", type=float, default=0.8)
    args = parser.parse_args()
    files = image_files(args.images)
    if not files:
        raise SystemExit(f"no images in {args.images}")
    with (
        load(args.bundle, precision=args.precision, threads=args.threads) as compute_model,
        load(args.bundle, precision=args.precision, threads=1) as line_model,
    ):
        sample = compute_model.prepare(files[0])
        print(
            f"{args.bundle} {compute_model.precision} on {compute_model.runtime}, {len(files)} images "
            f"({files[0].suffix}, first {files[0].stat().st_size} bytes); compute only: batch 1, {args.threads} "
            f"backend threads; folder prediction: {args.threads} workers x 1 backend thread; CPU: {host_info()['cpu']}"
        )
        folder_rates, compute_rates, ratios = [], [], []
        for round_ in range(1, args.rounds + 1):
            folder_rates.append(folder_prediction(line_model, files, seconds=args.seconds, workers=args.threads))
            compute_rates.append(compute_only(compute_model, sample, seconds=args.seconds))
            ratios.append(folder_rates[-1] / compute_rates[-1])
            print(
                f"round {round_}: folder prediction {folder_rates[-1]:.1f} images/s, compute only "
                f"{compute_rates[-1]:.1f} images/s, ratio {ratios[-1]:.3f}",
                flush=True,
            )
    folder, compute, ratio = (statistics.median(v) for v in (folder_rates, compute_rates, ratios))
    print(
        f"median: folder prediction {folder:.1f} images/s (read + decode + preprocess + infer + verdict), compute "
        f"only {compute:.1f} images/s, ratio {ratio:.3f} (goal >= {args.goal})"
    )
    return 0 if ratio >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
