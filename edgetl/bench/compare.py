"""Compare two reports artifact by artifact: what got faster, slower, better or worse, and by how much."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgetl.config import ConfigError
from edgetl.errors import InvalidFileError
from edgetl.files import read_json

# Latency changes smaller than this (percent) are printed as unchanged, whatever the spreads say: two sittings of
# one host differ by a few percent even when each is steady.
LATENCY_NOISE_PCT = 5.0


@dataclass
class Comparison:
    """Rows of the comparison table and the limits that were exceeded."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


class _Latency(BaseModel):
    p50: float = Field(gt=0)


class _Metrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    accuracy: float
    balanced_accuracy: float
    binary: dict[str, Any] | None = None


class _Row(BaseModel):
    """The fields of one artifact row that compare reads."""

    model_config = ConfigDict(extra="allow")

    target: str
    precision: str
    latency_ms: _Latency
    metrics: _Metrics


class _Report(BaseModel):
    model_config = ConfigDict(extra="allow")

    artifacts: list[_Row]


def load_report(path: Path) -> dict[str, Any]:
    """A report from a run folder (its report.json) or a report.json path, with the fields compare reads checked."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{file} is missing; run 'edgetl bench {path}' first, or pass a report.json.")
    report = read_json(file)
    if not isinstance(report, dict) or "artifacts" not in report:
        raise ConfigError(f"{file} is not an edgetl report (no 'artifacts'); pass a run folder or its report.json.")
    try:
        _Report.model_validate(report)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidFileError(
            f"{file} is not a complete edgetl report ({fields})",
            hint="measure the run again with 'edgetl bench RUN' to rewrite it",
        ) from exc
    return report


def _inside_intervals(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when accuracy and balanced accuracy of each report lie inside the other's 95 % interval."""
    from edgetl.bench.intervals import overlaps

    a, b = old.get("intervals"), new.get("intervals")
    if not a or not b:
        return False
    return all(overlaps(a[k], old[k], b[k], new[k]) for k in ("accuracy", "balanced_accuracy"))


def _spread_width(latency: dict[str, Any]) -> float | None:
    """max - min of the block p50s of one latency figure (None for reports from before blocks were kept)."""
    p50 = (latency.get("spread") or {}).get("p50")
    return None if not isinstance(p50, dict) else float(p50["max"]) - float(p50["min"])


def latency_change(old: dict[str, Any], new: dict[str, Any]) -> tuple[float, str]:
    """(percent change of the compute p50 from ``old`` to ``new`` row, what it means).

    The change is real ("faster" / "slower") only when it is at least LATENCY_NOISE_PCT and larger than both runs'
    spread (the range of their block p50s), and neither run was measured on a busy host.
    """
    from edgetl.bench.host import is_busy

    p50_a, p50_b = old["latency_ms"]["p50"], new["latency_ms"]["p50"]
    pct = 100 * (p50_b - p50_a) / p50_a
    if is_busy(old) or is_busy(new):
        return pct, "unreliable (host busy)"
    if abs(pct) < LATENCY_NOISE_PCT:
        return pct, "unchanged"
    widths = [_spread_width(old["latency_ms"]), _spread_width(new["latency_ms"])]
    if any(w is not None and abs(p50_b - p50_a) <= w for w in widths):
        return pct, "no change (inside the spread)"
    return pct, "slower" if pct > 0 else "faster"


