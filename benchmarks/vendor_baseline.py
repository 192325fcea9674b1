"""edgetl's artifacts against each vendor's default path built from the same FP32 ONNX, in one sitting.

Usage: python benchmarks/vendor_baseline.py runs/demo [--rounds 5] [--iterations 200] [--threads N]

Vendor defaults, built here from runs/<name>/export/model.onnx and the run's calibration set:
- ONNX Runtime FP32 (a plain InferenceSession);
- ONNX Runtime ``quantize_static`` with its defaults (QDQ, signed int8 activations and weights, minmax);
- OpenVINO FP32 IR with its default inference precision (BF16 on CPUs with AMX or AVX512-BF16, else f32);
- ``nncf.quantize`` with its defaults on the converted model.
Then every compiled artifact of the run (runs/<name>/targets/*/*), through edgetl's own runners, each fed what it
takes: the vendors' paths the normalised float tensor, edgetl's uint8-input artifacts the pixels of the same image
(their normalisation runs inside the timed call).

Rounds are interleaved (round 1 times every model, then round 2 ...), so a busy host slows all alike; each model's
figure is the median of its rounds' batch-1 p50. Prints each model's p50, batch-8 images/s, its ratio to the
fastest vendor default, and its top-1 agreement with ONNX Runtime FP32 at batch 1 on the calibration images (a
fast path that answers wrongly is no baseline: label-free, so calibration images serve), then the lines "fastest
edgetl artifact / best vendor default" and the same against the vendor defaults that agree as edgetl's gate asks
(``--min-agreement``). A script, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgetl.quantize.evaluate import times_ms

Infer = Callable[[np.ndarray], object]


def _ort(path: Path, threads: int) -> Infer:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _openvino(path: Path, threads: int) -> Infer:
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    )
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})


def vendor_defaults(run: Path, folder: Path, threads: int) -> dict[str, Infer]:
    """The vendors' default paths from the run's FP32 ONNX (see the module docstring)."""
    import nncf
    import openvino as ov
    from onnxruntime.quantization import QuantFormat, quantize_static

    from edgetl.quantize import load_calibration
    from edgetl.quantize.calibration import Feeds

    onnx_path = run / "export" / "model.onnx"
    calib = load_calibration(run / "calibration")

    ort_int8 = folder / "quantize_static.onnx"
    quantize_static(
        str(onnx_path), str(ort_int8), Feeds([{"input": b} for b in calib.batches()]), quant_format=QuantFormat.QDQ
    )
    fp32_ir = folder / "fp32.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(fp32_ir), compress_to_fp16=False)
    nncf_ir = folder / "nncf.xml"
    quantized = nncf.quantize(ov.convert_model(str(onnx_path)), nncf.Dataset(calib.batches()))
    ov.save_model(quantized, str(nncf_ir), compress_to_fp16=False)
    return {
        "vendor: ONNX Runtime FP32": _ort(onnx_path, threads),
        "vendor: ONNX Runtime quantize_static defaults": _ort(ort_int8, threads),
        "vendor: OpenVINO FP32 IR, default precision": _openvino(fp32_ir, threads),
        "vendor: nncf.quantize defaults": _openvino(nncf_ir, threads),
    }


def edgetl_artifacts(run: Path, threads: int, pixels: np.ndarray) -> dict[str, tuple[Infer, np.ndarray]]:
    """Every compiled artifact of the run that runs here, through edgetl's runners, with its inputs made of
    ``pixels`` (uint8 N, H, W, C): the pixels themselves for a uint8-input artifact, else the float tensors."""
    from edgetl.runtime.preprocess import PreprocessSpec, model_input
    from edgetl.targets import Artifact, get_target

    out = {}
    for record in sorted((run / "targets").glob("*/*/artifact.json")):
        artifact = Artifact.read(record.parent)
        target = get_target(artifact.backend)
        if not target.is_available() or artifact.backend == "tensorrt":
            continue
        runner = target.load(artifact, threads=threads)
        runner.__enter__()
        landed = (artifact.details.get("ladder") or {}).get("landed")
        name = f"edgetl: {artifact.profile} {artifact.precision}" + (f" ({landed})" if landed else "")
        if artifact.preprocess.get("dtype") == "uint8":
            name += " (uint8 input)"
        out[name] = (runner.infer, model_input(pixels, PreprocessSpec.model_validate(artifact.preprocess)))
    return out


def p50_ms(infer: Infer, x: np.ndarray, iterations: int) -> float:
    """Batch-1 p50 after warm-up; each timed block starts after the ladder's pause (the previous model's ONNX
    Runtime threads spin for a few ms after its last run)."""
    times_ms(infer, x, 10)
    return float(np.median(times_ms(infer, x, iterations)))


def images_per_s(infer: Infer, x: np.ndarray, seconds: float = 1.0) -> float | None:
    try:
        infer(x)
    except Exception:
        return None
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        infer(x)
        calls += 1
    return len(x) * calls / (time.perf_counter() - t0)


def _logits(result: object) -> np.ndarray:
    """The first output of an ORT ``run`` (a list), an OpenVINO request's result (a dict), or a runner's array."""
    if isinstance(result, np.ndarray):
        return result
    return np.asarray(result[0])  # type: ignore[index]  # ORT's list and OpenVINO's OVDict index outputs alike


def agreement(infer: Infer, inputs: np.ndarray, reference: np.ndarray) -> float:
    """Top-1 agreement of ``infer`` at batch 1 with ``reference`` (N, classes) on ``inputs``."""
    top1 = np.array([_logits(infer(np.ascontiguousarray(inputs[i : i + 1]))).argmax() for i in range(len(inputs))])
    return float(np.mean(top1 == reference.argmax(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--agreement-images", type=int, default=64)
    parser.add_argument("--min-agreement", type=float, default=0.98, help="The INT8 gate's default agreement.")
    args = parser.parse_args()

    from edgetl.quantize import load_calibration

    n = args.agreement_images
    x = np.ascontiguousarray(load_calibration(args.run / "calibration").tensors[: max(1, n)])
    pixels = np.load(args.run / "calibration" / "calib.npy", allow_pickle=False)[: max(1, n)]
    with tempfile.TemporaryDirectory(prefix="edgetl-vendor-") as tmp:
        # The vendors' default paths take the float tensor; edgetl's artifacts what they were built for.
        vendors = vendor_defaults(args.run, Path(tmp), args.threads)
        models: dict[str, tuple[Infer, np.ndarray]] = {name: (infer, x) for name, infer in vendors.items()}
        models.update(edgetl_artifacts(args.run, args.threads, pixels))
        fp32 = vendors["vendor: ONNX Runtime FP32"]
        reference = np.concatenate([_logits(fp32(x[i : i + 1])) for i in range(len(x))])
        agree = {name: agreement(infer, inputs, reference) for name, (infer, inputs) in models.items()}
        rounds: dict[str, list[float]] = {name: [] for name in models}
        for r in range(args.rounds):
            for name, (infer, inputs) in models.items():
                rounds[name].append(p50_ms(infer, np.ascontiguousarray(inputs[:1]), args.iterations))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v[-1]:.2f}" for v in rounds.values()), flush=True)
        p50 = {name: statistics.median(values) for name, values in rounds.items()}
        rate = {
            name: images_per_s(infer, np.ascontiguousarray(np.repeat(inputs[:1], 8, axis=0)))
            for name, (infer, inputs) in models.items()
        }
    vendor = min((v, n) for n, v in p50.items() if n.startswith("vendor:"))
    ours = min((v, n) for n, v in p50.items() if n.startswith("edgetl:"))
    width = max(map(len, p50))
    print(f"\n{'model':<{width}}  p50 ms  x best vendor  batch-8 img/s  agreement ({len(x)} images, batch 1)")
    for name, value in sorted(p50.items(), key=lambda kv: kv[1]):
        b8 = "refused" if rate[name] is None else f"{rate[name]:.0f}"
        print(f"{name:<{width}}  {value:6.2f}  {value / vendor[0]:12.2f}  {b8:>13}  {agree[name]:.3f}")
    print(f"\nfastest edgetl artifact / best vendor default: {ours[0] / vendor[0]:.2f} ({ours[1]} vs {vendor[1]})")
    agreeing = [(v, n) for n, v in p50.items() if n.startswith("vendor:") and agree[n] >= args.min_agreement]
    if agreeing:
        best = min(agreeing)
        print(
            f"fastest edgetl artifact / best vendor default agreeing >= {args.min_agreement:g} with FP32: "
            f"{ours[0] / best[0]:.2f} (vs {best[1]})"
        )


if __name__ == "__main__":
    main()
