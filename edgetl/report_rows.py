"""Table rows of the report, formatted once for report.md, report.html and the console."""

from __future__ import annotations

from typing import Any

from edgetl.bench.acceptance import STATUS_WORDS, shown
from edgetl.bench.host import is_busy


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number in ``spec``, '-' for None."""
    return "-" if value is None else format(value, spec)


def pct(value: Any) -> str:
    """A share as '1.2 %', '-' for None."""
    return "-" if value is None else f"{100 * value:.1f} %"


def ci(value: Any, interval: Any, spec: str = ".3f") -> str:
    """``0.887 [0.862, 0.909]``: a figure with its 95 % interval (the figure alone when there is none)."""
    if value is None:
        return "-"
    if not interval:
        return format(value, spec)
    return f"{format(value, spec)} [{format(interval[0], spec)}, {format(interval[1], spec)}]"


def artifact_name(a: dict[str, Any]) -> str:
    """'cpu int8', or 'cpu int8 (fp16 model)' when the INT8 ladder fell through to a floating-point rung."""
    ladder = (a.get("details") or {}).get("ladder")  # a dict; a list of rungs in some reports
    kind = ladder.get("kind") if isinstance(ladder, dict) else None
    fell = a["precision"] == "int8" and kind in ("bf16", "fp16", "fp32")
    return f"{a['target']} {a['precision']}" + (f" ({kind} model)" if fell else "")


def latency_cell(a: dict[str, Any], key: str = "latency_ms", q: str = "p50") -> str:
    """``8.24 (8.10-8.51)``: a latency percentile with the range of its blocks; marked on a busy host."""
    latency = a[key]
    spread = (latency.get("spread") or {}).get(q)
    text = f"{latency[q]:.2f}" if not spread else f"{latency[q]:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"
    return text + (" unreliable" if is_busy(a) else "")


def _headline(metrics: dict[str, Any]) -> list[str]:
    """Accuracy, balanced accuracy, defect recall and false-reject rate, each with its interval."""
    intervals = metrics.get("intervals", {})
    binary = metrics.get("binary", {})
    b_int = binary.get("intervals", {})
    return [
        ci(metrics.get("accuracy"), intervals.get("accuracy")),
        ci(metrics.get("balanced_accuracy"), intervals.get("balanced_accuracy")),
        ci(binary.get("defect_recall"), b_int.get("defect_recall")),
        ci(binary.get("false_reject"), b_int.get("false_reject")),
    ]


HEADER = [
    "target",
    "backend",
    "precision",
    "accuracy [95 % CI]",
    "bal. acc. [95 % CI]",
    "defect recall [95 % CI]",
    "false reject [95 % CI]",
    "FP32 agree",
    "p50 ms (blocks)",
    "p99 ms (blocks)",
    "MB",
    "verdict",
]


def _verdicts(report: dict[str, Any]) -> dict[str, str]:
    section = report.get("acceptance") or {}
    return {v["artifact"]: v["verdict"] for v in section.get("artifacts", [])}


def artifact_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per artifact (and the PyTorch reference first) for the summary tables."""
    rows = []
    ref = report["model"].get("test_metrics", {})
    verdicts = _verdicts(report)
    if ref:
        rows.append(["pytorch", "torch", "fp32", *_headline(ref), "1.000", "-", "-", "-", "reference"])
    for a in report["artifacts"]:
        rows.append(
            [
                a["target"],
                a["backend"],
                artifact_name(a).removeprefix(f"{a['target']} "),
                *_headline(a["metrics"]),
                fmt(a["fp32_agreement"]),
                latency_cell(a, "latency_ms", "p50"),
                latency_cell(a, "latency_ms", "p99"),
                f"{a['size_bytes'] / 1e6:.2f}",
                verdicts.get(f"{a['target']} {a['precision']}", "-"),
            ]
        )
    return rows


