"""report.html: the report's sections (edgetl.report_sections) as one self-contained page (inline CSS, charts and
thumbnails as base64 PNG, no network). Every section is a <section> element with the section's id."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Any

from edgetl.report_charts import CHARTS
from edgetl.report_rows import artifact_name
from edgetl.report_sections import Block, Chart, Gallery, Grid, Items, Section, Sub, Table, Text, sections

# Thumbnails shown per artifact in the gallery of images where it disagrees with FP32.
GALLERY_MAX = 24
_NUMERIC = re.compile(r"^[-+]?[\d.]|^-$")
THUMBNAIL_PX = 112

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1f2933; background: #fff; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d9e2ec; }
h3 { font-size: 1rem; margin-bottom: .25rem; }
nav { font-size: .85rem; } nav a { margin-right: .6rem; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .8rem; }
th, td { border: 1px solid #d9e2ec; padding: .25rem .5rem; text-align: right; }
th { background: #f0f4f8; } td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; }
td.met { background: #e3f9e5; } td.point { background: #fff8e1; } td.fail { background: #ffe3e3; font-weight: 600; }
p { font-size: .9rem; max-width: 70rem; color: #3e4c59; }
.flag { color: #b42318; font-weight: 600; }
figure { margin: .5rem 0; } img.chart { max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: .5rem; }
.gallery figure { width: 128px; font-size: .7rem; text-align: center; }
ul.facts { font-size: .9rem; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5rem; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _cell_class(value: str) -> str:
    """A colour for verdict cells (met with confidence, point estimate only, not met); text left-aligned."""
    if value.endswith("met (95 %)") or value == "accepted" or value.startswith(("quiet",)):
        return " class='met'"
    if "point estimate" in value or value == "accepted on point estimates":
        return " class='point'"
    if "NOT MET" in value or "not measured" in value or value == "rejected" or "unreliable" in value:
        return " class='fail'"
    return "" if _NUMERIC.match(value) else " class='text'"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{_cell_class(c)}>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
        parts.append(f"<h3>{_esc(artifact_name(a))}</h3><div class='gallery'>{''.join(figures)}</div>{tail}")
    return "".join(parts) or "<p>Every artifact agrees with FP32 PyTorch on every test image.</p>"


def _block(block: Block, report: dict[str, Any]) -> str:
    if isinstance(block, Text):
        return f"<p>{_esc(block.text)}</p>"
    if isinstance(block, Items):
        css = " class='flag'" if block.flag else ""
        return "<ul class='facts'>" + "".join(f"<li{css}>{_esc(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return _table(block.header, block.rows)
    if isinstance(block, Chart):
        src = _png(CHARTS[block.name](report))
        return f'<figure><img class="chart" id="chart-{block.name}" alt="{_esc(block.alt)}" src="{src}"></figure>'
    if isinstance(block, Sub):
        return f"<h3>{_esc(block.title)}</h3>"
    if isinstance(block, Grid):
        cells = "".join(
            f"<div><h3>{_esc(title)}</h3>{_table(table.header, table.rows)}</div>" for title, table in block.tables
        )
        return f"<div class='grid'>{cells}</div>"
    if isinstance(block, Gallery):
        return f"<div id='gallery'>{gallery(report)}</div>"
    raise TypeError(f"unknown report block {block!r}")


def _section(section: Section, report: dict[str, Any]) -> str:
    body = "".join(_block(block, report) for block in section.blocks)
    return f"<section id='{_esc(section.id)}'><h2>{_esc(section.title)}</h2>{body}</section>"


def html_report(report: dict[str, Any]) -> str:
    """The whole report as one HTML page: a table of contents, then every section."""
    parts = sections(report)
    nav = "<nav>" + "".join(f"<a href='#{_esc(s.id)}'>{_esc(s.title.split(' (')[0])}</a>" for s in parts) + "</nav>"
    body = "".join(_section(s, report) for s in parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>edgetl report: {_esc(report['run'])}</title><style>{CSS}</style></head>"
        f"<body><h1>edgetl report: {_esc(report['run'])}</h1>{nav}{body}</body></html>\n"
    )
