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
import time
from pathlib import Path

import numpy as np


def _session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _measure(path: Path, x: np.ndarray, threads: int) -> tuple[np.ndarray, float]:
    session = _session(path, threads)
    predictions = np.array([session.run(None, {"input": x[i : i + 1]})[0].argmax() for i in range(len(x))])
    for _ in range(30):
        session.run(None, {"input": x[:1]})
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        session.run(None, {"input": x[:1]})
        times.append(time.perf_counter() - t0)
    return predictions, 1000 * float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--fp32-blocks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nncf", action="store_true", help="Also quantize with nncf.quantize (ONNX backend).")
    args = parser.parse_args()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgetl.data.dataset import load_split
    from edgetl.export import onnx_metadata
    from edgetl.pipeline import RunDir, _split_inputs
    from edgetl.preprocess import PreprocessSpec
    from edgetl.targets.base import block_index

    run = RunDir(args.run)
    dataset = load_split(run.data)
    fp32 = run.export / "model.onnx"
    spec = PreprocessSpec.model_validate_json(onnx_metadata(fp32)["edgetl.preprocess"])
    x, y, _ = _split_inputs(dataset, spec, "val")
    calib = np.load(run.root / "calibration" / "calib.npy", allow_pickle=False)
    reference, fp32_ms = _measure(fp32, x, args.threads)
    print(f"fp32: val accuracy {(reference == y).mean():.4f}, p50 {fp32_ms:.2f} ms")
    layouts = {
        "u8 x s8, 7-bit weights": (QuantType.QUInt8, QuantType.QInt8, True),
        "u8 x s8, 8-bit weights": (QuantType.QUInt8, QuantType.QInt8, False),
        "u8 x u8, 8-bit weights": (QuantType.QUInt8, QuantType.QUInt8, False),
        "s8 x s8, 8-bit weights": (QuantType.QInt8, QuantType.QInt8, False),
    }

    class Reader:
        def __init__(self) -> None:
            self.items = iter({"input": calib[i : i + 1]} for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="edgetl-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        excluded = [
            n.name
            for n in onnx.load(str(prepared)).graph.node
            if (b := block_index(n.name)) is not None and b < args.fp32_blocks
        ]
        candidates = []
        for name, (activations, weights, reduce_range) in layouts.items():
            out = Path(tmp) / f"{len(candidates)}.onnx"
            quantize_static(
                str(prepared),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                nodes_to_exclude=excluded,
                activation_type=activations,
                weight_type=weights,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": weights == QuantType.QInt8},
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
                    nncf.Dataset([{"input": calib[i : i + 1]} for i in range(len(calib))]),
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