def comparability(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Why two reports' deltas would not mean what they say: other classes, or other data (dataset hash)."""
    problems = []
    classes_a = a.get("model", {}).get("classes") if isinstance(a.get("model"), dict) else None
    classes_b = b.get("model", {}).get("classes") if isinstance(b.get("model"), dict) else None
    if classes_a != classes_b:
        problems.append(f"the classes differ ({classes_a} vs {classes_b})")
    hash_a = a.get("dataset", {}).get("hash") if isinstance(a.get("dataset"), dict) else None
    hash_b = b.get("dataset", {}).get("hash") if isinstance(b.get("dataset"), dict) else None
    if hash_a != hash_b:
        problems.append(
            f"the data differ (dataset hash {str(hash_a)[:12]} vs {str(hash_b)[:12]}): other images or another "
            "split, so accuracy deltas mix the model's change with the data's"
        )
    return problems


def _key(a: dict[str, Any]) -> str:
    return f"{a['target']} {a['precision']}"


def compare_reports(
    a: dict[str, Any],
    b: dict[str, Any],
    *,
    max_latency_regression: float | None = None,
    max_accuracy_drop: float | None = None,
) -> Comparison:
    """Compare report ``b`` (the candidate) with ``a`` (the baseline), artifact by artifact.

    Args:
        max_latency_regression: fail when an artifact's compute p50 grows by more than this many percent, and
            by more than both runs' spread, on a quiet host (:func:`latency_change`).
        max_accuracy_drop: fail when an artifact's test accuracy or balanced accuracy falls by more than this
            many percentage points.
    """
    first = {_key(x): x for x in a["artifacts"]}
    second = {_key(x): x for x in b["artifacts"]}
    out = Comparison(
        only_in_a=sorted(set(first) - set(second)),
        only_in_b=sorted(set(second) - set(first)),
    )
    for name in [k for k in first if k in second]:
        old, new = first[name], second[name]
        p50_a, p50_b = old["latency_ms"]["p50"], new["latency_ms"]["p50"]
        latency_pct, speed = latency_change(old, new)
        acc = 100 * (new["metrics"]["accuracy"] - old["metrics"]["accuracy"])
        bacc = 100 * (new["metrics"]["balanced_accuracy"] - old["metrics"]["balanced_accuracy"])
        recall_a = old["metrics"].get("binary", {}).get("defect_recall")
        recall_b = new["metrics"].get("binary", {}).get("defect_recall")
        recall = None if recall_a is None or recall_b is None else 100 * (recall_b - recall_a)
        within = _inside_intervals(old["metrics"], new["metrics"])
        if abs(acc) < 1e-9 and abs(bacc) < 1e-9:
            quality = "unchanged"
        elif within:
            quality = "no change (inside both intervals)"
        else:
            quality = "worse" if acc + bacc < 0 else "better"
        out.rows.append(
            {
                "artifact": name,
                "p50_a": p50_a,
                "p50_b": p50_b,
                "spread_a": (old["latency_ms"].get("spread") or {}).get("p50"),
                "spread_b": (new["latency_ms"].get("spread") or {}).get("p50"),
                "latency_change_pct": latency_pct,
                "speed": speed,
                "accuracy_a": old["metrics"]["accuracy"],
                "accuracy_b": new["metrics"]["accuracy"],
                "accuracy_change_pts": acc,
                "balanced_accuracy_change_pts": bacc,
                "defect_recall_change_pts": recall,
                "quality": quality,
            }
        )
        if max_latency_regression is not None and speed == "slower" and latency_pct > max_latency_regression:
            out.failures.append(
                f"{name}: p50 {p50_a:.2f} -> {p50_b:.2f} ms (+{latency_pct:.1f} %, limit {max_latency_regression} %)"
            )
        if max_accuracy_drop is not None and not within:
            for label, change in (("accuracy", acc), ("balanced accuracy", bacc)):
                if -change > max_accuracy_drop:
                    out.failures.append(f"{name}: {label} {change:+.2f} points (limit -{max_accuracy_drop})")
    return out


def _p50(value: float, spread: dict[str, float] | None) -> str:
    return f"{value:.2f}" if not spread else f"{value:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"


def print_comparison(result: Comparison, *, name_a: str, name_b: str) -> None:
    """Print the comparison as a rich table, then the missing artifacts and the exceeded limits."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    table = Table(title=f"edgetl compare: {name_a} (A) -> {name_b} (B)")
    columns = ("artifact", "p50 A ms (blocks)", "p50 B ms (blocks)", "latency", "acc. A", "acc. B", "acc. pts")
    for column in (*columns, "bal. acc. pts"):
        table.add_column(column, justify="left" if column == "artifact" else "right")
    table.add_column("defect recall pts", justify="right")
    for r in result.rows:
        speed_style = {"faster": "green", "slower": "red"}.get(r["speed"], "")
        quality_style = {"better": "green", "worse": "red"}.get(r["quality"], "")
        recall = r["defect_recall_change_pts"]
        table.add_row(
            r["artifact"],
            _p50(r["p50_a"], r["spread_a"]),
            _p50(r["p50_b"], r["spread_b"]),
            f"[{speed_style}]{r['latency_change_pct']:+.1f} % {r['speed']}[/]"
            if speed_style
            else f"{r['latency_change_pct']:+.1f} % {r['speed']}",
            f"{r['accuracy_a']:.4f}",
            f"{r['accuracy_b']:.4f}",
            f"[{quality_style}]{r['accuracy_change_pts']:+.2f} {r['quality']}[/]"
            if quality_style
            else f"{r['accuracy_change_pts']:+.2f} {r['quality']}".replace(" unchanged", ""),
            f"{r['balanced_accuracy_change_pts']:+.2f}",
            "-" if recall is None else f"{recall:+.2f}",
        )
    console.print(table)
    for name in result.only_in_a:
        console.print(f"only in A: {name}")
    for name in result.only_in_b:
        console.print(f"only in B: {name}")
    for r in result.rows:
        if r["speed"].startswith("unreliable"):
            console.print(
                f"[yellow]note:[/] {r['artifact']}: a p50 was measured on a busy host, so its change is not judged "
                "(--max-latency-regression included); bench again on a quiet host",
                soft_wrap=True,
            )
    for failure in result.failures:
        console.print(f"[bold red]limit exceeded:[/] {failure}", soft_wrap=True)
    if not result.rows:
        console.print("no artifact (target + precision) is in both reports.")
