"""Compare ONNX Runtime INT8 recipes on a run's validation split: agreement with FP32, accuracy and batch-1 p50.

Usage: python benchmarks/compare_ort_int8.py runs/demo [--fp32-blocks 2] [--threads 2] [--train-images 700]
       [--recipes | --nncf]

By default compares activation x weight layouts (static QDQ, per-channel weights, global min/max, through
`edgetl.quantize.qdq.quantize_qdq`); with --recipes the `cpu` profile's layout (u8 x s8, 7-bit weights) with
global or moving-average ranges, each with and without bias correction; with --nncf also nncf.quantize on the ONNX
model. --train-images N adds N training images that are not in the calibration set to the agreement measurement
(agreement needs no labels, so this never touches the test split). Writes nothing into the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _measure(path: Path, x: np.ndarray, threads: int) -> tuple[np.ndarray, float]:
    from edgetl.bench.latency import measure_latency
    from edgetl.targets.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, threads=threads)
    predictions = np.array([runner.infer(x[i : i + 1]).argmax() for i in range(len(x))])
    return predictions, float(measure_latency(runner.infer, x[:1], warmup=30, iterations=200)["p50"])


LAYOUTS: dict[str, dict[str, Any]] = {
    "u8 x s8, 7-bit weights": {"activations": "uint8", "weights": "int8", "reduce_range": True},
    "u8 x s8, 8-bit weights": {"activations": "uint8", "weights": "int8", "reduce_range": False},
    "u8 x u8, 8-bit weights": {"activations": "uint8", "weights": "uint8", "reduce_range": False},
    "s8 x s8, 8-bit weights": {"activations": "int8", "weights": "int8", "reduce_range": False},
}
RECIPES: dict[str, dict[str, Any]] = {
    "global min/max": {},
    "global min/max + bias correction (100)": {"bias_correction": 100},
    "moving-average ranges": {"moving_average": True},
    "moving-average ranges + bias correction (64)": {"moving_average": True, "bias_correction": 64},
    "moving-average ranges + bias correction (100)": {"moving_average": True, "bias_correction": 100},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--fp32-blocks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=0, help="Held-out training images added to agreement.")
    parser.add_argument("--recipes", action="store_true", help="Range and bias-correction recipes, not layouts.")
    parser.add_argument("--nncf", action="store_true", help="Also quantize with nncf.quantize (ONNX backend).")
    args = parser.parse_args()
    import onnx

    from edgetl.data.dataset import load_split
    from edgetl.export import onnx_metadata
    from edgetl.pipeline import RunDir, _split_inputs
    from edgetl.preprocess import PreprocessSpec, preprocess_file
    from edgetl.quantize.calibration import load_calibration
    from edgetl.quantize.qdq import quantize_qdq

    run = RunDir(args.run)
    fp32 = run.export / "model.onnx"
    spec = PreprocessSpec.model_validate_json(onnx_metadata(fp32)["edgetl.preprocess"])
    dataset = load_split(run.data)
    x, y, _ = _split_inputs(dataset, spec, "val")
    calib = load_calibration(run.calibration)
    n_val = len(x)
    if args.train_images:
        used = {f["path"] for f in calib.manifest["files"]}
        held_out = [s for s in dataset.split("train") if s.path.as_posix() not in used][: args.train_images]
        x = np.concatenate([x, *(preprocess_file(s.path, spec) for s in held_out)])
    reference, fp32_ms = _measure(fp32, x, args.threads)
    print(
        f"fp32: val accuracy {(reference[:n_val] == y).mean():.4f}, p50 {fp32_ms:.2f} ms; agreement measured on "
        f"{n_val} validation + {len(x) - n_val} held-out training images"
    )
    base = LAYOUTS["u8 x s8, 7-bit weights"]
    variants = {name: {**base, **extra} for name, extra in RECIPES.items()} if args.recipes else LAYOUTS
    with tempfile.TemporaryDirectory(prefix="edgetl-int8-") as tmp:
        candidates = []
        for name, options in variants.items():
            out = Path(tmp) / f"{len(candidates)}.onnx"
            quantize_qdq(fp32, out, calib, fp32_blocks=args.fp32_blocks, **options)
            candidates.append((name, out))
        if args.nncf:
            import nncf

            ignored = nncf.IgnoredScope(
                patterns=[rf".*/blocks\.{b}/.*" for b in range(args.fp32_blocks)], validate=False
            )
            for preset in ("performance", "mixed"):
                quantized = nncf.quantize(
                    onnx.load(str(fp32)),
                    nncf.Dataset([{"input": b} for b in calib.batches()]),
                    preset=nncf.QuantizationPreset(preset),
                    subset_size=len(calib),
                    ignored_scope=ignored,
                )
                out = Path(tmp) / f"nncf-{preset}.onnx"
                onnx.save(quantized, str(out))
                candidates.append((f"nncf.quantize on ONNX, {preset} preset", out))
        for name, path in candidates:
            predicted, ms = _measure(path, x, args.threads)
            agree = predicted == reference
            held = f", held-out train {agree[n_val:].mean():.4f}, both {agree.mean():.4f}" if len(x) > n_val else ""
            print(
                f"{name}: val agreement {agree[:n_val].mean():.4f}{held}, "
                f"val accuracy {(predicted[:n_val] == y).mean():.4f}, p50 {ms:.2f} ms ({ms / fp32_ms:.2f} x FP32)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
