"""A partial bench (``edgetl bench RUN --target X``) updates X's rows of report.json and keeps every other row."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _section(mapping: Any, key: str) -> dict[str, Any]:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def _model_key(report: dict[str, Any]) -> tuple[Any, Any]:
    return _section(_section(report, "model"), "parity").get("onnx_sha256"), _section(report, "dataset").get("hash")


def merge_rows(
    previous: dict[str, Any] | None, report: dict[str, Any], *, benched: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Artifact rows of ``report`` plus the previous report's rows of targets not benched now; returns (rows, kept).

    A previous row is kept only while it measured the same model on the same data (ONNX sha256 and dataset hash)
    and its artifact file is still there; the rows come in the previous order, new targets last.
    """
    new = list(report["artifacts"])
    if not previous or not isinstance(previous.get("artifacts"), list) or _model_key(previous) != _model_key(report):
        return new, []
    kept = [
        row
        for row in previous["artifacts"]
        if isinstance(row, dict)
        and row.get("target") not in benched
        and isinstance(row.get("path"), str)
        and Path(row["path"]).is_file()
    ]
    order: list[str] = []
    for row in [*previous["artifacts"], *new]:
        target = row.get("target") if isinstance(row, dict) else None
        if isinstance(target, str) and target not in order:
            order.append(target)
    rows = sorted([*kept, *new], key=lambda row: order.index(row["target"]))
    return rows, sorted({row["target"] for row in kept})


def previous_report(run_root: Path) -> dict[str, Any] | None:
    """The run's current report.json, or None when there is none or it cannot be read (it is then replaced)."""
    from edgetl.errors import EdgetlError
    from edgetl.files import read_json

    path = Path(run_root) / "report.json"
    if not path.is_file():
        return None
    try:
        report = read_json(path)
    except (EdgetlError, OSError):
        return None
    return report if isinstance(report, dict) else None