def _judged_cell(entry: dict[str, Any]) -> str:
    """'0.520 [0.450, 0.590]: NOT MET' / '9.86 ms (blocks 9.50-10.20): met (95 %)'."""
    if entry["figure"] is None:
        return STATUS_WORDS[entry["status"]] + (f" ({entry['note']})" if entry.get("note") else "")
    busy = " (host busy)" if "busy" in (entry.get("note") or "") else ""
    return f"{shown(entry)}: {STATUS_WORDS[entry['status']]}{busy}"


def verdict_header(report: dict[str, Any]) -> list[str]:
    """The verdict table's columns: the criterion, its evidence, then one column per judged artifact."""
    section = report.get("acceptance") or {}
    return ["criterion", "judged on", *(v["artifact"] for v in section.get("artifacts", []))]


def verdict_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per criterion (figure and status per artifact), then the verdict row."""
    verdicts = (report.get("acceptance") or {}).get("artifacts", [])
    if not verdicts:
        return []
    rows = []
    for i, criterion in enumerate(verdicts[0]["criteria"]):
        rows.append(
            [criterion["criterion"], criterion["evidence"], *(_judged_cell(v["criteria"][i]) for v in verdicts)]
        )
    rows.append(["verdict", "", *(v["verdict"] for v in verdicts)])
    return rows


def recommendation_lines(report: dict[str, Any]) -> list[str]:
    """One line per target: the recommended artifact, or that none meets the criteria and what fails most."""
    section = report.get("acceptance") or {}
    lines = [t["line"] for t in section.get("targets", {}).values()]
    for name in report.get("bundles", {}):
        if name not in section.get("targets", {}):
            lines.append(f"{name}: measured on the device ('edgetl bench BUNDLE' there); not judged on this host")
    return lines


def acceptance_note(report: dict[str, Any]) -> str:
    """What the verdict means, in one paragraph."""
    section = report.get("acceptance") or {}
    if not section.get("criteria"):
        return (
            "No acceptance criteria are set: add an acceptance: section to the config (min_class_recall, "
            "min_defect_recall, max_false_reject, min_balanced_accuracy, max_p99_ms, max_e2e_p99_ms, max_size_mb, "
            "max_memory_mb) or pass --accept-* options to 'edgetl build' or 'edgetl bench'."
        )
    need = (
        "met with 95 % confidence"
        if section.get("require_confidence", True)
        else "met at least on the point estimate (acceptance.require_confidence: false)"
    )
    return (
        "Each criterion is judged on the test split: met (95 %) when the whole 95 % interval (shares) or the slowest "
        "block (latency, on a quiet host) is on the right side of the limit; point estimate only when just the "
        f"figure is; NOT MET otherwise. Size and memory are measured as they are. An artifact passes when every "
        f"criterion is {need}; the recommended artifact of a target is the fastest (compute p50) that passes."
    )


def data_lines(report: dict[str, Any]) -> list[str]:
    """The data set in plain words: images, classes, split, groups, validation, slices."""
    ds = report["dataset"]
    groups = ds.get("groups", {})
    lines = [
        f"{ds.get('num_images')} images, classes {', '.join(ds.get('classes', []))}; split "
        f"{ds.get('split_source')} (seed {ds.get('seed')}), hash {str(ds.get('hash', ''))[:16]}",
    ]
    if groups:
        emb = groups.get("embedding", {})
        how = {"automatic": "automatic links"}.get(groups.get("source", "automatic"), groups.get("source"))
        auto = f"{groups.get('auto_linked_images', 0)} images grouped automatically"
        if emb.get("used"):
            auto += f" (pretrained-feature pairs past the re-exposure margin {emb.get('reexposed_margin')})"
        elif emb.get("reason"):
            auto += f"; features: {emb['reason']}"
        lines.append(
            f"groups: {groups.get('groups')} in all from the {how}; {auto}; largest {groups.get('largest_group')}"
        )
    validation = ds.get("validation", {})
    if validation and not validation.get("adequate", True):
        lines.append("validation split too small: " + "; ".join(validation.get("reasons", [])) + ", so choices "
                     "use cross-validation on train+val where possible")  # fmt: skip
    if ds.get("slices"):
        lines.append("slices: " + ", ".join(f"{k} {v}" for k, v in ds["slices"].items()))
    return lines


def split_header(report: dict[str, Any]) -> list[str]:
    """Columns of the per-split counts table."""
    return ["split", "images", *report["dataset"].get("classes", []), "independent groups"]


def split_rows(report: dict[str, Any]) -> list[list[str]]:
    """Images per class and independent groups (parts) of each split."""
    ds = report["dataset"]
    independent = ds.get("groups", {}).get("independent", {})
    rows = []
    for split in ("train", "val", "test"):
        per = ds.get("counts", {}).get(split, {})
        rows.append(
            [
                split,
                str(sum(per.values())),
                *(str(per.get(c, 0)) for c in ds.get("classes", [])),
                str(independent.get(split, "-")),
            ]
        )
    return rows


def model_lines(report: dict[str, Any]) -> list[str]:
    """The trained model and the ONNX parity check in plain words."""
    model = report["model"]
    parity = model.get("parity", {})
    return [
        f"model: {model['arch']}, strategy {model.get('strategy')} (blocks {model.get('trained_from_block')}+ "
        f"trained), best epoch {model.get('best_epoch')}, validation balanced accuracy "
        f"{fmt(model.get('val_metrics', {}).get('val_balanced_accuracy'))}",
        f"ONNX parity: max |logit diff| {fmt(parity.get('max_abs_diff'), '.2e')} on {parity.get('images')} "
        "validation images",
    ]


def trial_rows(report: dict[str, Any]) -> list[list[str]]:
    """The recipe search's trials (the winner marked), for the report."""
    search = report["model"].get("search") or {}
    winner = search.get("recipe")
    rows = []
    for trial in search.get("trials", []):
        mark = " (chosen)" if trial.get("recipe") == winner and trial.get("state") == "complete" else ""
        rows.append(
            [
                f"{trial['trial']}{mark}",
                trial.get("description", ""),
                trial.get("state", ""),
                ci(trial.get("cv_balanced_accuracy"), trial.get("interval")),
                "-" if trial.get("best_epoch") is None else str(trial["best_epoch"]),
                "-" if trial.get("seconds") is None else f"{trial['seconds']:.0f}",
                trial.get("pruned_because") or "",
            ]
        )
    return rows


