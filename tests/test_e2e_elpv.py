"""The real path in CI: real ELPV images, real ImageNet MobileNetV2 weights, both CPU backends, FP32 and INT8,
the Jetson bundle (QDQ model checked, parity pack verified here), and the CPU bundles predicting the bench's
verdicts."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("elpv_dataset", reason="the elpv-dataset package is not installed")

from edgetl.cli import app


@pytest.mark.slow
def test_build_on_real_elpv_subset(tmp_path: Path):
    runner = CliRunner()
    data = tmp_path / "elpv"
    result = runner.invoke(app, ["data", "elpv", str(data), "--limit", "360", "--seed", "0"])
    assert result.exit_code == 0, result.output
    config = tmp_path / "e2e.yaml"
    config.write_text(
        f"""
name: e2e
runs_dir: {tmp_path / "runs"}
targets: [cpu, intel-cpu, jetson]
data: {{manifest: {data / "manifest.csv"}, test_fraction: 0.25, val_fraction: 0.15}}
model: {{arch: mobilenet_v2, gray: true, input_size: 224}}
train: {{strategy: partial, trainable_blocks: 8, epochs: 6, views: 2, batch_size: 32}}
export: {{parity_images: 64}}
calibration: {{samples: 100}}
bench: {{warmup: 5, iterations: 30}}
"""
    )
    result = runner.invoke(app, ["build", "--config", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "e2e"
    report = json.loads((run / "report.json").read_text())
    parity = json.loads((run / "export" / "parity.json").read_text())
    counts = report["dataset"]["counts"]
    assert parity["passed"] and parity["images"] == sum(counts["val"].values())  # every validation image
    meta = json.loads((run / "train" / "meta.json").read_text())
    assert meta["pretrained_weights_sha256"].startswith("b0353104")
    # A stratified, group-aware split: about a quarter of each class in test, no group in two splits.
    test = counts["test"]
    assert 70 <= sum(test.values()) <= 110 and 0.15 <= test["defective"] / sum(test.values()) <= 0.4
    groups = report["dataset"]["groups"]
    assert sum(groups["independent"].values()) == groups["groups"]
    slices = report["dataset"]["slices"]
    assert set(slices) == {"mono", "poly"} and sum(slices.values()) == 360
    by_key = {(a["target"], a["precision"]): a for a in report["artifacts"]}
    assert set(by_key) == {
        ("cpu", "fp32"),
        ("cpu", "int8"),
        ("intel-cpu", "fp32"),
        ("intel-cpu", "fp16"),
        ("intel-cpu", "int8"),
    }
    # Pretrained features must beat the majority class (74 %) on real defects.
    assert report["model"]["test_metrics"]["balanced_accuracy"] > 0.65
    for (target, precision), a in by_key.items():
        assert a["fp32_agreement"] >= (0.98 if precision in {"fp32", "fp16"} else 0.95), (target, precision)
        assert abs(a["metrics"]["accuracy"] - report["model"]["test_metrics"]["accuracy"]) <= 0.06
        assert a["latency_ms"]["p50"] > 0
    assert "cpu" in (run / "report.md").read_text()
    # The cpu profile's INT8 recipe ran for real and was gated: it records its gate and the rung it landed on;
    # on an INT8 rung with the correction (the ladder also measures each recipe without it) every quantized
    # convolution and the head had its bias corrected.
    quantization = json.loads((run / "targets" / "cpu" / "int8" / "artifact.json").read_text())["details"]
    assert quantization["gate"]["figures"]["agreement"]["value"] > 0 and quantization["ladder"]["why"]
    landed = quantization["ladder"]["rungs"][quantization["ladder"]["rung"] - 1]
    if quantization["ladder"]["kind"] != "fp32":
        assert quantization["moving_average"]
        corrected = landed.get("bias_correction", True)
        assert (quantization["bias_correction"] or {}).get("layers", 0) >= (40 if corrected else 0)
    from edgetl.report import validate_report

    validate_report(report)
    for a in by_key.values():
        assert set(a["slices"]) == {"mono", "poly"} and a["metrics"]["binary"]["roc_auc"] > 0.5
    assert (run / "report.html").stat().st_size > 50_000
    bundle = run / "bundle" / "jetson-orin-nano"
    host = report["bundles"]["jetson-orin-nano"]["host_metrics"]
    assert host["int8"]["vs_fp32"]["top1_agreement"] >= 0.95
    assert abs(host["int8"]["accuracy_delta_vs_fp32"]) <= 0.06
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "on the device run: edgetl compile" in said and "not built here: TensorRT engines" in said
    verified = runner.invoke(app, ["verify", str(bundle)])
    assert verified.exit_code == 0, verified.output
    # Every target has a bundle; predicting the test images on a CPU bundle gives the report's INT8 figures.
    from edgetl.data.dataset import load_split

    samples = load_split(run / "data").split("test")
    truth = [s.label for s in samples]
    listed = tmp_path / "test_images.txt"
    listed.write_text("\n".join(str(s.path) for s in samples) + "\n")
    for target in ("cpu", "intel-cpu"):
        out = tmp_path / f"{target}.csv"
        predicted = runner.invoke(
            app, ["predict", str(run / "bundle" / target), str(listed), "--precision", "int8", "--out", str(out)]
        )
        assert predicted.exit_code == 0, predicted.output
        rows = list(csv.DictReader(out.read_text().splitlines()))
        assert [Path(r["path"]) for r in rows] == [s.path for s in samples] and not any(r["error"] for r in rows)
        entry = by_key[(target, "int8")]
        hits = [r["class"] == label for r, label in zip(rows, truth, strict=True)]
        assert sum(hits) / len(hits) == entry["metrics"]["accuracy"]
        rejected = [r["verdict"] == "reject" for r in rows]
        defects = [label != "functional" for label in truth]
        recall = sum(r and d for r, d in zip(rejected, defects, strict=True)) / sum(defects)
        false_reject = sum(r and not d for r, d in zip(rejected, defects, strict=True)) / (len(truth) - sum(defects))
        assert recall == entry["metrics"]["binary"]["defect_recall"]
        assert false_reject == entry["metrics"]["binary"]["false_reject"]


@pytest.mark.slow
def test_default_build_on_a_few_dozen_real_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """What a new user runs: `edgetl build --data DIR` with every default (recipe search, gray auto, grouping,
    relative paths and the default runs folder), on 60 ELPV cells, with a short search budget so CI stays quick."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["data", "elpv", "elpv", "--limit", "60", "--seed", "1"]).exit_code == 0
    result = runner.invoke(app, ["build", "--data", "elpv/manifest.csv", "--name", "few", "--budget-minutes", "0.5"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "few"
    report = json.loads((run / "report.json").read_text())
    meta = json.loads((run / "train" / "meta.json").read_text())
    assert meta["recipe"]["source"] == "search" and meta["recipe"]["gray"] is True
    assert meta["search"]["trials"][0]["state"] == "complete"  # the default recipe always finishes
    assert (run / "train" / "recipe.yaml").is_file()
    said = " ".join(result.output.split())
    assert "validation split too small" in said and "out-of-fold" in said  # 60 images: thresholds from CV
    for a in report["artifacts"]:
        low, high = a["metrics"]["intervals"]["balanced_accuracy"]
        assert low <= a["metrics"]["balanced_accuracy"] <= high and high - low > 0.05
        assert a["threshold"]["tuned_on"].startswith("out-of-fold")
    from edgetl.report import validate_report

    validate_report(report)
