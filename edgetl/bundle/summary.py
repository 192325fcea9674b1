"""What the build says about bundles: the report's section on TensorRT bundles, and one summary per bundle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgetl.run import RunDir


def bundle_summaries(run: RunDir, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The host checks of every TensorRT bundle in run/bundle/, for the report (CPU bundles carry the bench's
    own figures, which the report has already); a damaged bundle is left out, with a note to ``log``."""
    from edgetl.errors import EdgetlError
    from edgetl.runtime.bundle import read_manifest

    summaries = {}
    for path in sorted((run.root / "bundle").glob("*/manifest.json")):
        try:
            m = read_manifest(path.parent)
        except EdgetlError as exc:
            if log is not None:
                log(f"[yellow]warning:[/yellow] bundle {path.parent} left out of the report: {exc}")
            continue
        if not m["profile"].get("tensorrt") or "host_metrics" not in m:
            continue
        summaries[path.parent.name] = {
            "path": str(path.parent),
            "tensorrt": m["profile"]["tensorrt"],
            "models": {p: v["onnx"] for p, v in m["models"].items()},
            "host_metrics": {k: v for k, v in m["host_metrics"].items() if k != "fp32_onnx"},
            "parity_images": len(m["parity"]["names"]),
            "engines_built_here": (path.parent / "engines").is_dir(),
            "on_device": m["on_device"],
        }
    return summaries


def device_summary(run: RunDir, name: str, manifest: dict[str, Any]) -> str:
    """What was written for a profile's device, and the command to run there."""
    folder = run.root / "bundle" / name
    models = ", ".join(f for m in manifest["models"].values() for f in m["files"])
    lines = [f"[bold]bundle {name}[/bold]: {folder}"]
    if "host_metrics" not in manifest:
        thresholds = "thresholds of the bench" if manifest.get("thresholds") else "no reject threshold"
        lines.append(
            f"  built here: {models}, {thresholds}, Triton configs, parity pack of "
            f"{len(manifest['parity']['names'])} images, model card, manifest (sha256)"
        )
        lines.append(f"  on the line: [bold]{manifest['on_device']}[/bold], then edgetl predict {name} IMAGES...")
        return "\n".join(lines)
    host = manifest["host_metrics"]
    lines.append("  built here: " + models + ", DeepStream and Triton configs, parity pack of "
                 + f"{len(manifest['parity']['names'])} images, model card, manifest (sha256)")  # fmt: skip
    for precision in manifest["models"]:
        h = host[precision]
        lines.append(
            f"  checked here ({h['onnx']} in ONNX Runtime, test split): accuracy {h['accuracy']:.4f} "
            f"({h['accuracy_delta_vs_fp32'] * 100:+.1f} pts vs FP32), agreement {h['vs_fp32']['top1_agreement']:.4f}"
        )
    lines.append("  not built here: TensorRT engines (they are tied to the device's GPU and TensorRT version)")
    lines.append(f"  on the device run: [bold]{manifest['on_device']}[/bold]")
    return "\n".join(lines)