TRIAL_HEADER = ["trial", "recipe", "state", "CV bal. acc. [95 % CI]", "epoch", "s", "why stopped"]

HISTORY_COLUMNS = [
    ("epoch", "epoch", "d"),
    ("train_loss", "train loss", ".4f"),
    ("val_loss", "val loss", ".4f"),
    ("train_accuracy", "train accuracy", ".3f"),
    ("val_accuracy", "val accuracy", ".3f"),
    ("val_balanced_accuracy", "val bal. accuracy", ".3f"),
]


def history_header(report: dict[str, Any]) -> list[str]:
    """Columns of the training-history table that train/history.csv holds."""
    history = report["model"].get("history") or {}
    return [label for key, label, _ in HISTORY_COLUMNS if key in history]


def history_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per epoch of the final fit (the kept epoch marked)."""
    history = report["model"].get("history") or {}
    best = report["model"].get("best_epoch")
    keys = [(key, spec) for key, _, spec in HISTORY_COLUMNS if key in history]
    rows = []
    for i in range(len(history.get("epoch", []))):
        row = [format(int(history[k][i]), spec) if spec == "d" else format(history[k][i], spec) for k, spec in keys]
        if best is not None and int(history["epoch"][i]) == best:
            row[0] += " (kept)"
        rows.append(row)
    return rows


def _ladder_of(a: dict[str, Any]) -> list[dict[str, Any]]:
    ladder = (a.get("details") or {}).get("ladder")
    if isinstance(ladder, dict):
        ladder = ladder.get("rungs")
    return [r for r in ladder if isinstance(r, dict)] if isinstance(ladder, list) else []


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    if isinstance(value, dict | list):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) if isinstance(value, dict) else str(value)
    return "-" if value is None else str(value)


def _figure(gate: dict[str, Any], name: str) -> str:
    f = (gate.get("figures") or {}).get(name)
    if not isinstance(f, dict):
        return "-"
    low, high = f["interval"]
    text = f"{f['value']:.3f} [{low:.3f}, {high:.3f}]"
    if f.get("read_at") is not None and f["read_at"] != f.get("max_false_reject"):
        text += f" at {f['read_at']:.1%} false rejects"
    return text + ("" if f.get("met", True) else " (not met)")


RUNG_HEADER = [
    "rung",
    "kind",
    "what",
    "passed",
    "agreement",
    "bal. acc. drop",
    "defect recall drop",
    "p50 ms (FP32)",
    "size MB",
    "build + gate s",
    "note",
]


def _rung_row(rung: dict[str, Any]) -> list[str]:
    """One measured rung of edgetl's ladder (a gate and a cost per rung)."""
    gate, cost = rung.get("gate") or {}, rung.get("cost") or {}
    p50, fp32 = cost.get("p50_ms"), cost.get("fp32_p50_ms")
    speed = "-" if p50 is None else f"{p50:.3f}" + ("" if fp32 is None else f" ({fp32:.3f})")
    return [
        str(rung.get("rung")),
        str(rung.get("kind")),
        str(rung.get("name")),
        _cell(rung.get("passed")),
        _figure(gate, "agreement"),
        _figure(gate, "balanced_accuracy_drop"),
        _figure(gate, "defect_recall_drop"),
        speed,
        "-" if cost.get("size_bytes") is None else f"{cost['size_bytes'] / 1e6:.2f}",
        "-"
        if cost.get("build_seconds") is None
        else f"{cost['build_seconds']:.0f} + {cost.get('gate_seconds', 0):.0f}",
        "; ".join(n for n in (_screen_note(gate), str(rung.get("note") or "")) if n),
    ]


