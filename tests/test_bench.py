"""Latency statistics, the reject threshold, slices, FP32 agreement, the bench worker and `edgetl compare`."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgetl.bench.accuracy import (
    binary_metrics,
    classification_metrics,
    defect_scores,
    disagreeing_images,
    good_class_index,
    reject_threshold,
    slice_metrics,
)
from edgetl.bench.compare import compare_reports
from edgetl.bench.latency import MAX_SAMPLES_KEPT, measure_latency, summarize, throughput, time_calls
from edgetl.cli import app

runner = CliRunner()


def test_summary_statistics_and_deadline_share():
    ms = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    s = summarize(ms, deadline_ms=3.5)
    assert s["p50"] == 3.0 and s["max"] == 10.0 and s["mean"] == 4.0
    assert s["jitter"] == pytest.approx(s["p99"] - s["p50"])
    assert s["over_deadline"] == pytest.approx(0.4)
    assert summarize(ms)["over_deadline"] is None
    assert len(summarize(np.ones(5000))["samples_ms"]) == MAX_SAMPLES_KEPT


def test_warmup_and_run_by_count_or_duration():
    calls = []
    ms, warmed = time_calls(lambda: calls.append(1), warmup=3, iterations=7)
    assert (len(ms), warmed, len(calls)) == (7, 3, 10)
    ms, warmed = time_calls(lambda: None, warmup=0, warmup_seconds=0.01, iterations=1, duration_s=0.01)
    assert warmed >= 1 and len(ms) >= 1
    result = measure_latency(lambda b: b * 2, np.zeros((1, 3)), warmup=1, iterations=4, deadline_ms=1e6)
    assert result["iterations"] == 4 and result["batch"] == 1 and result["over_deadline"] == 0.0


def test_throughput_records_batch_sizes_the_model_refuses():
    def batch_one_only(x: np.ndarray) -> np.ndarray:
        if x.shape[0] != 1:
            raise ValueError("Got invalid dimensions for input: index 0 Got 4 Expected 1")
        return x

    rates = throughput(batch_one_only, np.zeros((1, 2), np.float32), batch_sizes=(1, 4), seconds=0.01)
    assert rates["1"]["supported"] and rates["1"]["images_per_s"] > 0
    assert not rates["4"]["supported"] and "Expected 1" in rates["4"]["reason"]


def test_good_class_by_name_option_or_majority():
    assert good_class_index(["defective", "functional"]) == 1
    assert good_class_index(["crack", "good"]) == 1
    assert good_class_index(["a", "b"], counts=[3, 9]) == 1
    assert good_class_index(["a", "b"], good="a") == 0
    with pytest.raises(ValueError, match="not one of the classes"):
        good_class_index(["a", "b"], good="ok")


def test_reject_threshold_respects_the_false_reject_target():
    rng = np.random.default_rng(0)
    is_defect = np.r_[np.zeros(400, bool), np.ones(100, bool)]
    scores = np.r_[rng.beta(2, 8, 400), rng.beta(8, 2, 100)]
    for target in (0.0, 0.01, 0.05):
        t = reject_threshold(scores, is_defect, max_false_reject=target)
        assert t["val_false_reject"] <= target
        assert np.mean(scores[~is_defect] >= t["threshold"]) == pytest.approx(t["val_false_reject"])
        assert np.mean(scores[is_defect] >= t["threshold"]) == pytest.approx(t["val_defect_recall"])
    loose = reject_threshold(scores, is_defect, max_false_reject=0.05)
    strict = reject_threshold(scores, is_defect, max_false_reject=0.0)
    assert loose["threshold"] <= strict["threshold"] and loose["val_defect_recall"] >= strict["val_defect_recall"]
    b = binary_metrics(scores, is_defect, threshold=loose["threshold"])
    assert 0.9 < b["roc_auc"] <= 1 and 0.5 < b["pr_auc"] <= 1
    assert b["defect_recall"] == pytest.approx(loose["val_defect_recall"])
    with pytest.raises(ValueError, match="both good and defective"):
        reject_threshold(scores[:10], is_defect[:10], max_false_reject=0.01)


def test_defect_scores_are_one_minus_p_good():
    logits = np.array([[0.0, 0.0], [5.0, -5.0]])
    np.testing.assert_allclose(defect_scores(logits, good_index=1), [0.5, 1 / (1 + np.exp(-10))])


def test_slice_metrics_flag_the_much_worse_slice():
    y = np.array([0, 1] * 30)
    logits = np.eye(2)[y] * 4.0
    slices = np.array(["mono"] * 30 + ["poly"] * 30)
    logits[30:40] = logits[30:40][:, ::-1]
    out = slice_metrics(
        y, logits, slices.tolist(), ["defect", "good"], good_index=1, threshold=0.5, max_gap=0.05, min_images=20
    )
    assert set(out) == {"mono", "poly"}
    assert out["poly"]["flagged"] and not out["mono"]["flagged"]
    assert out["mono"]["accuracy"] == 1.0 and out["poly"]["gap_to_rest"] > 0.05
    assert "defect_recall" in out["poly"]["binary"]
    few = slice_metrics(
        y, logits, slices.tolist(), ["d", "g"], good_index=None, threshold=None, max_gap=0.05, min_images=31
    )
    assert not few["poly"]["flagged"]


def test_disagreements_list_the_image_paths():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    got = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    listed = disagreeing_images(got, ref, ["a.png", "b.png", "c.png"], np.array([0, 1, 0]), ["bad", "good"])
    assert listed == [{"path": "b.png", "label": "good", "prediction": "bad", "fp32": "good"}]


def test_single_class_slice_keeps_a_balanced_accuracy():
    m = classification_metrics(np.array([1, 1, 1]), np.array([1, 0, 1]), ["a", "b"])
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)


def test_bench_report_from_worker_processes(tiny_run):
    _, run, report, _, _ = tiny_run
    assert report["bench"]["isolation"] == "one process per artifact"
    for a in report["artifacts"]:
        assert a["latency_ms"]["iterations"] == 5 and a["end_to_end_ms"]["iterations"] == 3
        assert a["cold_start_ms"]["load_ms"] > 0 and a["memory_mb"]["peak"] > 0
        assert a["throughput"]["batch"]["1"]["supported"]
        # The tiny run exports a dynamic batch axis (the default): every batch size is measured.
        assert all(r["supported"] and r["images_per_s"] > 0 for r in a["throughput"]["batch"].values())
        threshold = json.loads((run.target(a["target"], a["precision"]) / "threshold.json").read_text())
        assert threshold["threshold"] == a["threshold"]["threshold"]
        assert threshold["good_class"] == report["bench"]["good_class"] == "good"
        assert a["metrics"]["binary"]["threshold"] == a["threshold"]["threshold"]
        assert a["logits_vs_fp32"]["disagreements"] == len(a["disagreements"])
    ref = report["model"]["reference"]
    assert ref["threshold"]["val_false_reject"] <= report["bench"]["max_false_reject"]


def _report(p50: float, accuracy: float, *, artifacts: tuple[str, ...] = ("fp32",)) -> dict:
    return {
        "artifacts": [
            {
                "target": "cpu",
                "precision": precision,
                "latency_ms": {"p50": p50},
                "metrics": {"accuracy": accuracy, "balanced_accuracy": accuracy, "binary": {"defect_recall": 0.9}},
            }
            for precision in artifacts
        ]
    }


def test_compare_reports_directions_and_limits():
    result = compare_reports(_report(10.0, 0.90), _report(8.0, 0.91))
    row = result.rows[0]
    assert row["speed"] == "faster" and row["quality"] == "better" and result.passed
    worse = compare_reports(_report(10.0, 0.90), _report(12.0, 0.88), max_latency_regression=10, max_accuracy_drop=1)
    assert not worse.passed and len(worse.failures) == 3
    missing = compare_reports(_report(10.0, 0.9, artifacts=("fp32", "int8")), _report(10.0, 0.9))
    assert missing.only_in_a == ["cpu int8"] and missing.rows[0]["speed"] == "unchanged"


def _write(folder: Path, report: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_compare_exit_codes(tmp_path: Path):
    a = _write(tmp_path / "a", _report(10.0, 0.90))
    b = _write(tmp_path / "b", _report(12.0, 0.895))
    ok = runner.invoke(app, ["compare", str(a), str(b)])
    assert ok.exit_code == 0, ok.output
    assert "slower" in ok.output and "cpu fp32" in ok.output
    within = runner.invoke(
        app, ["compare", str(a), str(b), "--max-latency-regression", "25", "--max-accuracy-drop", "1"]
    )
    assert within.exit_code == 0, within.output
    slow = runner.invoke(app, ["compare", str(a), str(b / "report.json"), "--max-latency-regression", "10"])
    assert slow.exit_code == 1 and "limit exceeded" in slow.output
    drop = runner.invoke(app, ["compare", str(a), str(b), "--max-accuracy-drop", "0.2"])
    assert drop.exit_code == 1 and "accuracy" in drop.output
    missing = runner.invoke(app, ["compare", str(a), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope is missing" in missing.output


def test_bench_command_rejects_bad_settings(tiny_run):
    _, run, _, _, _ = tiny_run
    result = runner.invoke(app, ["bench", str(run.root), "--max-false-reject", "2"])
    assert result.exit_code == 2 and "max_false_reject" in result.output


def test_reference_logits_are_cached_per_checkpoint_and_inputs(tiny_run, monkeypatch):
    import edgetl.models
    from edgetl.bench.harness import reference_logits

    _, run, _, _, _ = tiny_run
    cache = run.root / "bench" / "reference_logits.npz"
    assert cache.is_file()
    with np.load(cache, allow_pickle=False) as stored:
        inputs_key = {"test", "val"} <= set(stored.files)
    assert inputs_key

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded although the cache matches")

    x = {"val": np.zeros((2, 1, 32, 32), np.float32)}
    first = reference_logits(run.train / "model.pt", x, run.root / "bench" / "other.npz", threads=1)
    monkeypatch.setattr(edgetl.models, "load_checkpoint", no_model)
    again = reference_logits(run.train / "model.pt", x, run.root / "bench" / "other.npz", threads=1)
    np.testing.assert_array_equal(first["val"], again["val"])
    with pytest.raises(AssertionError, match="cache matches"):
        reference_logits(run.train / "model.pt", {"val": x["val"] + 1}, run.root / "bench" / "other.npz", threads=1)


def test_bench_skips_a_target_whose_backend_is_missing(tiny_run, monkeypatch):
    from edgetl.pipeline import stage_bench
    from edgetl.targets.openvino import OpenVinoTarget
    from edgetl.targets.profiles import resolve_profile

    config, run, _, _, _ = tiny_run
    monkeypatch.setattr(OpenVinoTarget, "is_available", lambda self: False)
    report = stage_bench(config, run, [resolve_profile("cpu"), resolve_profile("intel-cpu")])
    assert {a["target"] for a in report["artifacts"]} == {"cpu"}


def test_every_model_gets_a_reject_threshold_good_against_the_rest():
    from edgetl.bundle.build import tensorrt_thresholds as _bundle_thresholds
    from edgetl.config import BuildConfig
    from edgetl.data.dataset import Dataset, Sample

    classes = ["dent", "ok", "scratch"]
    samples = [Sample(Path(f"{i}.png"), classes[i % 3], "train") for i in range(30)]
    dataset = Dataset(samples=samples, classes=classes, root=Path("."))
    config = BuildConfig.model_validate({"data": {"root": "."}})
    rng = np.random.default_rng(0)
    y_val = np.array([0, 1, 1, 1, 2, 1, 1, 0, 1, 2, 1, 1])
    logits = rng.normal(size=(len(y_val), 3)) + 3 * np.eye(3)[y_val]
    thresholds = _bundle_thresholds(config, dataset, {"fp32": logits}, y_val)
    assert thresholds["fp32"]["good_class"] == "ok" and 0 <= thresholds["fp32"]["threshold"] <= 1.0 + 1e-9


def test_compare_calls_a_change_inside_both_intervals_no_change():
    def with_intervals(accuracy: float, half: float) -> dict:
        report = _report(10.0, accuracy)
        band = [accuracy - half, accuracy + half]
        report["artifacts"][0]["metrics"]["intervals"] = {"accuracy": band, "balanced_accuracy": band}
        return report

    noisy = compare_reports(with_intervals(0.90, 0.04), with_intervals(0.88, 0.04), max_accuracy_drop=1)
    assert noisy.rows[0]["quality"] == "no change (inside both intervals)" and noisy.passed
    real = compare_reports(with_intervals(0.95, 0.01), with_intervals(0.85, 0.01), max_accuracy_drop=1)
    assert real.rows[0]["quality"] == "worse" and not real.passed


def test_every_latency_figure_carries_the_spread_of_its_blocks():
    from edgetl.bench.latency import block_spread

    ms = np.array([1.0] * 10 + [2.0] * 10 + [3.0] * 10 + [4.0] * 10 + [5.0] * 10)
    spread = block_spread(ms, blocks=5)
    assert spread["blocks"] == 5 and spread["calls_per_block"] == 10
    assert spread["p50"] == {"median": 3.0, "min": 1.0, "max": 5.0}
    assert summarize(ms)["spread"]["p99"]["max"] == 5.0
    assert block_spread(np.array([2.0, 4.0]), blocks=5)["blocks"] == 2  # fewer calls than blocks


def _timed(p50: float, low: float, high: float, *, busy: bool = False) -> dict:
    report = _report(p50, 0.9)
    report["artifacts"][0]["latency_ms"]["spread"] = {"p50": {"median": p50, "min": low, "max": high}}
    report["artifacts"][0]["host_check"] = {"busy": busy}
    return report


def test_compare_calls_a_latency_change_real_only_past_both_spreads_on_a_quiet_host():
    real = compare_reports(_timed(10.0, 9.8, 10.3), _timed(8.0, 7.9, 8.2), max_latency_regression=5)
    assert real.rows[0]["speed"] == "faster"
    # 20 % slower, but one run's blocks ranged over 3 ms: no change, and the regression limit does not fire.
    noisy = compare_reports(_timed(10.0, 8.5, 11.5), _timed(12.0, 11.8, 12.2), max_latency_regression=5)
    assert noisy.rows[0]["speed"] == "no change (inside the spread)" and noisy.passed
    slower = compare_reports(_timed(10.0, 9.9, 10.1), _timed(12.0, 11.8, 12.2), max_latency_regression=5)
    assert slower.rows[0]["speed"] == "slower" and not slower.passed
    busy = compare_reports(_timed(12.0, 11.9, 12.1), _timed(3.2, 3.1, 3.3, busy=True), max_latency_regression=5)
    assert busy.rows[0]["speed"] == "unreliable (host busy)" and busy.passed


def test_benching_a_run_does_not_import_the_pipeline(run_copy):
    import subprocess
    import sys

    copy, _ = run_copy
    code = (
        "import sys, edgetl; edgetl.bench(sys.argv[1], targets=['cpu'], iterations=2, warmup=0); "
        "print('pipeline imported' if 'edgetl.pipeline' in sys.modules else 'pipeline not imported')"
    )
    out = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "pipeline not imported"


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL (on Linux most often the kernel's"),
        ("import sys; print('backend broke', file=sys.stderr); sys.exit(3)", "exited with status 3"),
    ],
)
def test_a_worker_that_dies_is_named_with_its_cause_and_its_last_lines(tmp_path, monkeypatch, code, says):
    import sys

    from edgetl.bench import harness

    monkeypatch.setattr(harness, "worker_command", lambda *a, **k: [sys.executable, "-c", code])
    with pytest.raises(harness.BenchError) as caught:
        harness.run_worker({"artifact": "onnxruntime/int8", "out": str(tmp_path / "w")}, tmp_path)
    assert says in str(caught.value) and "onnxruntime/int8" in str(caught.value)
    expected_hint = "rerun 'edgetl bench RUN'" if "SIGKILL" in says else "last lines above"
    assert expected_hint in (caught.value.hint or "")
    if "status" in says:
        assert "backend broke" in str(caught.value)
