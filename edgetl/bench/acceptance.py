"""Sign-off: every acceptance criterion judged for every artifact, a verdict per artifact and per target.

A criterion on a share (recall, false rejects, balanced accuracy) is met with 95 % confidence when its whole
interval is on the right side of the limit, met on the point estimate only when just the figure is, and not met
otherwise. A latency deadline is met with confidence when the slowest block's p99 is under it on a quiet host (a
busy host's figures are never confident), on the point estimate when the run's p99 is. Size and memory are
measured, not estimated: met or not met. The recommended artifact of a target is the fastest (compute p50) that
passes every criterion; with ``require_confidence`` (the default) passing means met with confidence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

from edgetl.config import AcceptanceConfig, ConfigError

MET = "met"
POINT_ONLY = "point_only"
NOT_MET = "not_met"
NOT_MEASURED = "not_measured"
STATUS_WORDS = {
    MET: "met (95 %)",
    POINT_ONLY: "point estimate only",
    NOT_MET: "NOT MET",
    NOT_MEASURED: "not measured",
}


@dataclass(frozen=True)
class Criterion:
    """One limit: ``figure >= limit`` (bound 'min') or ``figure <= limit`` (bound 'max')."""

    key: str
    label: str
    bound: Literal["min", "max"]
    limit: float
    unit: str
    evidence: str

    def text(self) -> str:
        """'defect recall >= 0.900' / 'compute p99 <= 20 ms'."""
        sign = ">=" if self.bound == "min" else "<="
        limit = f"{self.limit:.3f}" if not self.unit else f"{self.limit:g} {self.unit}"
        return f"{self.label} {sign} {limit}"


def criteria(acceptance: AcceptanceConfig, *, classes: list[str], good_class: str | None) -> list[Criterion]:
    """The criteria ``acceptance`` sets, in the order of the verdict table (a class recall per class)."""
    out: list[Criterion] = []
    shares = acceptance.min_class_recall
    if isinstance(shares, dict):
        unknown = sorted(set(shares) - set(classes))
        if unknown:
            raise ConfigError(
                f"acceptance.min_class_recall names {unknown}, which are not classes of this model ({classes})."
            )
        per_class = dict(shares)
    elif shares is not None:
        per_class = {c: shares for c in classes if c != good_class}
    else:
        per_class = {}
    for name, share in per_class.items():
        out.append(Criterion(f"min_class_recall.{name}", f"recall of {name}", "min", share, "", "95 % interval"))
    rows: list[tuple[str, str, Literal["min", "max"], str, str]] = [
        ("min_defect_recall", "defect recall", "min", "", "95 % interval"),
        ("max_false_reject", "false reject", "max", "", "95 % interval"),
        ("min_balanced_accuracy", "balanced accuracy", "min", "", "95 % interval"),
        ("max_p99_ms", "compute p99", "max", "ms", "block spread"),
        ("max_e2e_p99_ms", "end-to-end p99", "max", "ms", "block spread"),
        ("max_size_mb", "model size", "max", "MB", "measured"),
        ("max_memory_mb", "peak memory", "max", "MB", "measured"),
    ]
    for key, label, bound, unit, evidence in rows:
        limit = getattr(acceptance, key)
        if limit is not None:
            out.append(Criterion(key, label, bound, float(limit), unit, evidence))
    return out


def _figure(row: dict[str, Any], criterion: Criterion) -> tuple[float | None, list[float] | None, str | None]:
    """(figure, [low, high] or None, note) of a criterion in a report row."""
    metrics = row.get("metrics", {})
    intervals = metrics.get("intervals", {})
    binary = metrics.get("binary") or {}
    key = criterion.key
    if key.startswith("min_class_recall."):
        name = key.split(".", 1)[1]
        per = metrics.get("per_class", {}).get(name)
        if not per or not per.get("support"):
            return None, None, f"no {name} image in the test split"
        return per["recall"], intervals.get("recall", {}).get(name), None
    if key in ("min_defect_recall", "max_false_reject"):
        field = "defect_recall" if key == "min_defect_recall" else "false_reject"
        if binary.get(field) is None:
            return None, None, "no reject threshold (the model has no good class, or validation lacks one side)"
        return binary[field], binary.get("intervals", {}).get(field), None
    if key == "min_balanced_accuracy":
        return metrics.get("balanced_accuracy"), intervals.get("balanced_accuracy"), None
    if key in ("max_p99_ms", "max_e2e_p99_ms"):
        latency = row.get("latency_ms" if key == "max_p99_ms" else "end_to_end_ms") or {}
        spread = (latency.get("spread") or {}).get("p99")
        span = None if not spread else [spread["min"], spread["max"]]
        from edgetl.bench.host import is_busy

        note = "host busy while measuring: the figure is unreliable" if is_busy(row) else None
        return latency.get("p99"), span, note
    if key == "max_size_mb":
        return row["size_bytes"] / 1e6 if row.get("size_bytes") else None, None, None
    if key == "max_memory_mb":
        return (row.get("memory_mb") or {}).get("peak"), None, None
    raise ValueError(f"unknown criterion {key}")


def judge(criterion: Criterion, figure: float | None, span: list[float] | None, *, busy: bool = False) -> str:
    """The status of one criterion: MET, POINT_ONLY, NOT_MET or NOT_MEASURED."""
    if figure is None:
        return NOT_MEASURED

    def ok(value: float) -> bool:
        return value >= criterion.limit if criterion.bound == "min" else value <= criterion.limit

    if not ok(figure):
        return NOT_MET
    if criterion.evidence == "measured":
        return MET
    if span is None or busy:
        return POINT_ONLY
    # The run's own p99 can lie past its slowest block's: the worse of the two decides.
    worst = min(span[0], figure) if criterion.bound == "min" else max(span[1], figure)
    return MET if ok(worst) else POINT_ONLY


def artifact_verdict(row: dict[str, Any], crits: list[Criterion], *, require_confidence: bool) -> dict[str, Any]:
    """Every criterion's figure, interval or spread, limit and status for one report row, and whether it passes."""
    from edgetl.bench.host import is_busy

    judged = []
    for criterion in crits:
        figure, span, note = _figure(row, criterion)
        busy = criterion.evidence == "block spread" and is_busy(row)
        judged.append(
            {
                **asdict(criterion),
                "criterion": criterion.text(),
                "figure": figure,
                "span": span,
                "status": judge(criterion, figure, span, busy=busy),
                "note": note,
            }
        )
    passing = {MET} if require_confidence else {MET, POINT_ONLY}
    failed = [c["key"] for c in judged if c["status"] not in passing]
    confident = all(c["status"] == MET for c in judged)
    return {
        "artifact": f"{row['target']} {row['precision']}",
        "target": row["target"],
        "precision": row["precision"],
        "criteria": judged,
        "passes": not failed,
        "failed": failed,
        "verdict": "accepted" if confident else ("accepted on point estimates" if not failed else "rejected"),
    }