def _screen_note(gate: dict[str, Any]) -> str:
    """How many images a rung's figures are on, where the gate screened it first (edgetl.quantize.gate)."""
    if gate.get("screen"):
        return f"passed on the first {gate['screen']['images']} images; figures on all {gate.get('images')}"
    if gate.get("screened_out"):
        return f"figures on the first {gate.get('images')} images only (failed there)"
    return ""


def ladder_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(artifact, header, rows) of every INT8 ladder the artifacts record (details.ladder: one dict per rung)."""
    out = []
    for a in report["artifacts"]:
        rungs = _ladder_of(a)
        if not rungs:
            continue
        if all("gate" in rung for rung in rungs):
            out.append((artifact_name(a), RUNG_HEADER, [_rung_row(rung) for rung in rungs]))
            continue
        header = list(dict.fromkeys(k for rung in rungs for k in rung))
        out.append((artifact_name(a), header, [[_cell(rung.get(k)) for k in header] for rung in rungs]))
    return out


def ladder_outcomes(report: dict[str, Any]) -> list[str]:
    """One line per INT8 artifact with a gate: where it landed, why, and its gate's figures."""
    lines = []
    for a in report["artifacts"]:
        details = a.get("details") or {}
        gate, ladder = details.get("gate"), details.get("ladder")
        if not isinstance(gate, dict) or not isinstance(ladder, dict):
            continue
        verdict = "passed" if gate.get("passed") else "FAILED"
        lines.append(
            f"{artifact_name(a)}: landed on rung {ladder.get('rung')} ({ladder.get('landed')}), gate {verdict} on "
            f"{gate.get('source')}: {gate.get('line')}. Why: {ladder.get('why')}."
        )
        sensitivity = ladder.get("sensitivity") or []
        if sensitivity:
            ranked = ", ".join(f"{s['group']} (agreement {s['agreement']:.3f}, error {s['error']:.3g})"
                               for s in sensitivity[:5])  # fmt: skip
            lines.append(f"{artifact_name(a)}: most sensitive groups, each quantized alone: {ranked}.")
        if ladder.get("bf16_skipped"):
            lines.append(f"{artifact_name(a)}: {ladder['bf16_skipped']}.")
    return lines


