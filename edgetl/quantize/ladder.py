"""The INT8 ladder: when a quantized model fails its accuracy gate, climb until a rung passes, measuring each.

Rungs, in order (each scored by :func:`edgetl.quantize.gate.screened_gate`, with its cost: size and batch-1 p50):

1. the profile's recipe;
2. other calibration recipes (``quantization.ladder.recipes``: method, per-channel on or off; ONNX Runtime and
   TensorRT layouts; OpenVINO takes NNCF's ranges). When the profile corrects biases, each recipe is also tried
   without the correction, first (its ranges are cached, so that rung costs one quantization and one gate run;
   the correction is thus a measured choice: on a model whose drift it does not remove it can lower agreement);
3. mixed precision: the most sensitive groups (:mod:`edgetl.quantize.sensitivity`, measured on gate images) kept
   in floating point, one more at a time, up to ``max_float_groups`` and while the model stays faster than FP32
   (``max_latency_ratio``, each rung timed against FP32 in alternating blocks; TensorRT's speed is the device's,
   so no cap there);
4. BF16 (OpenVINO, ``bf16``: the FP32 IR run in bf16, where the build host's CPU has AMX or AVX512-BF16; gated
   and under the latency cap like a mixed rung), then FP16 (OpenVINO: FP16 weights; ONNX Runtime's CPU provider
   has no FP16 kernels worth it, TensorRT builds its own FP16 artifact from the profile);
5. FP32 (ONNX Runtime and OpenVINO).

The artifact lands on the first rung that passes, and records every rung, the sensitivity ranking and why.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from edgetl.quantize.calibration import CalibrationSet, ranges_file
from edgetl.quantize.evaluate import logits_fn, p50_ms, paired_p50_ms, size_bytes
from edgetl.quantize.gate import GateData, gate_line, screened_gate
from edgetl.quantize.settings import QuantizationSpec


def _copy_model(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    if src.suffix == ".xml":
        shutil.copyfile(src.with_suffix(".bin"), dst.with_suffix(".bin"))


def _float_ir(onnx_path: Path, out: Path, *, fp16: bool) -> dict[str, Any]:
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(out), compress_to_fp16=fp16)
    return {"ir": "fp16 weights" if fp16 else "fp32"}


def _bf16_ir(onnx_path: Path, out: Path) -> dict[str, Any]:
    """The FP32 IR, to run in bf16; a CPU without native BF16 runs it in f32 (``bf16_fallback``)."""
    return {**_float_ir(onnx_path, out, fp16=False), "inference_precision": "bf16", "bf16_fallback": "f32"}


def climb(
    onnx_path: Path,
    calib: CalibrationSet,
    *,
    out: Path,
    layout: str,
    settings: QuantizationSpec,
    data: GateData,
    quantize_once: Callable[..., dict[str, Any]],
    ranges: Path | None = None,
) -> dict[str, Any]:
    """Write the landed rung's model to ``out``; return its details with ``gate`` and ``ladder`` added.

    ``quantize_once(out, float_groups=..., method=..., per_channel=...)`` makes one INT8 candidate. ``ranges``:
    the folder of ``quantize_once``'s activation-range caches, which the sensitivity ranking reads too (histogram
    calibration of 300 images is the ladder's costliest step, and one method's ranges do not change).
    """
    from edgetl.quantize.sensitivity import rank_groups

    climbed_at = time.perf_counter()
    ladder = settings.ladder
    suffix = out.suffix
    timed = layout != "tensorrt"
    rungs: list[dict[str, Any]] = []
    candidates: list[tuple[dict[str, Any], Path, dict[str, Any]]] = []
    # Candidates are written beside the artifact (inside the run), so a full disk there is reported as the run's.
    with tempfile.TemporaryDirectory(prefix=".edgetl-ladder-", dir=out.parent) as tmp:
        folder = Path(tmp)
        fp32_file = onnx_path
        if layout == "openvino":
            fp32_file = folder / "fp32.xml"
            _float_ir(onnx_path, fp32_file, fp16=False)
        fp32_ms = p50_ms(fp32_file, data.images[0]) if timed else None

        def attempt(
            kind: str,
            name: str,
            build: Callable[[Path], dict[str, Any]],
            *,
            paired: bool = False,
            precision: str = "f32",
            **extra: Any,
        ) -> dict[str, Any]:
            """Build, gate and cost one rung (run in ``precision``); ``paired`` times it against FP32 in
            alternating blocks, now (the latency cap's yardstick: a figure from a calmer minute is none)."""
            path = folder / f"rung{len(rungs)}{suffix}"
            started = time.perf_counter()
            details = build(path)
            built = time.perf_counter() - started
            run = logits_fn(path, precision=precision, unfused=layout == "tensorrt")
            gate = screened_gate(run, data, settings.gate)
            cost: dict[str, Any] = {
                "size_bytes": size_bytes(path),
                "build_seconds": round(built, 1),
                "gate_seconds": round(time.perf_counter() - started - built, 1),
            }
            if timed and paired:
                cost["p50_ms"], cost["fp32_p50_ms"] = paired_p50_ms(
                    path, fp32_file, data.images[0], precision=precision
                )
                cost["timed"] = "paired with FP32"
            elif timed:
                cost["p50_ms"] = p50_ms(path, data.images[0], precision=precision)
                cost["fp32_p50_ms"] = fp32_ms
            record = {"rung": len(rungs) + 1, "kind": kind, "name": name, **extra, "passed": gate["passed"]}
            record.update({"gate": gate, "cost": cost})
            rungs.append(record)
            candidates.append((record, path, details))
            return record

        cap = ladder.max_latency_ratio

        def over_cap(record: dict[str, Any]) -> bool:
            """Fail ``record`` (and say why) when it is not faster than FP32 by the latency cap."""
            ms, ref_ms = record["cost"].get("p50_ms"), record["cost"].get("fp32_p50_ms")
            if cap is None or ms is None or not ref_ms or ms < cap * ref_ms:
                return False
            record["passed"] = False
            record["note"] = f"over the latency cap: {ms:.2f} ms >= {cap:g} x FP32's {ref_ms:.2f} ms"
            return True

        corrects = layout != "openvino" and settings.bias_correction > 0

        def correction(flag: bool) -> dict[str, Any]:
            """A rung's record of its bias correction, where the profile corrects biases."""
            return {"bias_correction": flag} if corrects else {}

        def recipe_name(method: str, per_channel: bool, corrected: bool = True) -> str:
            weights = "per-channel" if per_channel else "per-tensor"
            tail = ", no bias correction" if corrects and not corrected else ""
            return f"int8 {method}, {weights} weights{tail}"

        method = settings.method
        per_channel = True if layout == "tensorrt" else settings.per_channel
        first = attempt(
            "int8",
            "int8 (the profile's recipe)" if layout == "openvino" else recipe_name(method, per_channel),
            lambda p: quantize_once(p),
            **correction(True),
        )
        landed: dict[str, Any] | None = first if first["passed"] else None
        why = "the profile's INT8 recipe passed its gate" if landed else ""
        if landed is None and not ladder.enabled:
            landed, why = first, "the profile's INT8 recipe failed its gate and the ladder is off"
        sensitivity: list[dict[str, Any]] = []
        sensitivity_seconds: float | None = None
        if landed is None and layout != "openvino":
            tried: list[tuple[str, bool, bool]] = [(method, per_channel, True)]
            options: list[tuple[str, bool, bool]] = [(method, per_channel, False)] if corrects else []
            for recipe in ladder.recipes:
                if layout == "tensorrt" and not recipe.per_channel:
                    continue  # TensorRT's explicit quantization wants per-channel weights
                options += [(recipe.method, recipe.per_channel, c) for c in ((False, True) if corrects else (True,))]
            for option in options:
                if option in tried:
                    continue
                tried.append(option)
                name = recipe_name(*option)
                record = attempt(
                    "calibration",
                    name,
                    partial(quantize_once, method=option[0], per_channel=option[1], bias_correction=option[2]),
                    method=option[0],
                    per_channel=option[1],
                    **correction(option[2]),
                )
                if record["passed"]:
                    landed, why = record, f"the profile's recipe failed its gate; {name} passed"
                    break
        if landed is None and ladder.max_float_groups:
            ranked_at = time.perf_counter()
            base = max(
                (r for r in rungs if r["kind"] in ("int8", "calibration")),
                key=lambda r: r["gate"]["figures"]["agreement"]["value"],
            )
            base_method, base_channel = base.get("method", method), base.get("per_channel", per_channel)
            base_corrected = bool(base.get("bias_correction", True))
            count = min(ladder.sensitivity_images, len(data.images))
            sensitivity = rank_groups(
                onnx_path,
                calib,
                data.images[:count],
                data.reference[:count],
                settings=settings,
                method=base_method,
                per_channel=base_channel,
                tensorrt=layout == "tensorrt",
                ranges_cache=None if ranges is None else ranges_file(ranges, base_method),
            )
            sensitivity_seconds = round(time.perf_counter() - ranked_at, 1)
            for k in range(1, min(ladder.max_float_groups, len(sensitivity)) + 1):
                groups = [s["group"] for s in sensitivity[:k]]
                record = attempt(
                    "mixed",
                    f"{base['name'].split(' (')[0]}, {', '.join(groups)} in floating point",
                    partial(
                        quantize_once,
                        float_groups=groups,
                        method=base_method,
                        per_channel=base_channel,
                        bias_correction=base_corrected,
                    ),
                    paired=cap is not None,
                    float_groups=groups,
                    **correction(base_corrected),
                )
                if over_cap(record):
                    break
                if record["passed"]:
                    landed = record
                    why = (
                        f"INT8 failed its gate; keeping the {k} most sensitive group(s) ({', '.join(groups)}, by "
                        f"measured sensitivity) in floating point passed"
                    )
                    break
        bf16_skipped: str | None = None
        if landed is None and layout == "openvino" and ladder.bf16:
            from edgetl.runtime.cpu_features import bf16_support

            native, reason = bf16_support()
            if native:
                build = partial(_bf16_ir, onnx_path)
                record = attempt("bf16", "bf16 (the FP32 IR run in bf16)", build, paired=True, precision="bf16")
                if not over_cap(record) and record["passed"]:
                    landed, why = record, f"no INT8 or mixed rung passed its gate; bf16 passed ({reason})"
            else:
                bf16_skipped = f"no bf16 rung: {reason}"
        if landed is None and layout == "openvino":
            record = attempt("fp16", "fp16 weights", lambda p: _float_ir(onnx_path, p, fp16=True))
            if record["passed"]:
                before = "INT8, mixed or bf16" if any(r["kind"] == "bf16" for r in rungs) else "INT8 or mixed"
                landed, why = record, f"no {before} rung passed its gate; FP16 weights passed"
        if landed is None and layout != "tensorrt":
            record = attempt(
                "fp32",
                "fp32",
                lambda p: _float_ir(onnx_path, p, fp16=False) if layout == "openvino" else _copy(onnx_path, p),
            )
            kinds = ["INT8", "mixed"] + [k for k in ("bf16", "fp16") if any(r["kind"] == k for r in rungs)]
            before = f"{', '.join(kinds[:-1])} or {kinds[-1]}".replace("fp16", "FP16")
            landed, why = record, f"no {before} rung passed its gate; the artifact is the FP32 model"
        if landed is None:
            landed = max(rungs, key=lambda r: r["gate"]["figures"]["agreement"]["value"])
            why = (
                "no INT8 or mixed rung passed its gate; this is the closest one. TensorRT builds FP16 from the "
                "profile's fp16 artifact: deploy that one"
            )
        _, path, details = next(c for c in candidates if c[0] is landed)
        _copy_model(path, out)
    details = dict(details)
    details["gate"] = {**landed["gate"], "limits": settings.gate.model_dump(), "line": gate_line(landed["gate"])}
    details["ladder"] = {
        "landed": landed["name"],
        "kind": landed["kind"],
        "rung": landed["rung"],
        "why": why,
        "rungs": rungs,
        "sensitivity": sensitivity,
        "sensitivity_seconds": sensitivity_seconds,
        "seconds": round(time.perf_counter() - climbed_at, 1),
        "enabled": ladder.enabled,
        **({"bf16_skipped": bf16_skipped} if bf16_skipped else {}),
    }
    return details


def _copy(src: Path, dst: Path) -> dict[str, Any]:
    shutil.copyfile(src, dst)
    return {"format": "fp32 (the exported model)"}
