"""``edgetl predict`` on a run's test split through a bundle, against the figures in the run's report.

Usage: python benchmarks/predict_vs_report.py runs/demo intel-cpu int8 [--good functional]

Runs ``edgetl predict runs/<name>/bundle/<profile> <every test image> --precision P --out CSV`` as a user would,
then compares its accuracy, and its reject verdicts counted per class (defect recall, false rejects), with the
report's figures for that artifact. Exits 1 when any differs. A script, not a test.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("profile")
    parser.add_argument("precision")
    parser.add_argument("--good", default=None, help="The good class (default: the report's).")
    args = parser.parse_args()
    rows = [r for r in csv.DictReader((args.run / "data" / "split.csv").open()) if r["split"] == "test"]
    report = json.loads((args.run / "report.json").read_text())
    artifact = next(a for a in report["artifacts"] if a["target"] == args.profile and a["precision"] == args.precision)
    good = args.good or report["bench"].get("good_class") or "good"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.csv"
        edgetl = Path(sys.executable).parent / "edgetl"
        bundle = args.run / "bundle" / args.profile
        command = [str(edgetl), "predict", str(bundle), *(r["path"] for r in rows), "--precision", args.precision]
        subprocess.run([*command, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        predicted = {r["path"]: r for r in csv.DictReader(out.open())}
    labels = {r["path"]: r["label"] for r in rows}
    errors = sum(bool(predicted[p]["error"]) for p in labels)
    accuracy = sum(predicted[p]["class"] == labels[p] for p in labels) / len(labels)
    defects = [p for p in labels if labels[p] != good]
    goods = [p for p in labels if labels[p] == good]
    recall = sum(predicted[p]["verdict"] == "reject" for p in defects) / len(defects)
    false_reject = sum(predicted[p]["verdict"] == "reject" for p in goods) / len(goods)
    binary = artifact["metrics"]["binary"]
    pairs = {
        "accuracy": (accuracy, artifact["metrics"]["accuracy"]),
        "defect recall": (recall, binary["defect_recall"]),
        "false reject": (false_reject, binary["false_reject"]),
    }
    print(f"{args.profile} {args.precision}, {len(labels)} test images, {errors} errors, good class {good!r}")
    for name, (got, want) in pairs.items():
        print(f"  {name}: predict {got:.4f}, report {want:.4f}" + ("" if abs(got - want) < 1e-9 else "  DIFFERS"))
    return 0 if errors == 0 and all(abs(g - w) < 1e-9 for g, w in pairs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