def best_throughput(a: dict[str, Any]) -> tuple[str, float | None]:
    """(batch size, images/s) of the fastest supported batch size of an artifact; OpenVINO's THROUGHPUT-hint
    figures count too (their batch is marked "streams")."""
    rates = {str(b): r["images_per_s"] for b, r in a["throughput"]["batch"].items() if r.get("supported")}
    hinted = a["throughput"].get("throughput_hint") or {}
    rates.update({f"{b} (streams)": r["images_per_s"] for b, r in hinted.items() if r.get("supported")})
    if not rates:
        return "-", None
    size = max(rates, key=lambda b: rates[b])
    return size, rates[size]


LATENCY_HEADER = [
    "artifact",
    "compute p50 (blocks)",
    "compute p99 (blocks)",
    "jitter",
    "e2e p50 (blocks)",
    "e2e p99 (blocks)",
    "over deadline (compute / e2e)",
    "cold start (load + first)",
    "img/s sequential",
    "img/s best batch",
    "peak RSS MB",
    "size MB",
    "host while measuring",
]


def host_cell(a: dict[str, Any]) -> str:
    """'quiet (waited 3 %)' / 'BUSY (waited 48 %): unreliable' from the reference workload before and after."""
    check = a.get("host_check")
    if not isinstance(check, dict):
        return "not checked"
    worst = max(check["before"]["waiting_share"], check["after"]["waiting_share"])
    return (
        f"BUSY (waited {100 * worst:.0f} %): unreliable" if check.get("busy") else f"quiet (waited {100 * worst:.0f} %)"
    )


def latency_rows(report: dict[str, Any]) -> list[list[str]]:
    """Compute and end-to-end latency with their block spread, cold start, throughput, memory, host state."""
    rows = []
    for a in report["artifacts"]:
        lat, e2e, cold = a["latency_ms"], a["end_to_end_ms"], a["cold_start_ms"]
        size, rate = best_throughput(a)
        rows.append(
            [
                artifact_name(a),
                latency_cell(a, "latency_ms", "p50"),
                latency_cell(a, "latency_ms", "p99"),
                f"{lat['jitter']:.2f}",
                latency_cell(a, "end_to_end_ms", "p50"),
                latency_cell(a, "end_to_end_ms", "p99"),
                f"{pct(lat['over_deadline'])} / {pct(e2e['over_deadline'])}",
                f"{cold['load_ms']:.0f} + {cold['first_inference_ms']:.0f}",
                f"{a['throughput']['sequential_batch1_images_per_s']:.0f}",
                "-" if rate is None else f"{rate:.0f} (batch {size})",
                f"{a['memory_mb']['peak']:.0f} ({a['memory_mb']['model']:+.0f})",
                f"{a['size_bytes'] / 1e6:.2f}",
                host_cell(a),
            ]
        )
    return rows


def unsupported_batches(report: dict[str, Any]) -> dict[str, list[int]]:
    """Batch sizes each artifact refused (a static batch-1 export)."""
    return {
        artifact_name(a): sorted(int(b) for b, r in a["throughput"]["batch"].items() if not r.get("supported"))
        for a in report["artifacts"]
    }


BINARY_HEADER = [
    "model",
    "threshold",
    "val false reject",
    "test defect recall",
    "test false reject",
    "ROC-AUC",
    "PR-AUC",
]


