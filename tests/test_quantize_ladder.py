"""The INT8 gate and ladder on a planted model: plain INT8 fails the gate, the ladder finds the group to keep in
floating point by its measured sensitivity, and every rung is recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.quantize import CalibrationSet, GateData, QuantizationSpec, quantize
from edgetl.quantize.gate import evidence_budget, gate_line, score_gate
from edgetl.quantize.settings import GateSpec

pytest.importorskip("onnxruntime")


def _planted_model(path: Path, *, seed: int = 0) -> None:
    """Stem (blocks.0) conv -> ReLU -> 1x1 conv, with one stem channel 500 x larger than the others and scaled
    back by the 1x1 conv: the tensor between them has a range only that channel uses, so per-tensor INT8 erases
    the other three, which carry the decision. Then a block (blocks.1) and a linear head whose decision sits at
    the median image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w0 = rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32)
    w0[3] = np.abs(w0[3]) * 500
    w1 = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)
    w1[3, 3] = 1 / 500
    w2 = rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32)
    w2[:, 3] = 0  # the outlier channel carries nothing the decision needs
    head = rng.normal(0, 1, (2, 4)).astype(np.float32)
    inits = {"w0": w0, "w1": w1, "w2": w2, "head_w": head, "head_b": np.zeros(2, np.float32)}
    nodes = [
        helper.make_node("Conv", ["input", "w0"], ["s0"], name="/blocks.0/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s0"], ["s1"], name="/blocks.0/act/Relu"),
        helper.make_node("Conv", ["s1", "w1"], ["s2"], name="/blocks.0/project/Conv"),
        helper.make_node("Relu", ["s2"], ["b0"], name="/blocks.0/act2/Relu"),
        helper.make_node("Conv", ["b0", "w2"], ["c1"], name="/blocks.1/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["b1"], name="/blocks.1/act/Relu"),
        helper.make_node("GlobalAveragePool", ["b1"], ["pool"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="/head/Flatten"),
        helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], name="/head/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    # Put the decision boundary at the median image, so the gate sees quantization noise flip decisions.
    from edgetl.quantize.evaluate import logits_of

    margin = np.median(np.diff(logits_of(path, _images(1, 64)), axis=1))
    inits["head_b"] = np.array([margin / 2, -margin / 2], np.float32)
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    onnx.save(model, str(path))


def _images(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, 1, 16, 16)) * rng.uniform(0.2, 1.0, (n, 1, 1, 1))).astype(np.float32)


def _gate_data(path: Path) -> GateData:
    from edgetl.quantize.evaluate import logits_of

    images = _images(2, 200)
    reference = logits_of(path, images)
    return GateData(
        images=images,
        labels=reference.argmax(1),
        reference=reference,
        groups=[f"part{i}" for i in range(len(images))],
        good_index=0,
        max_false_reject=0.05,
        source="200 generated images",
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CalibrationSet, GateData]:
    path = tmp_path_factory.mktemp("planted") / "model.onnx"
    _planted_model(path)
    return path, CalibrationSet(_images(3, 32), {}), _gate_data(path)


def _settings(**ladder: object) -> QuantizationSpec:
    return QuantizationSpec.model_validate(
        {"gate": {"min_agreement": 0.95}, "ladder": {"max_latency_ratio": None, **ladder}}
    )


def test_plain_int8_fails_the_gate_and_the_ladder_keeps_the_measured_stem_in_floating_point(planted, tmp_path):
    path, calib, data = planted
    settings = _settings(recipes=[])
    result = quantize(path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=settings, gate=data)
    ladder, gate = result.details["ladder"], result.details["gate"]
    first = ladder["rungs"][0]
    assert first["kind"] == "int8" and not first["passed"], "plain INT8 must fail the gate on the planted model"
    assert "agreement" in first["gate"]["failed"]
    assert ladder["sensitivity"][0]["group"] == "blocks.0", ladder["sensitivity"]
    assert ladder["kind"] == "mixed" and ladder["rung"] > 1
    assert result.details["float_groups"] == ["blocks.0"]
    assert gate["passed"] and gate["figures"]["agreement"]["value"] >= 0.95
    assert "blocks.0" in ladder["why"]
    for rung in ladder["rungs"]:
        assert rung["cost"]["size_bytes"] > 0 and rung["cost"]["p50_ms"] > 0
        assert rung["cost"]["build_seconds"] >= 0 and rung["cost"]["gate_seconds"] >= 0
    assert ladder["seconds"] >= ladder["sensitivity_seconds"] >= 0
    # The artifact is the landed rung's model: it agrees with FP32 as its gate says.
    from edgetl.quantize.evaluate import logits_of

    agree = np.mean(logits_of(result.path, data.images).argmax(1) == data.reference.argmax(1))
    assert agree == pytest.approx(gate["figures"]["agreement"]["value"])


