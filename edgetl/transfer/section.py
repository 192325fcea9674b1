"""The transfer sections of a run's report (gap, adaptation, study), as Markdown and HTML, from their JSON files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.files import read_json
from edgetl.report_rows import ci
from edgetl.run import RunDir

Block = tuple[str, list[str], list[str], list[list[str]]]  # title, paragraphs, table header, table rows


GAP_HEADER = ["scope", "images (ref / new)", "MMD² (p)", "Frechet [95 %]", "split-half floor", "dims",
              "classifier AUC [95 %]", "verdict"]  # fmt: skip


def gap_rows(scopes: dict[str, Any]) -> list[list[str]]:
    """One row per scope of a gap result (GAP_HEADER)."""
    rows = []
    for scope, f in scopes.items():
        images = f"{f['images'][0]} / {f['images'][1]}"
        if f.get("verdict") is None:
            rows.append([scope, images, "-", "-", "-", "-", "-", f.get("note", "-")])
            continue
        m, fr, c = f["mmd"], f["frechet"], f["c2st"]
        floor = fr.get("reference_split_half")
        rows.append(
            [scope, images, f"{m['mmd2']:.4f} ({m['p_value']:.3f})", ci(fr["distance"], fr.get("interval")),
             "-" if floor is None else f"{floor:.3f}", str(fr["dim"]), ci(c.get("auc"), c.get("interval")),
             f["verdict"]]
        )  # fmt: skip
    return rows


def gap_block(result: dict[str, Any]) -> Block:
    text = [
        f"{result['new']['source']} ({result['new']['images']} images) against {result['reference']['source']} "
        f"({result['reference']['images']} images), embedded by {result['embedding']}.",
        f"Rule: {result['rule']}.",
    ]
    return f"Domain gap: {result['label']}", text, GAP_HEADER, gap_rows(result["scopes"])


ADAPT_HEADER = ["images", "count", "accuracy before", "accuracy after", "bal. acc. before", "bal. acc. after",
                "change (bal. acc.) [95 %]", "agreement"]  # fmt: skip


def adapt_rows(accuracy: dict[str, Any]) -> list[list[str]]:
    rows = []
    for scope, a in accuracy.items():
        b, f, c = a["before"], a["after"], a["change"]
        rows.append(
            [scope, str(b["images"]), ci(b["accuracy"], b["intervals"]["accuracy"]),
             ci(f["accuracy"], f["intervals"]["accuracy"]),
             ci(b["balanced_accuracy"], b["intervals"]["balanced_accuracy"]),
             ci(f["balanced_accuracy"], f["intervals"]["balanced_accuracy"]),
             ci(c["balanced_accuracy"], c.get("balanced_accuracy_interval"), "+.3f"), f"{c['agreement']:.3f}"]
        )  # fmt: skip
    return rows


def adapt_blocks(report: dict[str, Any]) -> list[Block]:
    a = report["adaptation"]
    text = [
        f"{a['method']}: {a['layers']} batch-norm layers re-estimated on {a['images']} unlabelled images "
        f"({a.get('images_source')}).",
        f"Source run: {report['source_run']}. Evaluated on: {report['evaluation']}. INT8 calibration: "
        f"{report['calibration']}.",
    ]
    blocks: list[Block] = []
    if report.get("accuracy"):
        blocks.append(("AdaBN: the new station before and after (FP32 PyTorch)", text, ADAPT_HEADER,
                       adapt_rows(report["accuracy"])))  # fmt: skip
        text = []
    gap = report.get("gap") or {}
    scopes = {f"{k} adaptation": v for k, v in gap.items() if isinstance(v, dict)}
    if scopes:
        blocks.append(("AdaBN: domain gap before and after", [*text, gap.get("note", "")], GAP_HEADER,
                       gap_rows(scopes)))  # fmt: skip
    return blocks


def adapt_markdown(report: dict[str, Any]) -> list[str]:
    """adapt/report.md."""
    return [f"# edgetl adapt: {report['run']}", *_markdown(adapt_blocks(report))]


STUDY_HEADER = ["training groups", "images", "pretrained bal. acc. [95 %]", "scratch bal. acc. [95 %]",
                "pretrained - scratch [95 %]", "s to best (pre / scratch)", "s per fit (pre / scratch)"]  # fmt: skip


def study_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in result["rows"]:
        p, s = r.get("pretrained"), r.get("scratch")
        rows.append(
            [f"{r['fraction']:.0%}", str((p or s or {}).get("train_images", "-")),
             ci(p["balanced_accuracy"], p["interval"]) if p else "-",
             ci(s["balanced_accuracy"], s["interval"]) if s else "-",
             ci(r.get("difference"), r.get("difference_interval"), "+.3f"),
             f"{p['seconds_to_best']:.0f} / {s['seconds_to_best']:.0f}" if p and s else "-",
             f"{p['seconds']:.0f} / {s['seconds']:.0f}" if p and s else "-"]
        )  # fmt: skip
    return rows


STUDY_TITLE = "Pretrained versus scratch"


def study_blocks(result: dict[str, Any]) -> list[Block]:
    text = [
        f"Test split ({result['test_images']} images, {result['test_groups']} groups), read once per fit; each arm "
        f"picks its epoch on the validation split; {result['settings']['seeds']} seeds per cell (mean of seeds, "
        f"95 % interval by a bootstrap over test groups); {result['input_size']} px; {result['device']}, "
        f"{result['threads']} threads.",
        f"Pretrained: {result['recipes']['pretrained']}.",
        f"Scratch: {result['recipes']['scratch']}.",
    ]
    claims = [f"- {v}" for v in result.get("claims", {}).values()]
    return [(STUDY_TITLE, text, STUDY_HEADER, study_rows(result)),
            ("The claims, as measured on this data", claims, [], [])]  # fmt: skip


def study_markdown(result: dict[str, Any]) -> list[str]:
    """study/transfer.md (the plot is transfer.png beside it)."""
    return [f"# edgetl study transfer: {result['run']}", *_markdown(study_blocks(result)), "", "![](transfer.png)"]


def _markdown(blocks: list[Block], level: str = "##") -> list[str]:
    lines: list[str] = []
    for title, text, header, rows in blocks:
        lines += ["", f"{level} {title}", ""]
        lines += [t for t in text if t]
        if header:
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def transfer_summaries(root: Path) -> dict[str, Any]:
    """Every transfer result a run folder holds: gap/*.json, adapt/report.json, study/transfer.json."""
    out: dict[str, Any] = {}
    gaps = {}
    for path in sorted((Path(root) / "gap").glob("*.json")):
        try:
            gaps[path.stem] = read_json(path)
        except Exception:  # a damaged side file never stops the report
            continue
    if gaps:
        out["gaps"] = gaps
    for key, rel in (("adaptation", "adapt/report.json"), ("study", "study/transfer.json")):
        path = Path(root) / rel
        if path.is_file():
            try:
                value = read_json(path)
            except Exception:
                continue
            out[key] = value
    return out


def blocks(transfer: dict[str, Any] | None) -> list[Block]:
    """The transfer results as (title, paragraphs, table header, table rows), for the report's sections."""
    transfer = transfer or {}
    out = [gap_block(g) for g in transfer.get("gaps", {}).values()]
    if transfer.get("adaptation"):
        out += adapt_blocks(transfer["adaptation"])
    if transfer.get("study"):
        out += study_blocks(transfer["study"])
    return out


def refresh_report(run: RunDir) -> bool:
    """Rewrite report.json / .md / .html of a run with its transfer results, when it has a report."""
    from edgetl.report import write_report

    path = run.root / "report.json"
    if not path.is_file():
        return False
    report = read_json(path)
    report.pop("schema_version", None)
    report["transfer"] = transfer_summaries(run.root)
    write_report(run.root, report)
    return True