def binary_row(name: str, section: dict[str, Any]) -> list[str]:
    """Threshold, validation false rejects and the test figures of one model's reject rule."""
    t, b = section["threshold"], section["metrics"].get("binary", {})
    intervals = b.get("intervals", {})
    return [
        name,
        fmt(t["threshold"], ".4f"),
        pct(t["val_false_reject"]),
        ci(b.get("defect_recall"), intervals.get("defect_recall")),
        ci(b.get("false_reject"), intervals.get("false_reject")),
        fmt(b.get("roc_auc"), ".4f"),
        fmt(b.get("pr_auc"), ".4f"),
    ]


def binary_rows(report: dict[str, Any]) -> list[list[str]]:
    """binary_row of the PyTorch reference and of every artifact with a threshold."""
    ref = report["model"].get("reference", {})
    rows = [binary_row("pytorch fp32", ref)] if ref.get("threshold") else []
    return rows + [binary_row(artifact_name(a), a) for a in report["artifacts"] if a.get("threshold")]


# False-reject budgets at which the trade-off table reads each curve.
BUDGETS = (0.005, 0.01, 0.02, 0.05, 0.1)


def tradeoff_header() -> list[str]:
    """Columns of the operating-point table."""
    return ["model", *(f"recall at <= {100 * b:g} % false rejects" for b in BUDGETS), "chosen threshold"]


def _best_recall(curve: dict[str, list[float]], budget: float) -> float | None:
    recalls = [r for f, r in zip(curve["false_reject"], curve["defect_recall"], strict=True) if f <= budget + 1e-12]
    return max(recalls) if recalls else None


def tradeoff_rows(report: dict[str, Any]) -> list[list[str]]:
    """Best test defect recall within each false-reject budget, and where the tuned threshold landed."""
    models = [("pytorch fp32", report["model"].get("reference", {}))]
    models += [(artifact_name(a), a) for a in report["artifacts"]]
    rows = []
    for name, section in models:
        curve = section.get("tradeoff")
        if not curve:
            continue
        b = section["metrics"].get("binary", {})
        chosen = f"{pct(b.get('defect_recall'))} at {pct(b.get('false_reject'))}"
        rows.append([name, *(pct(_best_recall(curve, budget)) for budget in BUDGETS), chosen])
    return rows


def per_class_rows(report: dict[str, Any]) -> list[list[str]]:
    """Precision and recall with their intervals, F1 and support of every class, for PyTorch and each artifact."""
    models = [("pytorch fp32", report["model"].get("test_metrics", {}))]
    models += [(artifact_name(a), a["metrics"]) for a in report["artifacts"]]
    rows = []
    for name, m in models:
        intervals = m.get("intervals", {})
        for c, v in m.get("per_class", {}).items():
            rows.append(
                [
                    name,
                    c,
                    ci(v["precision"], intervals.get("precision", {}).get(c)),
                    ci(v["recall"], intervals.get("recall", {}).get(c)),
                    fmt(v["f1"]),
                    str(v["support"]),
                ]
            )
    return rows


PER_CLASS_HEADER = ["model", "class", "precision [95 % CI]", "recall [95 % CI]", "F1", "images"]