def test_one_method_calibrates_once_for_its_rungs_and_the_sensitivity_ranking(planted, tmp_path, monkeypatch):
    import importlib

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function

    calls: list[object] = []
    original = ort_quantize.create_calibrator

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("calibrate_method"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ort_quantize, "create_calibrator", counting)
    path, calib, data = planted
    result = quantize(
        path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=_settings(recipes=[]), gate=data
    )
    assert result.details["ladder"]["sensitivity"] and result.details["ladder"]["kind"] == "mixed"
    assert len(calls) == 1, calls


def test_bias_correction_is_a_measured_choice_that_reuses_the_ranges(planted, tmp_path, monkeypatch):
    import importlib

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function

    calls: list[object] = []
    original = ort_quantize.create_calibrator
    monkeypatch.setattr(ort_quantize, "create_calibrator", lambda *a, **k: calls.append(1) or original(*a, **k))
    path, calib, data = planted
    settings = _settings(recipes=[{"method": "minmax", "per_channel": False}])
    settings = settings.model_copy(update={"bias_correction": 16})
    result = quantize(path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=settings, gate=data)
    rungs = result.details["ladder"]["rungs"]
    assert [(r["kind"], r.get("per_channel"), r.get("bias_correction")) for r in rungs[:4]] == [
        ("int8", None, True),
        ("calibration", True, False),
        ("calibration", False, False),
        ("calibration", False, True),
    ]
    assert "no bias correction" in rungs[1]["name"] and "no bias correction" not in rungs[0]["name"]
    assert len(calls) == 1, "one method, one calibration: the rungs without the correction reuse its ranges"
    landed = result.details
    assert (landed["bias_correction"] is None) == (
        not landed["ladder"]["rungs"][landed["ladder"]["rung"] - 1].get("bias_correction", True)
    )


def test_tensorrt_candidates_are_gated_and_ranked_node_by_node_as_tensorrt_computes_them(
    planted, tmp_path, monkeypatch
):
    from edgetl.quantize import evaluate, ladder, sensitivity

    seen: list[tuple[str, bool]] = []

    def spy(module: object, name: str):
        def run(path: Path, *args: object, **kwargs: object) -> object:
            seen.append((module.__name__, bool(kwargs.get("unfused"))))
            return getattr(evaluate, name)(path, *args, **kwargs)

        return run

    monkeypatch.setattr(ladder, "logits_fn", spy(ladder, "logits_fn"))
    monkeypatch.setattr(sensitivity, "logits_of", spy(sensitivity, "logits_of"))
    path, calib, data = planted
    quantize(path, calib, out=tmp_path / "q.onnx", layout="tensorrt", settings=_settings(recipes=[]), gate=data)
    assert {m for m, _ in seen} == {ladder.__name__, sensitivity.__name__}
    assert all(unfused for _, unfused in seen), seen
    seen.clear()
    quantize(path, calib, out=tmp_path / "o.onnx", layout="onnxruntime", settings=_settings(recipes=[]), gate=data)
    assert seen and not any(unfused for _, unfused in seen), "the ONNX Runtime layout runs fused, as on the line"


def test_every_calibration_rung_is_tried_and_recorded_before_mixed_precision(planted, tmp_path):
    path, calib, data = planted
    settings = _settings(recipes=[{"method": "percentile"}, {"method": "minmax", "per_channel": False}])
    result = quantize(path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=settings, gate=data)
    kinds = [r["kind"] for r in result.details["ladder"]["rungs"]]
    assert kinds[:3] == ["int8", "calibration", "calibration"]
    assert result.details["gate"]["passed"]


def test_a_ladder_that_is_off_keeps_the_failing_int8_and_says_so(planted, tmp_path):
    path, calib, data = planted
    settings = _settings(enabled=False)
    result = quantize(path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=settings, gate=data)
    assert not result.details["gate"]["passed"] and len(result.details["ladder"]["rungs"]) == 1
    assert "ladder is off" in result.details["ladder"]["why"]


def test_nothing_fits_the_latency_cap_or_the_groups_then_the_ladder_lands_on_fp32(planted, tmp_path):
    path, calib, data = planted
    settings = _settings(recipes=[], max_float_groups=0)
    result = quantize(path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=settings, gate=data)
    assert result.details["ladder"]["kind"] == "fp32" and result.details["gate"]["passed"]
    assert result.path.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("cap", [1e-6, 1000.0], ids=["over-the-cap", "under-the-cap"])
