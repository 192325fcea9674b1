"""The model card of a bundle (card.json): what the model is, what it was validated on and how well, how it was
made. Figures come from where they were measured: the bench report for the artifacts it ran, the host checks for
TensorRT inputs (whose engines are built on the device)."""

from __future__ import annotations

from typing import Any

from edgetl.runtime.preprocess import PreprocessSpec


def search_summary(meta: dict[str, Any]) -> dict[str, Any] | None:
    """meta.json's recipe search without its space and trial list (the number of trials instead)."""
    search = meta.get("search")
    if not search:
        return None
    summary = {k: v for k, v in search.items() if k not in ("space", "trials")}
    summary["trials"] = len(search.get("trials") or [])
    return summary


def model_card(
    *,
    name: str,
    profile: dict[str, Any],
    meta: dict[str, Any],
    dataset_info: dict[str, Any],
    good_class: str | None,
    validated: dict[str, Any],
    measured_by: str,
    reference: dict[str, Any] | None,
    versions: dict[str, Any],
    acceptance: dict[str, Any] | None = None,
    details: dict[str, dict[str, Any]] | None = None,
    spec: PreprocessSpec | None = None,
) -> dict[str, Any]:
    """card.json's content. ``validated``: precision -> figures on the test split (with intervals where the
    report has them) and the threshold; ``reference``: the FP32 PyTorch model's test figures, when measured;
    ``acceptance``: the sign-off verdict of each precision and the recommended one (None when not judged here);
    ``details``: precision -> its artifact's details (the INT8 gate and ladder come from there); ``spec``: the
    bundle models' input (default: the training run's)."""
    spec = spec or PreprocessSpec.model_validate(meta["preprocess"])
    counts = dataset_info.get("counts", {})
    return {
        "name": name,
        "profile": profile["name"],
        "backend": profile["backend"],
        "device": profile.get("device"),
        "arch": meta["arch"],
        "classes": list(meta["classes"]),
        "good_class": good_class,
        "input": {
            "shape": [1, spec.input_size, spec.input_size, spec.channels]
            if spec.takes_pixels
            else [1, spec.channels, spec.input_size, spec.input_size],
            "normalisation": "in the model's graph" if spec.takes_pixels else "on the host (preprocess.json)",
            "dtype": spec.dtype,
            "layout": spec.layout,
            "preprocess": spec.model_dump(mode="json"),
        },
        "validated_on": {
            "split": "test",
            "images": sum(counts.get("test", {}).values()),
            "per_class": counts.get("test", {}),
            "dataset_sha256": dataset_info.get("hash"),
            "source": dataset_info.get("source"),
            "groups": (dataset_info.get("groups") or {}).get("independent"),
            "measured_by": measured_by,
        },
        "figures": validated,
        "acceptance": acceptance,
        "quantization": quantization_summary(details or {}),
        "fp32_reference": reference,
        "training": {
            key: meta.get(key) for key in ("strategy", "trained_from_block", "best_epoch", "epochs_run", "val_metrics")
        },
        "recipe": meta.get("recipe"),
        "search": search_summary(meta),
        "dataset_sha256": dataset_info.get("hash"),
        "versions": versions,
    }


def quantization_summary(details: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """precision -> its accuracy gate and the ladder rung it landed on, for the precisions that record one."""
    out = {}
    for precision, d in details.items():
        gate, ladder = d.get("gate"), d.get("ladder")
        if not isinstance(gate, dict) or not isinstance(ladder, dict):
            continue
        out[precision] = {
            "gate_passed": gate.get("passed"),
            "gate": gate.get("line"),
            "gate_on": gate.get("source"),
            "limits": gate.get("limits"),
            "rung": ladder.get("rung"),
            "landed": ladder.get("landed"),
            "kind": ladder.get("kind"),
            "why": ladder.get("why"),
            "rungs": [
                {"rung": r.get("rung"), "name": r.get("name"), "passed": r.get("passed"), "cost": r.get("cost")}
                for r in ladder.get("rungs", [])
            ],
        }
    return out


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(metrics: dict[str, Any], key: str) -> str:
    """' [low, high]' when the report carries a 95 % interval for ``key``."""
    intervals = metrics.get("intervals") or {}
    span = intervals.get(key) if isinstance(intervals, dict) else None
    if span is None:
        span = metrics.get(f"{key}_interval")
    return f" [{span[0]:.4f}, {span[1]:.4f}]" if isinstance(span, list | tuple) and len(span) == 2 else ""


def figure_lines(card: dict[str, Any]) -> list[str]:
    """Markdown lines for the bundle README: the validation data and each precision's figures."""
    data = card["validated_on"]
    lines = [
        "## Validated on",
        "",
        f"{data['images']} test images ({', '.join(f'{k}: {v}' for k, v in data['per_class'].items())}), dataset "
        f"sha256 {str(data['dataset_sha256'])[:12]}..., measured by {data['measured_by']}.",
        "",
        "| precision | accuracy | balanced accuracy | defect recall | false reject | threshold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for precision, figures in card["figures"].items():
        metrics = figures.get("metrics") or {}
        binary = metrics.get("binary") or {}
        tuned = (figures.get("threshold") or {}).get("threshold")
        lines.append(
            f"| {precision} | {_rate(metrics.get('accuracy'))}{_interval(metrics, 'accuracy')} "
            f"| {_rate(metrics.get('balanced_accuracy'))}{_interval(metrics, 'balanced_accuracy')} "
            f"| {_rate(binary.get('defect_recall'))}{_interval(binary, 'defect_recall')} "
            f"| {_rate(binary.get('false_reject'))}{_interval(binary, 'false_reject')} "
            f"| {'-' if tuned is None else f'{tuned:.6g}'} |"
        )
    for precision, q in (card.get("quantization") or {}).items():
        state = "passed" if q["gate_passed"] else "FAILED"
        lines += [
            "",
            f"## {precision.upper()} accuracy gate",
            "",
            f"Gate {state} on {q['gate_on']}: {q['gate']}.",
            f"Landed on rung {q['rung']} of {len(q['rungs'])} ({q['landed']}): {q['why']}.",
        ]
        if q.get("kind") == "bf16":
            lines.append(
                "This model is the FP32 IR run in bf16: on a CPU without AMX or AVX512-BF16 the runtime runs it in "
                "f32 (closer to FP32, at FP32's speed)."
            )
    verdict = card.get("acceptance")
    if verdict:
        lines += ["", "## Sign-off", "", verdict["summary"], ""]
        lines += [f"- {p}: {v['verdict']}" for p, v in verdict["precisions"].items()]
    return lines
