"""report.html: one self-contained page (inline CSS, charts and thumbnails as base64 PNG, no network)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from edgetl.report import (
    BUNDLE_HEADER,
    HEADER,
    PER_CLASS_HEADER,
    TRIAL_HEADER,
    _binary_row,
    _name,
    _slice_rows,
    artifact_rows,
    bundle_rows,
    bundle_title,
    data_lines,
    latency_rows,
    per_class_rows,
    trial_rows,
)

# Thumbnails shown per artifact in the gallery of images where it disagrees with FP32.
GALLERY_MAX = 24
THUMBNAIL_PX = 112

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1f2933; background: #fff; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d9e2ec; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .85rem; }
th, td { border: 1px solid #d9e2ec; padding: .25rem .5rem; text-align: right; }
th { background: #f0f4f8; } td:first-child, th:first-child { text-align: left; }
.note { color: #52606d; font-size: .85rem; max-width: 60rem; }
.flag { color: #b42318; font-weight: 600; }
figure { margin: .5rem 0; } img.chart { max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: .5rem; }
.gallery figure { width: 128px; font-size: .7rem; text-align: center; }
ul.facts { font-size: .9rem; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c).replace('**', '')}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: Any, alt: str) -> str:
    return f'<figure><img class="chart" alt="{_esc(alt)}" src="{_png(fig)}"></figure>'


def accuracy_latency_chart(report: dict[str, Any]) -> str:
    """Balanced accuracy against compute p50 for every target x precision; PyTorch FP32 as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    lows = []
    for a in report["artifacts"]:
        x, y = a["latency_ms"]["p50"], a["metrics"]["balanced_accuracy"]
        low, high = a["metrics"].get("intervals", {}).get("balanced_accuracy", [y, y])
        lows.append(low)
        marker = {"fp32": "o", "fp16": "s", "int8": "^"}.get(a["precision"], "o")
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt=marker, markersize=7, capsize=4, label=_name(a))
        ax.annotate(_name(a), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ref = report["model"].get("test_metrics", {}).get("balanced_accuracy")
    if ref is not None:
        ax.axhline(ref, color="grey", linestyle="--", linewidth=1, label="PyTorch FP32")
    # The axis spans the intervals (at least 0.1): a one-image difference must not look like a win.
    floor = min([*lows, ref if ref is not None else 1.0])
    ax.set_ylim(max(0.0, min(floor - 0.02, 0.9)), 1.0)
    ax.set_xlabel("compute latency p50 (ms, batch 1)")
    ax.set_ylabel("balanced accuracy (test, 95 % interval)")
    ax.set_title("Accuracy versus latency (overlapping intervals: no measurable difference)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _img(fig, "accuracy versus latency")


def latency_distribution_chart(report: dict[str, Any]) -> str:
    """Box plots of the per-call times: compute and end to end, per artifact."""
    from matplotlib.figure import Figure

    names = [_name(a) for a in report["artifacts"]]
    fig = Figure(figsize=(10, 0.5 * len(names) + 2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, title in zip(axes, ("latency_ms", "end_to_end_ms"), ("compute", "end to end"), strict=True):
        data = [a[key]["samples_ms"] for a in report["artifacts"]]
        ax.boxplot(data, orientation="horizontal", tick_labels=names, showfliers=True, flierprops={"markersize": 2})
        deadline = report["bench"].get("deadline_ms")
        if deadline:
            ax.axvline(deadline, color="#b42318", linestyle=":", label=f"deadline {deadline} ms")
            ax.legend(fontsize=7)
        ax.set_xlabel("ms per image (batch 1)")
        ax.set_title(f"Latency distribution: {title}")
        ax.grid(alpha=0.3, axis="x")
    return _img(fig, "latency distributions")


def confusion_chart(report: dict[str, Any]) -> str:
    """Confusion matrices (test split) of PyTorch FP32 and every artifact."""
    from matplotlib.figure import Figure

    classes = report["model"]["classes"]
    panels = [("pytorch fp32", report["model"]["test_metrics"]["confusion_matrix"])]
    panels += [(_name(a), a["metrics"]["confusion_matrix"]) for a in report["artifacts"]]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.4 * cols, 3.1 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, matrix) in zip(axes.flat, panels, strict=False):
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=30)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return _img(fig, "confusion matrices")


def slice_chart(report: dict[str, Any]) -> str:
    """Grouped bars of balanced accuracy per slice for PyTorch FP32 and every artifact; flagged bars hatched."""
    import numpy as np
    from matplotlib.figure import Figure

    models = [("pytorch fp32", report["model"]["reference"]["slices"])]
    models += [(_name(a), a["slices"]) for a in report["artifacts"]]
    slices = sorted(models[0][1])
    fig = Figure(figsize=(max(6, 1.2 * len(models) * len(slices) / 2 + 3), 3.8))
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(slices))
    lowest = 1.0
    for k, (name, per) in enumerate(models):
        values = [per.get(s, {}).get("balanced_accuracy", 0.0) for s in slices]
        lowest = min([lowest, *values])
        bars = ax.bar(x + k * width, values, width, label=name)
        for bar, s in zip(bars, slices, strict=True):
            if per.get(s, {}).get("flagged"):
                bar.set_hatch("//")
                bar.set_edgecolor("#b42318")
    ax.set_xticks(x + 0.4 - width / 2, slices)
    ax.set_ylabel("balanced accuracy (test)")
    ax.set_ylim(max(0.0, lowest - 0.1), 1.0)
    ax.set_title("Per slice (hatched: flagged)")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return _img(fig, "per-slice balanced accuracy")


def _thumbnail(path: str) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.convert("L" if image.mode in {"L", "I;16", "I"} else "RGB").save(buffer, format="PNG")
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gallery(report: dict[str, Any]) -> str:
    """Thumbnails of the test images where an artifact's class differs from FP32 PyTorch's."""
    parts = []
    for a in report["artifacts"]:
        shown = a["disagreements"][:GALLERY_MAX]
        if not shown:
            continue
        more = len(a["disagreements"]) - len(shown)
        figures = []
        for d in shown:
            src = _thumbnail(d["path"])
            picture = f'<img alt="{_esc(Path(d["path"]).name)}" src="{src}">' if src else "(file not readable)"
            figures.append(
                f"<figure>{picture}<figcaption>{_esc(Path(d['path']).name)}<br>label {_esc(d['label'])}<br>"
                f"artifact {_esc(d['prediction'])}, FP32 {_esc(d['fp32'])}</figcaption></figure>"
            )
        tail = f'<p class="note">... and {more} more (all listed in report.json).</p>' if more > 0 else ""
        parts.append(f"<h3>{_esc(_name(a))}</h3><div class='gallery'>{''.join(figures)}</div>{tail}")
    return "".join(parts) or "<p>Every artifact agrees with FP32 PyTorch on every test image.</p>"


def bundle_sections(bundles: dict[str, Any]) -> list[str]:
    """TensorRT bundles: host checks per precision and the command to run on the device."""
    out: list[str] = []
    for name, b in bundles.items():
        built = "built here" if b.get("engines_built_here") else "not built here: they are built on the device"
        out += [
            f"<h2>{_esc(bundle_title(name, b))}</h2>",
            f"<p>{_esc(b['path'])}; parity pack of {b['parity_images']} images. Checked on the build host in ONNX "
            "Runtime on the test split (INT8 as unfused Q/DQ). TensorRT engines: "
            f"{_esc(built)}. On the device: <code>{_esc(b['on_device'])}</code></p>",
            _table(BUNDLE_HEADER, bundle_rows(b)),
        ]
    return out


def html_report(report: dict[str, Any]) -> str:
    """The whole report as one HTML page."""
    ds, model, bench = report["dataset"], report["model"], report["bench"]
    facts = [
        *data_lines(report),
        f"model: {model['arch']}, strategy {model.get('strategy')}, best epoch {model.get('best_epoch')}",
        f"host: {report['host'].get('cpu')}; threads {bench.get('threads')}; {bench.get('isolation')}",
        f"created {report.get('created')}; schema {report.get('schema_version')}",
    ]
    body = [
        f"<h1>edgetl report: {_esc(report['run'])}</h1>",
        "<h2 id='summary'>Summary (test split, 95 % intervals)</h2>",
        "<p class='note'>The test split is read once, for this report. [a, b] is a 95 % interval: Wilson for "
        "shares (shots of one part count as one), a bootstrap over parts for balanced accuracy.</p>",
        _table(HEADER, artifact_rows(report)),
        "<h2 id='data'>Data</h2>",
        "<ul class='facts'>" + "".join(f"<li>{_esc(f)}</li>" for f in facts) + "</ul>",
    ]
    if ds.get("warnings"):
        body += [
            "<h3>Warnings</h3>",
            "<ul class='facts'>" + "".join(f"<li class='flag'>{_esc(w)}</li>" for w in ds["warnings"]) + "</ul>",
        ]
    search = model.get("search")
    if search:
        body += [
            "<h2 id='search'>Recipe search</h2>",
            f"<p class='note'>{len(search.get('trials', []))} trials in {search.get('seconds')} s (budget "
            f"{search.get('budget_minutes')} min), each scored by {search.get('folds')}-fold group cross-validation "
            "on train+val; the test split is not read. The chosen recipe was refit on the train split up to its "
            f"cross-validated epoch ({search.get('best_epoch')}); train/recipe.yaml reruns it.</p>",
            _table(TRIAL_HEADER, trial_rows(report)),
        ]
    body += ["<h2 id='per-class'>Per class (test split)</h2>", _table(PER_CLASS_HEADER, per_class_rows(report))]
    if report["artifacts"]:
        body += [
            "<h2>Accuracy versus latency</h2>",
            accuracy_latency_chart(report),
            "<h2>Latency</h2>",
            "<p class='note'>Compute: preprocessed tensor in, logits out. End to end: file read and decode, "
            "preprocessing, inference, softmax. Jitter = p99 - p50. Each artifact is measured in its own process; "
            "cold start = model load + first inference there.</p>",
            _table(
                [
                    "artifact",
                    "compute p50 / p99 / max",
                    "jitter",
                    "e2e p50 / p99",
                    "over deadline",
                    "cold start ms",
                    "img/s seq.",
                    "img/s best batch",
                    "peak RSS MB",
                    "size MB",
                ],
                latency_rows(report),
            ),
            latency_distribution_chart(report),
        ]
    ref = model.get("reference", {})
    if ref.get("threshold"):
        body += [
            f"<h2>Defect detection (good class: {_esc(bench.get('good_class'))})</h2>",
            f"<p class='note'>Reject threshold tuned on the validation split per artifact for at most "
            f"{100 * bench.get('max_false_reject', 0):.1f} % false rejects, applied to the test split.</p>",
            _table(
                ["model", "threshold", "val false reject", "defect recall", "false reject", "ROC-AUC", "PR-AUC"],
                [_binary_row("pytorch fp32", ref)]
                + [_binary_row(_name(a), a) for a in report["artifacts"] if a.get("threshold")],
            ),
        ]
    body += ["<h2>Confusion matrices (test split)</h2>", confusion_chart(report)]
    if ref.get("slices"):
        rows = _slice_rows("pytorch fp32", ref["slices"])
        for a in report["artifacts"]:
            rows += _slice_rows(_name(a), a["slices"])
        body += [
            "<h2>Per slice</h2>",
            f"<p class='note'>Flagged: at least {bench.get('min_slice_images')} images and balanced accuracy more "
            f"than {bench.get('slice_gap')} below all other test images pooled.</p>",
            slice_chart(report),
            _table(
                ["model", "slice", "images", "accuracy", "bal. acc.", "defect recall", "false reject", "gap", "flag"],
                rows,
            ),
        ]
    if report["artifacts"]:
        body += ["<h2>Images where an artifact disagrees with FP32 PyTorch</h2>", gallery(report)]
    body += bundle_sections(report.get("bundles", {}))
    if report.get("transfer"):
        from edgetl.transfer.section import html_parts

        body += html_parts(report["transfer"])
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>edgetl report: {_esc(report['run'])}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
