"""report.json (schema-versioned) and report.md, plus the table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.files import write_json_atomic, write_text_atomic

SCHEMA_VERSION = "1.0"


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def artifact_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per artifact for tables (markdown and terminal)."""
    rows = []
    ref = report["model"].get("test_metrics", {})
    if ref:
        rows.append(
            [
                "pytorch",
                "torch",
                "fp32",
                _fmt(ref.get("accuracy")),
                _fmt(ref.get("balanced_accuracy")),
                "1.000",
                "-",
                "-",
                "-",
                "-",
            ]
        )
    for a in report["artifacts"]:
        lat = a["latency_ms"]
        rows.append(
            [
                a["target"],
                a["backend"],
                a["precision"],
                _fmt(a["metrics"]["accuracy"]),
                _fmt(a["metrics"]["balanced_accuracy"]),
                _fmt(a["fp32_agreement"]),
                _fmt(lat["p50"], ".2f"),
                _fmt(lat["p90"], ".2f"),
                _fmt(lat["p99"], ".2f"),
                f"{a['size_bytes'] / 1e6:.2f}",
            ]
        )
    return rows


HEADER = [
    "target",
    "backend",
    "precision",
    "accuracy",
    "bal. acc.",
    "FP32 agree",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "MB",
]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    ds, model = report["dataset"], report["model"]
    lines = [
        f"# edgetl report: {report['run']}",
        "",
        f"- data: {ds.get('num_images')} images, classes {', '.join(ds.get('classes', []))}, "
        f"split {ds.get('split_source')} (seed {ds.get('seed')}), hash `{str(ds.get('hash', ''))[:16]}`",
        f"- test split: {sum(ds.get('counts', {}).get('test', {}).values())} images "
        f"{ds.get('counts', {}).get('test', {})}",
        f"- model: {model['arch']}, strategy {model['strategy']} (blocks {model['trained_from_block']}+ trained), "
        f"best epoch {model['best_epoch']}, "
        f"val balanced accuracy {_fmt(model['val_metrics'].get('val_balanced_accuracy'))}",
        f"- ONNX parity: max |logit diff| {_fmt(model.get('parity', {}).get('max_abs_diff'), '.2e')} on "
        f"{model.get('parity', {}).get('images')} validation images",
        f"- host: {report['host'].get('cpu')}, threads {report['bench'].get('threads')}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in artifact_rows(report)]
    if ds.get("warnings"):
        lines += ["", "Warnings:", *[f"- {w}" for w in ds["warnings"]]]
    lines += ["", "Per class (test split):", ""]
    for a in report["artifacts"]:
        per = ", ".join(
            f"{c}: P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f}"
            for c, m in a["metrics"]["per_class"].items()
        )
        lines.append(f"- {a['target']} {a['precision']}: {per}")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write report.json and report.md atomically."""
    report = {"schema_version": SCHEMA_VERSION, **report}
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", markdown(report))


def print_report(report: dict[str, Any]) -> None:
    """Print the artifact table with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"edgetl {report['run']}: test split")
    for name in HEADER:
        table.add_column(name, justify="left" if name in {"target", "backend", "precision"} else "right")
    for row in artifact_rows(report):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)
