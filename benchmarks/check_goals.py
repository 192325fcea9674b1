"""Check a run's report against the product goals (accuracy, INT8 loss and agreement, INT8 speed-up, build time).

Usage: python benchmarks/check_goals.py runs/demo [--min-accuracy 0.89] [--max-int8-loss 0.005]
       [--min-agreement 0.99] [--max-latency-ratio 0.6] [--max-build-minutes 15]
Prints one line per goal and exits 1 when any goal is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--min-accuracy", type=float, default=0.89)
    parser.add_argument("--max-int8-loss", type=float, default=0.005)
    parser.add_argument("--min-agreement", type=float, default=0.99)
    parser.add_argument("--max-latency-ratio", type=float, default=0.6)
    parser.add_argument("--max-build-minutes", type=float, default=15.0)
    args = parser.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    ok = True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        print(f"[{'PASS' if passed else 'MISS'}] {text}")

    fp32 = {a["target"]: a for a in report["artifacts"] if a["precision"] == "fp32"}
    for a in report["artifacts"]:
        if a["precision"] != "int8":
            continue
        base = fp32[a["target"]]
        acc, base_acc = a["metrics"]["accuracy"], base["metrics"]["accuracy"]
        ratio = a["latency_ms"]["p50"] / base["latency_ms"]["p50"]
        name = f"{a['target']} int8"
        check(acc >= args.min_accuracy, f"{name}: test accuracy {acc:.4f} >= {args.min_accuracy}")
        check(base_acc - acc <= args.max_int8_loss, f"{name}: loss vs FP32 {100 * (base_acc - acc):+.2f} points")
        check(a["fp32_agreement"] >= args.min_agreement, f"{name}: agreement with FP32 {a['fp32_agreement']:.4f}")
        check(
            ratio <= args.max_latency_ratio,
            f"{name}: p50 {a['latency_ms']['p50']:.2f} ms / FP32 {base['latency_ms']['p50']:.2f} ms = {ratio:.2f}",
        )
    seconds = sum(report.get("timings_s", {}).values())
    check(seconds <= 60 * args.max_build_minutes, f"build stages took {seconds / 60:.1f} min")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