def confusion_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(model, header, rows) of each confusion matrix: rows are true classes, columns predicted ones."""
    classes = report["model"]["classes"]
    panels = [("pytorch fp32", report["model"]["test_metrics"]["confusion_matrix"])]
    panels += [(artifact_name(a), a["metrics"]["confusion_matrix"]) for a in report["artifacts"]]
    header = ["true \\ predicted", *classes]
    return [(name, header, [[c, *map(str, row)] for c, row in zip(classes, m, strict=True)]) for name, m in panels]


SLICE_HEADER = ["model", "slice", "images", "accuracy", "bal. acc. [95 % CI]", "defect recall", "false reject",
                "gap", "flag"]  # fmt: skip


def slice_rows(name: str, slices: dict[str, Any]) -> list[list[str]]:
    """Per-slice figures of one model (a flagged slice marked)."""
    return [
        [
            name,
            s_name,
            str(m["images"]),
            fmt(m["accuracy"]),
            ci(m["balanced_accuracy"], m.get("intervals", {}).get("balanced_accuracy")),
            pct(m.get("binary", {}).get("defect_recall")),
            pct(m.get("binary", {}).get("false_reject")),
            fmt(m["gap_to_rest"], "+.3f"),
            "worse than the rest" if m["flagged"] else "",
        ]
        for s_name, m in slices.items()
    ]


def all_slice_rows(report: dict[str, Any]) -> list[list[str]]:
    """slice_rows of the PyTorch reference and every artifact."""
    rows = slice_rows("pytorch fp32", report["model"].get("reference", {}).get("slices", {}))
    for a in report["artifacts"]:
        rows += slice_rows(artifact_name(a), a["slices"])
    return rows


AGREEMENT_HEADER = ["artifact", "top-1 agreement", "mean abs logit diff", "max abs logit diff", "disagreeing images"]


def agreement_rows(report: dict[str, Any]) -> list[list[str]]:
    """Each artifact against FP32 PyTorch on the test split."""
    return [
        [
            artifact_name(a),
            fmt(a["logits_vs_fp32"]["top1_agreement"], ".4f"),
            fmt(a["logits_vs_fp32"]["mean_abs_logit_diff"], ".2e"),
            fmt(a["logits_vs_fp32"]["max_abs_logit_diff"], ".2e"),
            str(a["logits_vs_fp32"]["disagreements"]),
        ]
        for a in report["artifacts"]
    ]


BUNDLE_HEADER = ["precision", "model", "accuracy", "vs FP32 (pts)", "agreement", "defect recall"]


def bundle_title(name: str, bundle: dict[str, Any]) -> str:
    """'Device bundle <profile> (TensorRT x.y, JetPack z)'."""
    trt = bundle["tensorrt"]
    jetpack = f", JetPack {trt['jetpack']}" if trt.get("jetpack") else ""
    return f"Device bundle {name} (TensorRT {trt['version']}{jetpack})"


def bundle_rows(bundle: dict[str, Any]) -> list[list[str]]:
    """One row per precision of a bundle's host checks (BUNDLE_HEADER)."""
    rows = []
    for precision, file in bundle["models"].items():
        h = bundle["host_metrics"][precision]
        recall = h.get("binary", {}).get("defect_recall")
        rows.append(
            [precision, file, fmt(h["accuracy"]), f"{h['accuracy_delta_vs_fp32'] * 100:+.1f}",
             fmt(h["vs_fp32"]["top1_agreement"]), "-" if recall is None else f"{recall * 100:.1f} %"]
        )  # fmt: skip
    return rows


def run_size_rows(report: dict[str, Any]) -> list[list[str]]:
    """The run folder's size by part, and its rebuildable files."""
    size = report.get("run_size") or {}
    shared = "its models are hard links to the run's artifacts, counted once (above)"
    rows = [[part, f"{n / 1e6:.1f}", shared if part == "bundle" else ""] for part, n in size.get("parts", {}).items()]
    rows += [
        [f["path"], f"{f['bytes'] / 1e6:.1f}", "rebuildable: " + f["rebuilt_by"]] for f in size.get("rebuildable", [])
    ]
    if size:
        rows.append(["whole run (report files left out)", f"{size['bytes'] / 1e6:.1f}", ""])
    return rows


def host_lines(report: dict[str, Any]) -> list[str]:
    """Host, bench settings, creation time, schema and library versions."""
    bench, host = report["bench"], report["host"]
    versions = ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items())
    return [
        f"host: {host.get('cpu')} ({host.get('cpu_flags') or 'no SIMD flags listed'}), threads {bench.get('threads')}, "
        f"{bench.get('isolation', 'one process')}",
        f"created {report.get('created')}; report schema {report.get('schema_version')}",
        f"versions: {versions}",
    ]
