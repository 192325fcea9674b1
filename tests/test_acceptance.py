"""Acceptance criteria: met with 95 % confidence, met on the point estimate only, not met; the verdict per target;
exit code 3 for CI."""

from __future__ import annotations

import json

import pytest
from hostile import invoke

from edgetl.bench.acceptance import MET, NOT_MEASURED, NOT_MET, POINT_ONLY, artifact_verdict, criteria, judge_report
from edgetl.config import AcceptanceConfig, ConfigError, build_config_from_dict


def _row(
    precision: str,
    *,
    recall: float = 0.9,
    recall_ci: tuple[float, float] = (0.85, 0.95),
    p50: float = 5.0,
    p99: float = 8.0,
    p99_blocks: tuple[float, float] = (7.5, 9.0),
    size_mb: float = 4.0,
    busy: bool = False,
) -> dict:
    """A report row with just what acceptance reads."""
    return {
        "target": "cpu",
        "precision": precision,
        "size_bytes": int(size_mb * 1e6),
        "metrics": {
            "balanced_accuracy": 0.9,
            "intervals": {"balanced_accuracy": [0.86, 0.94], "recall": {"crack": list(recall_ci)}},
            "per_class": {"crack": {"recall": recall, "support": 40}, "good": {"recall": 0.9, "support": 60}},
            "binary": {
                "defect_recall": recall,
                "false_reject": 0.01,
                "intervals": {"defect_recall": list(recall_ci), "false_reject": [0.002, 0.05]},
            },
        },
        "latency_ms": {"p50": p50, "p99": p99, "spread": {"p99": {"min": p99_blocks[0], "max": p99_blocks[1]}}},
        "end_to_end_ms": {"p50": p50 + 1, "p99": p99 + 1},
        "memory_mb": {"peak": 150.0},
        "host_check": {"busy": busy},
    }


def _status(row: dict, **limits: object) -> dict[str, str]:
    crits = criteria(AcceptanceConfig(**limits), classes=["crack", "good"], good_class="good")
    verdict = artifact_verdict(row, crits, require_confidence=True)
    return {c["key"]: c["status"] for c in verdict["criteria"]}


def test_a_share_is_met_with_confidence_on_the_point_only_or_not_met():
    row = _row("fp32", recall=0.9, recall_ci=(0.85, 0.95))
    assert _status(row, min_defect_recall=0.8) == {"min_defect_recall": MET}  # the whole interval is above
    assert _status(row, min_defect_recall=0.88) == {"min_defect_recall": POINT_ONLY}  # 0.9 >= 0.88 > 0.85
    assert _status(row, min_defect_recall=0.92) == {"min_defect_recall": NOT_MET}
    # Upper limits read the interval's upper end: false rejects 0.010 [0.002, 0.050].
    assert _status(row, max_false_reject=0.06)["max_false_reject"] == MET
    assert _status(row, max_false_reject=0.02)["max_false_reject"] == POINT_ONLY
    assert _status(row, max_false_reject=0.005)["max_false_reject"] == NOT_MET
    # One share for every defect class: the good class is not a defect class.
    assert _status(row, min_class_recall=0.8) == {"min_class_recall.crack": MET}


def test_latency_is_confident_only_on_a_quiet_host_size_is_measured():
    quiet, busy = _row("fp32"), _row("fp32", busy=True)
    assert _status(quiet, max_p99_ms=10)["max_p99_ms"] == MET  # slowest block 9.0 <= 10
    assert _status(quiet, max_p99_ms=8.5)["max_p99_ms"] == POINT_ONLY  # p99 8.0, slowest block 9.0
    assert _status(busy, max_p99_ms=10)["max_p99_ms"] == POINT_ONLY  # a busy host's figure is never confident
    assert _status(quiet, max_p99_ms=7)["max_p99_ms"] == NOT_MET
    assert _status(quiet, max_e2e_p99_ms=10)["max_e2e_p99_ms"] == POINT_ONLY  # no spread recorded
    assert _status(quiet, max_size_mb=5)["max_size_mb"] == MET
    assert _status(quiet, max_size_mb=3)["max_size_mb"] == NOT_MET
    no_threshold = _row("fp32")
    del no_threshold["metrics"]["binary"]
    assert _status(no_threshold, min_defect_recall=0.5)["min_defect_recall"] == NOT_MEASURED


def _report(*rows: dict) -> dict:
    return {"artifacts": list(rows), "model": {"classes": ["crack", "good"]}, "bench": {"good_class": "good"}}