def test_the_latency_cap_times_each_mixed_rung_against_fp32_in_the_same_minute(planted, tmp_path, cap):
    path, calib, data = planted
    settings = _settings(recipes=[], max_latency_ratio=cap)
    result = quantize(path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=settings, gate=data)
    ladder = result.details["ladder"]
    mixed = [r for r in ladder["rungs"] if r["kind"] == "mixed"]
    assert mixed and all(r["cost"]["timed"] == "paired with FP32" and r["cost"]["fp32_p50_ms"] > 0 for r in mixed)
    if cap < 1:
        assert len(mixed) == 1 and "over the latency cap" in mixed[0]["note"] and not mixed[0]["passed"]
        assert ladder["kind"] == "fp32"
    else:
        assert ladder["kind"] == "mixed" and result.details["float_groups"] == ["blocks.0"]


def test_the_gate_reports_each_figure_with_an_interval_around_it(planted):
    _, _, data = planted
    noisy = data.reference + np.random.default_rng(0).normal(0, 0.5, data.reference.shape).astype(np.float32)
    gate = score_gate(noisy, data, GateSpec())
    for name in ("agreement", "balanced_accuracy_drop", "defect_recall_drop"):
        figure = gate["figures"][name]
        assert figure["interval"][0] <= figure["value"] <= figure["interval"][1]
    assert gate["passed"] == (not gate["failed"])
    same = score_gate(data.reference, data, GateSpec())
    assert same["passed"] and same["figures"]["agreement"]["value"] == 1.0


def test_no_backend_module_imports_another_and_training_quantizes_through_the_package():
    import ast

    root = Path(__file__).resolve().parent.parent / "edgetl"
    backends = {"onnxruntime", "openvino", "tensorrt"}
    for name in backends:
        tree = ast.parse((root / "targets" / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        others = {f"edgetl.targets.{b}" for b in backends - {name}}
        assert not imported & others, (name, imported & others)
    for module in ("train.py", "prefix.py"):
        text = (root / module).read_text()
        assert "edgetl.targets.onnxruntime" not in text and "edgetl.targets.tensorrt" not in text, module
    assert "from edgetl.quantize import" in (root / "prefix.py").read_text()


def test_the_gate_judges_defect_recall_of_a_model_with_several_defect_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [60, 30, 30])  # good, scratch, crack
    reference = rng.normal(0, 0.3, (len(labels), 3)).astype(np.float32)
    reference[np.arange(len(labels)), labels] += 3.0
    data = GateData(
        images=np.zeros((len(labels), 1, 2, 2), np.float32),
        labels=labels,
        reference=reference,
        groups=[f"part{i}" for i in range(len(labels))],
        good_index=0,
        max_false_reject=0.02,
        source="120 generated logits",
    )
    blurred = reference.copy()
    blurred[labels == 2, 0] += 6.0  # the cracks now look good to the quantized model: recall drops, agreement too
    gate = score_gate(blurred, data, GateSpec())
    recall = gate["figures"]["defect_recall_drop"]
    assert recall["value"] > 0.3 and not recall["met"] and "defect_recall_drop" in gate["failed"]
    assert score_gate(reference, data, GateSpec())["figures"]["defect_recall_drop"]["value"] == 0.0


def _two_class_gate(reference: np.ndarray, labels: np.ndarray) -> GateData:
    return GateData(
        images=np.zeros((len(labels), 1, 2, 2), np.float32),
        labels=labels,
        reference=reference,
        groups=[f"part{i}" for i in range(len(labels))],
        good_index=0,
        max_false_reject=0.01,
        source=f"{len(labels)} generated logits",
    )


def test_one_good_image_moving_does_not_fail_the_gate_but_a_shift_of_every_defect_does():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], [170, 90])
    margin = np.where(labels == 1, rng.normal(2.0, 1.5, len(labels)), rng.normal(-2.0, 1.0, len(labels)))
    reference = np.stack([np.zeros(len(labels)), margin], 1).astype(np.float32)
    data = _two_class_gate(reference, labels)
    assert evidence_budget(0.01, 170, 5) == pytest.approx(5 / 170)
    assert evidence_budget(0.01, 1000, 5) == 0.01

    good = np.flatnonzero(labels == 0)
    second = good[np.argsort(reference[good, 1])[-2]]
    moved = reference.copy()
    moved[second, 1] = reference[labels == 1, 1].max() - 0.01  # one good image now scores above almost every defect
    strict = score_gate(moved, data, GateSpec(min_tail_images=1))["figures"]["defect_recall_drop"]
    assert strict["read_at"] == 0.01 and not strict["met"]  # at 1 % of 170 the threshold is that one image
    steady = score_gate(moved, data, GateSpec())["figures"]["defect_recall_drop"]
    assert steady["read_at"] == pytest.approx(5 / 170) and steady["met"] and abs(steady["value"]) < 0.02

    shifted = reference.copy()
    shifted[labels == 1, 1] -= 1.0  # every defect looks a little better: real damage, read at either rate
    gate = score_gate(shifted, data, GateSpec())
    assert not gate["figures"]["defect_recall_drop"]["met"] and "defect_recall_drop" in gate["failed"]
    assert "at 2.9% false rejects" in gate_line(gate)
