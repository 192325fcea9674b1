"""ONNX export, full checker, onnxslim, metadata, and parity against PyTorch on real images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgetl.errors import EdgetlError
from edgetl.files import atomic_path, sha256_file, write_json_atomic
from edgetl.onnx_safety import check_onnx_file

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(EdgetlError, RuntimeError):
    """An export that failed its checks; nothing was replaced."""


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = False,
    output_name: str = OUTPUT_NAME,
) -> None:
    """Export ``module`` (eval mode) to ``path`` with the TorchScript-based exporter.

    That exporter emits the requested opset directly; target runtimes such as TensorRT 8.6 on
    older JetPacks parse opset 17 at most, so the opset is a property of the target, not of torch.
    """
    module.eval()
    axes = {INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )


def onnx_from_checkpoint(
    model: nn.Module,
    meta: dict[str, Any],
    out: Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = False,
    slim: bool = True,
    checkpoint_sha256: str | None = None,
) -> Path:
    """Export, check (full_check), simplify and annotate; ``out`` is replaced atomically."""
    import onnx

    spec = meta["preprocess"]
    example = torch.zeros(1, spec["channels"], spec["input_size"], spec["input_size"])
    with atomic_path(out) as tmp:
        export_module(model, example, tmp, opset=opset, dynamic_batch=dynamic_batch)
        proto = onnx.load(str(tmp))
        if slim:
            import onnxslim

            proto = onnxslim.slim(proto)
        props = {
            "edgetl.classes": json.dumps(meta["classes"]),
            "edgetl.preprocess": json.dumps(spec),
            "edgetl.arch": meta["arch"],
            "edgetl.checkpoint_sha256": checkpoint_sha256 or "",
        }
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "edgetl"
        onnx.save(proto, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported model fails onnx.checker: {exc}") from exc
    return out


def onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file."""
    import onnx

    proto = onnx.load(str(check_onnx_file(path)), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def parity_check(
    model: nn.Module,
    onnx_path: Path,
    inputs: np.ndarray,
    *,
    atol: float = 1e-4,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Compare ONNX Runtime and PyTorch logits image by image.

    An image passes when its max |difference| is at most ``atol`` x max(1, its largest |logit|): float32 rounding
    grows with the logits' size (a model with large batch-norm scales, e.g. after AdaBN on few images, has large
    logits). Returns a report with max / mean |difference|, the largest scaled difference, top-1 agreement and
    ``passed``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(check_onnx_file(onnx_path)), providers=["CPUExecutionProvider"])
    model.eval()
    diffs, scaled, agree = [], [], []
    worst: tuple[float, str] = (0.0, "")
    with torch.inference_mode():
        for i in range(len(inputs)):
            x = inputs[i : i + 1]
            ref = model(torch.from_numpy(x)).numpy()
            got = np.asarray(session.run(None, {INPUT_NAME: x})[0])
            diff = float(np.abs(ref - got).max())
            diffs.append(diff)
            scaled.append(diff / max(1.0, float(np.abs(ref).max())))
            agree.append(bool(ref.argmax(1)[0] == got.argmax(1)[0]))
            if scaled[-1] >= worst[0]:
                worst = (scaled[-1], names[i] if names else str(i))
    report = {
        "images": len(inputs),
        "atol": atol,
        "max_abs_diff": max(diffs),
        "mean_abs_diff": float(np.mean(diffs)),
        "max_scaled_diff": max(scaled),
        "rule": "max |logit diff| <= atol x max(1, max |logit|) on every image, and the same top-1",
        "top1_agreement": float(np.mean(agree)),
        "worst_image": worst[1],
        "passed": max(scaled) <= atol and all(agree),
        "onnx_sha256": sha256_file(onnx_path),
    }
    return report


def export_run(
    model: nn.Module,
    meta: dict[str, Any],
    out_dir: Path,
    parity_inputs: np.ndarray,
    *,
    opset: int,
    dynamic_batch: bool,
    slim: bool,
    atol: float,
    checkpoint_sha256: str,
    names: list[str],
) -> dict[str, Any]:
    """Export into out_dir/model.onnx and write out_dir/parity.json; raise when parity fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.onnx") as staged:
        onnx_from_checkpoint(
            model,
            meta,
            staged,
            opset=opset,
            dynamic_batch=dynamic_batch,
            slim=slim,
            checkpoint_sha256=checkpoint_sha256,
        )
        report = parity_check(model, staged, parity_inputs, atol=atol, names=names)
        report["opset"] = opset
        report["checkpoint_sha256"] = checkpoint_sha256
        report["dynamic_batch"] = dynamic_batch
        if not report["passed"]:
            write_json_atomic(out_dir / "parity.failed.json", report)
            raise ExportError(
                f"ONNX and PyTorch disagree on {report['worst_image']}: max |logit diff| "
                f"{report['max_abs_diff']:.2e}, {report['max_scaled_diff']:.2e} of the logits' size (limit "
                f"{atol:.0e}), top-1 agreement {report['top1_agreement']:.3f}. "
                f"The previous model.onnx is kept; details in {out_dir / 'parity.failed.json'}. Try another opset "
                "(export.opset) or slim: false."
            )
    write_json_atomic(out_dir / "parity.json", report)
    return report
