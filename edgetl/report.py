"""report.json (schema-versioned), report.md and report.html, plus the table printed at the end of a run."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from edgetl.files import write_json_atomic, write_text_atomic

# Bump with edgetl/schemas/report.schema.json whenever a required field is added or a meaning changes.
SCHEMA_VERSION = "1.2"


def report_schema() -> dict[str, Any]:
    """The JSON Schema of report.json shipped with edgetl."""
    return dict(json.loads(resources.files("edgetl").joinpath("schemas/report.schema.json").read_text("utf-8")))


def validate_report(report: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when ``report`` does not follow the schema."""
    import jsonschema

    jsonschema.validate(report, report_schema(), cls=jsonschema.Draft202012Validator)


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def ci(value: Any, interval: Any, spec: str = ".3f") -> str:
    """``0.887 [0.862, 0.909]``: a figure with its 95 % interval (the figure alone when there is none)."""
    if value is None:
        return "-"
    if not interval:
        return format(value, spec)
    return f"{format(value, spec)} [{format(interval[0], spec)}, {format(interval[1], spec)}]"


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


def artifact_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per artifact for tables (markdown and terminal)."""
    rows = []
    ref = report["model"].get("test_metrics", {})
    if ref:
        rows.append(["pytorch", "torch", "fp32", *_headline(ref), "1.000", "-", "-", "-"])
    for a in report["artifacts"]:
        lat = a["latency_ms"]
        rows.append(
            [
                a["target"],
                a["backend"],
                a["precision"],
                *_headline(a["metrics"]),
                _fmt(a["fp32_agreement"]),
                _fmt(lat["p50"], ".2f"),
                _fmt(lat["p99"], ".2f"),
                f"{a['size_bytes'] / 1e6:.2f}",
            ]
        )
    return rows


HEADER = [
    "target",
    "backend",
    "precision",
    "accuracy [95 % CI]",
    "bal. acc. [95 % CI]",
    "defect recall [95 % CI]",
    "false reject [95 % CI]",
    "FP32 agree",
    "p50 ms",
    "p99 ms",
    "MB",
]


def data_lines(report: dict[str, Any]) -> list[str]:
    """The data set in plain words: images, classes, per-split counts and groups, validation, warnings."""
    ds = report["dataset"]
    counts = ds.get("counts", {})
    groups = ds.get("groups", {})
    independent = groups.get("independent", {})
    lines = [
        f"{ds.get('num_images')} images, classes {', '.join(ds.get('classes', []))}; split "
        f"{ds.get('split_source')} (seed {ds.get('seed')}), hash {str(ds.get('hash', ''))[:16]}",
    ]
    for split in ("train", "val", "test"):
        per = counts.get(split, {})
        parts = ", ".join(f"{c} {n}" for c, n in per.items())
        where = f", {independent[split]} independent groups" if split in independent else ""
        lines.append(f"{split}: {sum(per.values())} images ({parts}){where}")
    if groups:
        emb = groups.get("embedding", {})
        how = {"automatic": "automatic links"}.get(groups.get("source", "automatic"), groups.get("source"))
        auto = f"{groups.get('auto_linked_images', 0)} images grouped automatically"
        if emb.get("used"):
            auto += f" (same-part threshold {emb.get('same_part_threshold')} on pretrained features)"
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


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _name(a: dict[str, Any]) -> str:
    return f"{a['target']} {a['precision']}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def best_throughput(a: dict[str, Any]) -> tuple[str, float | None]:
    """(batch size, images/s) of the fastest supported batch size of an artifact."""
    rates = {int(b): r["images_per_s"] for b, r in a["throughput"]["batch"].items() if r.get("supported")}
    if not rates:
        return "-", None
    size = max(rates, key=lambda b: rates[b])
    return str(size), rates[size]


def latency_rows(report: dict[str, Any]) -> list[list[str]]:
    """Compute, end-to-end, cold start, throughput and memory per artifact."""
    rows = []
    for a in report["artifacts"]:
        lat, e2e, cold = a["latency_ms"], a["end_to_end_ms"], a["cold_start_ms"]
        size, rate = best_throughput(a)
        rows.append(
            [
                _name(a),
                f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f}",
                f"{lat['jitter']:.2f}",
                f"{e2e['p50']:.2f} / {e2e['p99']:.2f}",
                f"{_pct(lat['over_deadline'])} / {_pct(e2e['over_deadline'])}",
                f"{cold['load_ms']:.0f} + {cold['first_inference_ms']:.0f}",
                f"{a['throughput']['sequential_batch1_images_per_s']:.0f}",
                "-" if rate is None else f"{rate:.0f} (batch {size})",
                f"{a['memory_mb']['peak']:.0f} ({a['memory_mb']['model']:+.0f})",
                f"{a['size_bytes'] / 1e6:.2f}",
            ]
        )
    return rows


def _binary_row(name: str, section: dict[str, Any]) -> list[str]:
    t, b = section["threshold"], section["metrics"].get("binary", {})
    intervals = b.get("intervals", {})
    return [
        name,
        _fmt(t["threshold"], ".4f"),
        _pct(t["val_false_reject"]),
        ci(b.get("defect_recall"), intervals.get("defect_recall")),
        ci(b.get("false_reject"), intervals.get("false_reject")),
        _fmt(b.get("roc_auc"), ".4f"),
        _fmt(b.get("pr_auc"), ".4f"),
    ]


def per_class_rows(report: dict[str, Any]) -> list[list[str]]:
    """Precision, recall with its interval, F1 and support of every class, for PyTorch FP32 and each artifact."""
    models = [("pytorch fp32", report["model"].get("test_metrics", {}))]
    models += [(_name(a), a["metrics"]) for a in report["artifacts"]]
    rows = []
    for name, m in models:
        recall_ci = m.get("intervals", {}).get("recall", {})
        for c, v in m.get("per_class", {}).items():
            rows.append(
                [name, c, _fmt(v["precision"]), ci(v["recall"], recall_ci.get(c)), _fmt(v["f1"]), str(v["support"])]
            )
    return rows


PER_CLASS_HEADER = ["model", "class", "precision", "recall [95 % CI]", "F1", "images"]


def _slice_rows(name: str, slices: dict[str, Any]) -> list[list[str]]:
    return [
        [
            name,
            s_name,
            str(m["images"]),
            _fmt(m["accuracy"]),
            _fmt(m["balanced_accuracy"]),
            _pct(m.get("binary", {}).get("defect_recall")),
            _pct(m.get("binary", {}).get("false_reject")),
            _fmt(m["gap_to_rest"], "+.3f"),
            "**worse than the rest**" if m["flagged"] else "",
        ]
        for s_name, m in slices.items()
    ]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    ds, model, bench = report["dataset"], report["model"], report["bench"]
    lines: list[str] = [
        f"# edgetl report: {report['run']}",
        "",
        "Figures are on the test split, read once for this report; [a, b] is a 95 % interval (Wilson for shares, "
        "counting shots of one part as one; a bootstrap over parts for balanced accuracy).",
        "",
        *_table(HEADER, artifact_rows(report)),
        "",
        "## Data",
        "",
        *[f"- {line}" for line in data_lines(report)],
        f"- model: {model['arch']}, strategy {model['strategy']} (blocks {model['trained_from_block']}+ trained), "
        f"best epoch {model['best_epoch']}, "
        f"val balanced accuracy {_fmt(model['val_metrics'].get('val_balanced_accuracy'))}",
        f"- ONNX parity: max |logit diff| {_fmt(model.get('parity', {}).get('max_abs_diff'), '.2e')} on "
        f"{model.get('parity', {}).get('images')} validation images",
        f"- host: {report['host'].get('cpu')}, threads {bench.get('threads')}, {bench.get('isolation', 'one process')}",
    ]
    if ds.get("warnings"):
        lines += ["", "Warnings:", *[f"- {w}" for w in ds["warnings"]]]
    search = model.get("search")
    if search:
        lines += [
            "",
            "## Recipe search",
            "",
            f"{len(search.get('trials', []))} trials in {search.get('seconds')} s (budget "
            f"{search.get('budget_minutes')} min), each scored by {search.get('folds')}-fold group cross-validation "
            "on train+val; the test split is not read. The chosen recipe was refit on the train split up to its "
            f"cross-validated epoch ({search.get('best_epoch')}); `train/recipe.yaml` reruns it.",
            "",
            *_table(TRIAL_HEADER, trial_rows(report)),
        ]
    if report["artifacts"]:
        deadline = bench.get("deadline_ms")
        lines += [
            "",
            "## Latency (ms, batch 1)",
            "",
            f"Compute: preprocessed tensor in, logits out; {bench.get('iterations')} timed runs after "
            f"{bench.get('warmup')} warm-up runs. End to end: read and decode an image file, preprocess, infer, "
            f"softmax. Jitter = p99 - p50. Deadline: {f'{deadline} ms' if deadline else 'none set (--deadline-ms)'}. "
            "Cold start = load + first inference in a fresh process. Memory: peak resident set of the measuring "
            "process (growth from loading and running the model in brackets).",
            "",
            *_table(
                [
                    "artifact",
                    "compute p50 / p99 / max",
                    "jitter",
                    "end-to-end p50 / p99",
                    "over deadline (compute / e2e)",
                    "cold start (load + first)",
                    "img/s sequential",
                    "img/s best batch",
                    "peak RSS MB",
                    "size MB",
                ],
                latency_rows(report),
            ),
        ]
        unsupported = {
            _name(a): sorted(int(b) for b, r in a["throughput"]["batch"].items() if not r.get("supported"))
            for a in report["artifacts"]
        }
        if any(unsupported.values()):
            lines += [
                "",
                "Batch sizes an artifact refuses (static batch-1 export; export with `export.dynamic_batch: true` "
                "to measure them): " + "; ".join(f"{k}: {v}" for k, v in unsupported.items() if v) + ".",
            ]
    ref = model.get("reference", {})
    if ref.get("threshold"):
        lines += [
            "",
            "## Defect detection (good class: " + str(bench.get("good_class")) + ")",
            "",
            f"Defect score = 1 - P({bench.get('good_class')}); a part is rejected when its score reaches the "
            "threshold. The threshold is tuned for each artifact on the "
            f"{ref['threshold'].get('tuned_on', 'validation split')} "
            f"so that at most {_pct(bench.get('max_false_reject'))} of good parts are rejected, then applied to "
            "the test split. It is stored in each artifact folder as threshold.json.",
            "",
            *_table(
                [
                    "model",
                    "threshold",
                    "val false reject",
                    "test defect recall",
                    "test false reject",
                    "ROC-AUC",
                    "PR-AUC",
                ],
                [_binary_row("pytorch fp32", ref)]
                + [_binary_row(_name(a), a) for a in report["artifacts"] if a.get("threshold")],
            ),
        ]
    if ref.get("slices"):
        rows = _slice_rows("pytorch fp32", ref["slices"])
        for a in report["artifacts"]:
            rows += _slice_rows(_name(a), a["slices"])
        lines += [
            "",
            "## Per slice (test split)",
            "",
            f"A slice is flagged when it has at least {bench.get('min_slice_images')} test images and its balanced "
            f"accuracy is more than {bench.get('slice_gap')} below that of all other test images pooled "
            "(gap = rest - slice).",
            "",
            *_table(
                [
                    "model",
                    "slice",
                    "images",
                    "accuracy",
                    "bal. acc.",
                    "defect recall",
                    "false reject",
                    "gap",
                    "flag",
                ],
                rows,
            ),
        ]
    if report["artifacts"]:
        lines += ["", "## Against FP32 PyTorch (test split)", ""]
        lines += _table(
            ["artifact", "top-1 agreement", "mean abs logit diff", "max abs logit diff", "disagreeing images"],
            [
                [
                    _name(a),
                    _fmt(a["logits_vs_fp32"]["top1_agreement"], ".4f"),
                    _fmt(a["logits_vs_fp32"]["mean_abs_logit_diff"], ".2e"),
                    _fmt(a["logits_vs_fp32"]["max_abs_logit_diff"], ".2e"),
                    str(a["logits_vs_fp32"]["disagreements"]),
                ]
                for a in report["artifacts"]
            ],
        )
        for a in report["artifacts"]:
            if a["disagreements"]:
                lines += ["", f"{_name(a)} disagrees with FP32 on:", ""]
                lines += [
                    f"- `{d['path']}`: label {d['label']}, artifact {d['prediction']}, FP32 {d['fp32']}"
                    for d in a["disagreements"]
                ]
    lines += ["", "## Per class (test split)", "", *_table(PER_CLASS_HEADER, per_class_rows(report))]
    lines += _bundle_lines(report.get("bundles", {}))
    if report.get("transfer"):
        from edgetl.transfer.section import markdown_lines

        lines += markdown_lines(report["transfer"])
    return "\n".join(lines) + "\n"


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
            [precision, file, _fmt(h["accuracy"]), f"{h['accuracy_delta_vs_fp32'] * 100:+.1f}",
             _fmt(h["vs_fp32"]["top1_agreement"]), "-" if recall is None else f"{recall * 100:.1f} %"]
        )  # fmt: skip
    return rows


def _bundle_lines(bundles: dict[str, Any]) -> list[str]:
    """TensorRT bundles: what was checked on the build host, and the command for the device."""
    lines: list[str] = []
    for name, b in bundles.items():
        lines += ["", f"## {bundle_title(name, b)}", ""]
        lines += [f"`{b['path']}`, parity pack of {b['parity_images']} images. Checked on the build host "
                  "(ONNX Runtime, test split; INT8 as unfused Q/DQ):", ""]  # fmt: skip
        lines += _table(BUNDLE_HEADER, bundle_rows(b))
        built = "built here" if b.get("engines_built_here") else "not built here (built on the device)"
        lines += ["", f"TensorRT engines: {built}. On the device: `{b['on_device']}`."]
    return lines


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write report.json, report.md and the self-contained report.html atomically."""
    from edgetl.report_html import html_report

    report = {"schema_version": SCHEMA_VERSION, **report}
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", markdown(report))
    write_text_atomic(run_dir / "report.html", html_report(report))


def print_report(report: dict[str, Any]) -> None:
    """Print the artifact table with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"edgetl {report['run']}: test split, [95 % intervals]")
    for name in HEADER:
        table.add_column(name, justify="left" if name in {"target", "backend", "precision"} else "right")
    for row in artifact_rows(report):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    console.print(table)
    for line in data_lines(report)[1:4]:
        console.print(f"  {line}")