def test_the_recommendation_is_the_fastest_artifact_that_passes():
    fp32 = _row("fp32", recall=0.9, recall_ci=(0.85, 0.95), p50=8.0)
    int8 = _row("int8", recall=0.86, recall_ci=(0.78, 0.92), p50=3.0)
    section = judge_report(_report(fp32, int8), AcceptanceConfig(min_defect_recall=0.8, max_size_mb=10))
    # INT8 is faster, but its recall is above the limit on the point estimate only.
    assert [v["verdict"] for v in section["artifacts"]] == ["accepted", "rejected"]
    assert section["targets"]["cpu"]["recommended"] == "cpu fp32" and section["accepted"] is True
    assert "recommended fp32" in section["targets"]["cpu"]["line"]
    relaxed = judge_report(
        _report(fp32, int8), AcceptanceConfig(min_defect_recall=0.8, max_size_mb=10, require_confidence=False)
    )
    assert relaxed["targets"]["cpu"]["recommended"] == "cpu int8"
    assert relaxed["artifacts"][1]["verdict"] == "accepted on point estimates"


def test_when_nothing_passes_the_line_names_the_criterion_that_fails_most():
    fp32, int8 = _row("fp32", size_mb=9.0), _row("int8", size_mb=2.5, recall=0.5, recall_ci=(0.4, 0.6))
    section = judge_report(_report(fp32, int8), AcceptanceConfig(min_defect_recall=0.8, max_size_mb=5))
    target = section["targets"]["cpu"]
    assert section["accepted"] is False and target["recommended"] is None
    assert target["fails_most"] in {"min_defect_recall", "max_size_mb"}
    assert target["line"].startswith("cpu: no artifact meets the criteria;") and "fails most" in target["line"]
    unset = judge_report(_report(fp32, int8), AcceptanceConfig())
    assert unset["accepted"] is None and "no acceptance criteria set" in unset["targets"]["cpu"]["line"]


def test_the_acceptance_config_is_strict_and_names_unknown_classes():
    with pytest.raises(ConfigError, match="acceptance.extra"):
        build_config_from_dict({"data": {"root": "."}, "acceptance": {"extra": 1}})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        build_config_from_dict({"data": {"root": "."}, "acceptance": {"min_class_recall": {"crack": 1.5}}})
    with pytest.raises(ConfigError, match="dent"):
        criteria(AcceptanceConfig(min_class_recall={"dent": 0.9}), classes=["crack", "good"], good_class="good")
    assert not AcceptanceConfig(min_class_recall={}).criteria_set()
    for name, field in AcceptanceConfig.model_fields.items():
        assert field.description, name


def test_bench_require_acceptance_exits_3_when_no_artifact_meets_the_criteria(run_copy):
    copy, _ = run_copy
    quick = ["--target", "cpu", "--iterations", "3", "--warmup", "0"]
    failed = invoke(["bench", copy, *quick, "--accept-min-balanced-accuracy", "1.0", "--accept-max-size-mb", "0.5",
                     "--require-acceptance"])  # fmt: skip
    assert failed.exit_code == 3, failed.output
    assert "Acceptance" in failed.output and "cpu: no artifact meets the criteria" in failed.output
    assert failed.output.rstrip().splitlines()[-1].startswith("error: acceptance criteria not met")
    report = json.loads((copy / "report.json").read_text())
    assert report["acceptance"]["accepted"] is False and report["schema_version"] == "1.3"
    passed = invoke(["bench", copy, *quick, "--accept-max-size-mb", "100", "--require-acceptance"])
    assert passed.exit_code == 0, passed.output
    assert "cpu: recommended" in passed.output
    unset = invoke(["bench", copy, *quick, "--require-acceptance"])
    assert unset.exit_code == 2 and "needs acceptance criteria" in unset.output


def test_build_require_acceptance_exits_3_after_printing_the_verdict(image_folder, tmp_path, monkeypatch):
    import edgetl.pipeline

    calls = []

    def fake_build(config, **_kwargs):
        calls.append(config.acceptance)
        return {"acceptance": {"accepted": False, "targets": {"cpu": {"recommended": None}}}}

    monkeypatch.setattr(edgetl.pipeline, "build", fake_build)
    base = ["build", "--data", image_folder, "--runs-dir", tmp_path, "--target", "cpu"]
    refused = invoke([*base, "--require-acceptance"])
    assert refused.exit_code == 2 and "needs acceptance criteria" in refused.output and not calls
    result = invoke([*base, "--accept-min-class-recall", "crack=0.9", "--accept-max-p99-ms", "20",
                     "--require-acceptance"])  # fmt: skip
    assert result.exit_code == 3, result.output
    assert calls[0].min_class_recall == {"crack": 0.9} and calls[0].max_p99_ms == 20
    bad = invoke([*base, "--accept-min-class-recall", "crack:0.9"])
    assert bad.exit_code == 2 and "class=share" in bad.output
