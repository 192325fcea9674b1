"""Compare ONNX Runtime INT8 layouts on a run's validation split: agreement with FP32, accuracy and batch-1 p50.

Usage: python benchmarks/compare_ort_int8.py runs/demo [--fp32-blocks 2] [--threads 2] [--nncf]

Quantizes the run's export/model.onnx with its calibration set in each activation x weight layout (static QDQ,
per-channel weights, MinMax, as `edgetl.targets.onnxruntime.quantize_qdq`), and with --nncf also through
nncf.quantize on the ONNX model. Reads only the validation split; writes nothing into the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def _measure(path: Path, x: np.ndarray, threads: int) -> tuple[np.ndarray, float]:
    from edgetl.bench.latency import measure_latency
    from edgetl.targets.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, threads=threads)
    predictions = np.array([runner.infer(x[i : i + 1]).argmax() for i in range(len(x))])
    return predictions, float(measure_latency(runner.infer, x[:1], warmup=30, iterations=200)["p50"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--fp32-blocks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nncf", action="store_true", help="Also quantize with nncf.quantize (ONNX backend).")
    args = parser.parse_args()
    import onnx

    from edgetl.calibration import load_calibration
    from edgetl.data.dataset import load_split
    from edgetl.export import onnx_metadata
    from edgetl.pipeline import RunDir, _split_inputs
    from edgetl.preprocess import PreprocessSpec
    from edgetl.targets.onnxruntime import quantize_qdq

    run = RunDir(args.run)
    fp32 = run.export / "model.onnx"
    spec = PreprocessSpec.model_validate_json(onnx_metadata(fp32)["edgetl.preprocess"])
    x, y, _ = _split_inputs(load_split(run.data), spec, "val")
    calib = load_calibration(run.calibration)
    reference, fp32_ms = _measure(fp32, x, args.threads)
    print(f"fp32: val accuracy {(reference == y).mean():.4f}, p50 {fp32_ms:.2f} ms")
    layouts = {
        "u8 x s8, 7-bit weights": ("uint8", "int8", True),
        "u8 x s8, 8-bit weights": ("uint8", "int8", False),
        "u8 x u8, 8-bit weights": ("uint8", "uint8", False),
        "s8 x s8, 8-bit weights": ("int8", "int8", False),
    }
    with tempfile.TemporaryDirectory(prefix="edgetl-int8-") as tmp:
        candidates = []
        for name, (activations, weights, reduce_range) in layouts.items():
            out = Path(tmp) / f"{len(candidates)}.onnx"
            quantize_qdq(
                fp32,
                out,
                calib,
                activations=activations,
                weights=weights,
                reduce_range=reduce_range,
                fp32_blocks=args.fp32_blocks,
            )
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
            print(
                f"{name}: val agreement {(predicted == reference).mean():.4f}, "
                f"val accuracy {(predicted == y).mean():.4f}, p50 {ms:.2f} ms ({ms / fp32_ms:.2f} x FP32)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
