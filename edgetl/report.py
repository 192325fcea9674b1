"""report.json (schema-versioned), report.md and report.html, plus the tables printed at the end of a run.

The rows shared by every view are in :mod:`edgetl.report_rows`, the sections both documents carry in
:mod:`edgetl.report_sections`; :mod:`edgetl.report_md` and :mod:`edgetl.report_html` render them.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from edgetl.files import write_json_atomic, write_text_atomic
from edgetl.report_md import markdown
from edgetl.report_rows import HEADER, artifact_rows, ci, data_lines, recommendation_lines, verdict_header, verdict_rows

__all__ = ["SCHEMA_VERSION", "ci", "markdown", "print_report", "report_schema", "validate_report", "write_report"]

# Bump with edgetl/schemas/report.schema.json whenever a required field is added or a meaning changes.
SCHEMA_VERSION = "1.3"


def report_schema() -> dict[str, Any]:
    """The JSON Schema of report.json shipped with edgetl."""
    return dict(json.loads(resources.files("edgetl").joinpath("schemas/report.schema.json").read_text("utf-8")))


def validate_report(report: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when ``report`` does not follow the schema."""
    import jsonschema

    jsonschema.validate(report, report_schema(), cls=jsonschema.Draft202012Validator)


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write report.json, report.md and the self-contained report.html atomically."""
    from edgetl.report_html import html_report

    report = {"schema_version": SCHEMA_VERSION, **report}
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.md", markdown(report))
    write_text_atomic(run_dir / "report.html", html_report(report))


def _style(cell: str) -> str:
    if cell.endswith("met (95 %)") or cell == "accepted":
        return "green"
    if "NOT MET" in cell or "not measured" in cell or cell == "rejected":
        return "bold red"
    if "point estimate" in cell:
        return "yellow"
    return ""


def print_report(report: dict[str, Any]) -> None:
    """Print the artifact table, then the verdict table and one recommendation line per target (last)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from edgetl.bench.host import is_busy

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title=f"edgetl {report['run']}: test split, [95 % intervals], latency (range of blocks)")
    for name in HEADER:
        table.add_column(name, justify="left" if name in {"target", "backend", "precision", "verdict"} else "right")
    for row in artifact_rows(report):
        table.add_row(*row)
    console.print(table)
    for line in data_lines(report)[:2]:
        console.print(f"  {line}", soft_wrap=True)
    for a in report["artifacts"]:
        if is_busy(a):
            console.print(f"  [yellow]{a['target']} {a['precision']}:[/] {a['host_check']['note']}", soft_wrap=True)
    section = report.get("acceptance") or {}
    if section.get("artifacts"):
        need = "with 95 % confidence" if section.get("require_confidence", True) else "on the point estimate"
        verdict = Table(title=f"Acceptance (test split; an artifact passes when every criterion is met {need})")
        for i, name in enumerate(verdict_header(report)):
            verdict.add_column(name, justify="left" if i < 2 else "right")
        for row in verdict_rows(report):
            verdict.add_row(*(Text(cell, style=_style(cell)) for cell in row))
        console.print(verdict)
    for line in recommendation_lines(report):
        style = "bold green" if "recommended" in line.split(":", 1)[1][:13] else "bold"
        console.print(Text(line, style=style), soft_wrap=True)