def shown(entry: dict[str, Any]) -> str:
    """'0.520 [0.450, 0.590]', '9.86 ms (blocks 9.50-10.20)', '8.9 MB'."""
    value, span, unit = entry["figure"], entry["span"], entry["unit"]
    if value is None:
        return "not measured"
    if not unit:
        return f"{value:.3f}" + (f" [{span[0]:.3f}, {span[1]:.3f}]" if span else "")
    if unit == "ms":
        return f"{value:.2f} ms" + (f" (blocks {span[0]:.2f}-{span[1]:.2f})" if span else "")
    return f"{value:.1f} {unit}"


def _shortfall(entry: dict[str, Any]) -> float:
    """How far a criterion's figure is on the wrong side of its limit, relative to the limit (missing: infinite)."""
    if entry["figure"] is None:
        return float("inf")
    gap = entry["limit"] - entry["figure"] if entry["bound"] == "min" else entry["figure"] - entry["limit"]
    return gap / max(abs(entry["limit"]), 1e-9)


def recommend(target: str, verdicts: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The recommended artifact of one target (the fastest that passes), or why there is none."""
    p50 = {f"{r['target']} {r['precision']}": r["latency_ms"]["p50"] for r in rows}
    passing = sorted((v for v in verdicts if v["passes"]), key=lambda v: p50[v["artifact"]])
    if passing:
        best = passing[0]
        confident = best["verdict"] == "accepted"
        how = "with 95 % confidence" if confident else "(some only on the point estimate)"
        return {
            "recommended": best["artifact"],
            "precision": best["precision"],
            "line": f"{target}: recommended {best['precision']} ({best['artifact']}), the fastest of the "
            f"{len(passing)} of {len(verdicts)} artifacts that meet every criterion {how}: compute p50 "
            f"{p50[best['artifact']]:.2f} ms",
        }
    counts = Counter(key for v in verdicts for key in v["failed"])
    entries = {key: [c for v in verdicts for c in v["criteria"] if c["key"] == key] for key in counts}
    hard = {k: sum(c["status"] in (NOT_MET, NOT_MEASURED) for c in entries[k]) for k in counts}
    most = max(counts, key=lambda k: (counts[k], hard[k], min(_shortfall(c) for c in entries[k])))
    closest = min(entries[most], key=_shortfall)
    statuses = Counter(c["status"] for c in entries[most])
    why = ", ".join(f"{STATUS_WORDS[s]} on {n}" for s, n in statuses.items())
    hint = ""
    if set(statuses) == {POINT_ONLY}:
        hint = (
            "; met on the point estimate but not with 95 % confidence: a quiet host (latency) or more test parts "
            "(shares) can settle it, or --accept-point-estimates accepts the point estimates"
        )
    return {
        "recommended": None,
        "precision": None,
        "fails_most": most,
        "line": f"{target}: no artifact meets the criteria; {closest['criterion']} fails most ({why} of "
        f"{len(verdicts)}; closest {shown(closest)}){hint}",
    }


def judge_report(report: dict[str, Any], acceptance: AcceptanceConfig) -> dict[str, Any]:
    """report['acceptance']: the criteria, every artifact's verdict, and the recommendation per target.

    ``accepted`` is True when every target with measured artifacts has a recommended one, False when one has
    none, None when no criterion is set (nothing is recommended then).
    """
    rows = report["artifacts"]
    crits = criteria(acceptance, classes=report["model"]["classes"], good_class=report["bench"].get("good_class"))
    section: dict[str, Any] = {
        "settings": acceptance.model_dump(mode="json"),
        "require_confidence": acceptance.require_confidence,
        "criteria": [c.text() for c in crits],
        "artifacts": [],
        "targets": {},
        "accepted": None,
    }
    targets = list(dict.fromkeys(r["target"] for r in rows))
    if not crits:
        for target in targets:
            mine = [r for r in rows if r["target"] == target]
            fastest = min(mine, key=lambda r: r["latency_ms"]["p50"])
            section["targets"][target] = {
                "recommended": None,
                "precision": None,
                "line": f"{target}: no acceptance criteria set (acceptance: in the config), so nothing is "
                f"recommended; fastest: {fastest['precision']}, compute p50 {fastest['latency_ms']['p50']:.2f} ms",
            }
        return section
    verdicts = [artifact_verdict(r, crits, require_confidence=acceptance.require_confidence) for r in rows]
    section["artifacts"] = verdicts
    for target in targets:
        section["targets"][target] = recommend(
            target, [v for v in verdicts if v["target"] == target], [r for r in rows if r["target"] == target]
        )
    section["accepted"] = bool(targets) and all(t["recommended"] for t in section["targets"].values())
    return section


def card_verdict(report: dict[str, Any], target: str) -> dict[str, Any] | None:
    """The verdict section of a bundle's model card (card.json) for one target, from its report.

    Returns None when the report judged no artifact of that target; else the criteria, each precision's verdict
    and statuses, and the recommended precision (None when none passes, with the reason).
    """
    section = report.get("acceptance") or {}
    recommendation = section.get("targets", {}).get(target)
    if recommendation is None:
        return None
    return {
        "criteria": section.get("criteria", []),
        "require_confidence": section.get("require_confidence"),
        "recommended_precision": recommendation.get("precision"),
        "summary": recommendation["line"],
        "precisions": {
            v["precision"]: {
                "verdict": v["verdict"],
                "passes": v["passes"],
                "criteria": {
                    c["key"]: {"figure": c["figure"], "span": c["span"], "status": c["status"]} for c in v["criteria"]
                },
            }
            for v in section.get("artifacts", [])
            if v["target"] == target
        },
        "judged_on": "test split of the run's bench (report.json)",
    }
