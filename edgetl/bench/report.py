"""The report of a bench, assembled from what was measured: artifact rows, the FP32 reference, the run's data and
model, the bundles' host checks, and the earlier rows of targets not measured now."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edgetl.config import AcceptanceConfig, BenchConfig
from edgetl.data.dataset import Dataset
from edgetl.files import read_json
from edgetl.run import RunDir


def add_vs_fp32(results: list[dict[str, Any]]) -> None:
    """Give each row the accuracy delta and p50 ratio against its own target's FP32 row (when there is one)."""
    for r in results:
        base = next((b for b in results if b["target"] == r["target"] and b["precision"] == "fp32"), None)
        if base is not None:
            r["vs_fp32"] = {
                "accuracy_delta": r["metrics"]["accuracy"] - base["metrics"]["accuracy"],
                "p50_ratio": r["latency_ms"]["p50"] / base["latency_ms"]["p50"],
            }


def training_history(run: RunDir) -> dict[str, list[float]] | None:
    """train/history.csv as columns (epoch, losses, accuracies), for the report's training curves."""
    import csv

    path = run.train / "history.csv"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(round(float(value), 6))
            except (TypeError, ValueError):
                continue
    return columns or None


def model_section(run: RunDir, meta: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """report['model']: what was trained and how, its training curves, and the FP32 PyTorch reference on the test
    split."""
    return {
        **{k: meta[k] for k in ("arch", "strategy", "trained_from_block", "best_epoch", "val_metrics")},
        "classes": meta["classes"],
        "preprocess": meta["preprocess"],
        "timings": meta.get("timings", {}),
        "recipe": meta.get("recipe"),
        "search": {k: v for k, v in meta["search"].items() if k != "space"} if meta.get("search") else None,
        "test_metrics": reference["metrics"],
        "reference": reference,
        "parity": read_json(run.export / "parity.json") if (run.export / "parity.json").is_file() else {},
        "history": training_history(run),
    }


def assemble_report(
    run: RunDir,
    *,
    dataset: Dataset,
    meta: dict[str, Any],
    settings: BenchConfig,
    threads: int,
    good_class: str | None,
    reference: dict[str, Any],
    results: list[dict[str, Any]],
    benched: list[str],
    timings: dict[str, float] | None,
    bench_seconds: float,
    acceptance: AcceptanceConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The report dict (without schema_version) of this bench, with the acceptance verdict of every row.

    Args:
        results: one row per artifact measured now.
        benched: the targets measured now; the previous report's rows of other targets are kept.
        timings: seconds of the earlier stages (None: those of the previous report).
    """
    from edgetl.bench.acceptance import judge_report
    from edgetl.bench.merge import merge_rows, previous_report
    from edgetl.clean import run_size
    from edgetl.versions import host_info, library_versions

    add_vs_fp32(results)
    report: dict[str, Any] = {
        "run": run.root.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": dataset.info,
        "model": model_section(run, meta, reference),
        "bench": {
            **settings.model_dump(mode="json"),
            "threads": threads,
            "good_class": good_class,
            "isolation": "one process per artifact",
        },
        "host": host_info(),
        "versions": library_versions(),
        "artifacts": results,
    }
    from edgetl.bundle.summary import bundle_summaries

    bundles = bundle_summaries(run, log=log)
    if bundles:
        report["bundles"] = bundles
    from edgetl.transfer.section import transfer_summaries

    transfer = transfer_summaries(run.root)
    if transfer:
        report["transfer"] = transfer
    previous = previous_report(run.root)
    report["artifacts"], kept = merge_rows(previous, report, benched=benched)
    if kept and log is not None:
        log(f"report.json keeps the earlier rows of {', '.join(kept)} (not benched now)")
    if timings is None and previous is not None:
        timings = previous.get("timings_s")
    if timings is not None:
        report["timings_s"] = dict(timings, bench=round(bench_seconds, 1))
    report["acceptance"] = judge_report(report, acceptance or AcceptanceConfig())
    report["run_size"] = run_size(run)
    return report
