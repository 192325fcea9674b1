"""report.md: the report's sections (edgetl.report_sections) as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.report_sections import Block, Chart, Gallery, Grid, Items, Section, Sub, Table, Text, sections


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    head = "| " + " | ".join(map(_cell, header)) + " |"
    return [head, "|" + "---|" * len(header), *("| " + " | ".join(map(_cell, r)) + " |" for r in rows)]


def _gallery(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for a in report["artifacts"]:
        if a["disagreements"]:
            lines += ["", f"{a['target']} {a['precision']} disagrees with FP32 on:", ""]
            lines += [
                f"- `{d['path']}` ({Path(d['path']).name}): label {d['label']}, artifact {d['prediction']}, "
                f"FP32 {d['fp32']}"
                for d in a["disagreements"]
            ]
    return lines or ["Every artifact agrees with FP32 PyTorch on every test image."]


def _block(block: Block, report: dict[str, Any]) -> list[str]:
    if isinstance(block, Text):
        return [block.text]
    if isinstance(block, Items):
        return [f"- **{item}**" if block.flag else f"- {item}" for item in block.items]
    if isinstance(block, Table):
        return table_lines(block.header, block.rows)
    if isinstance(block, Chart):
        if block.link:
            return [f"![{block.alt}]({block.link})"]
        return [f"_Chart in report.html: {block.alt}._"]
    if isinstance(block, Sub):
        return [f"### {block.title}"]
    if isinstance(block, Grid):
        lines: list[str] = []
        for title, table in block.tables:
            lines += [f"### {title}", "", *table_lines(table.header, table.rows), ""]
        return lines[:-1]
    if isinstance(block, Gallery):
        return _gallery(report)
    raise TypeError(f"unknown report block {block!r}")


def _section(section: Section, report: dict[str, Any]) -> list[str]:
    lines = ["", f'<a id="{section.id}"></a>', "", f"## {section.title}"]
    for block in section.blocks:
        lines += ["", *_block(block, report)]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the same sections as report.html, charts as links or a note."""
    lines = [f"# edgetl report: {report['run']}"]
    for section in sections(report):
        lines += _section(section, report)
    return "\n".join(lines) + "\n"
