"""BF16 for OpenVINO on Intel CPUs: detected from the CPU flags, refused with a reason where the CPU lacks them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.errors import EdgetlError
from edgetl.runtime import cpu_features
from edgetl.runtime.cpu_features import bf16_support, cpu_flags
from edgetl.targets.profiles import TargetProfile

AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma", "avx512f"}


@pytest.mark.parametrize(
    ("flags", "capabilities", "expected"),
    [
        ({*AVX2_ONLY, "amx_bf16", "amx_tile"}, set(), True),  # Sapphire Rapids and later
        ({*AVX2_ONLY, "avx512_bf16"}, set(), True),  # Cooper Lake, Zen 4
        (AVX2_ONLY, {"FP32", "INT8", "BF16"}, False),  # flags win over a capability list when they are readable
        (AVX2_ONLY, set(), False),
        (set(), {"FP32", "BF16"}, True),  # no readable flags: OpenVINO's word
        (set(), {"FP32", "INT8"}, False),
    ],
)
def test_bf16_is_detected_from_the_cpu_flags(flags, capabilities, expected):
    supported, reason = bf16_support(flags, capabilities)
    assert supported is expected and reason


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_only_openvino_profiles_take_bf16():
    TargetProfile(name="xeon", backend="openvino", precisions=["fp32", "bf16", "int8"])
    with pytest.raises(ValueError, match="bf16"):
        TargetProfile(name="bad", backend="onnxruntime", precisions=["bf16"])


def test_bf16_is_refused_with_the_reason_on_a_cpu_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("openvino")
    from edgetl.targets.openvino import OpenVinoTarget

    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: set(AVX2_ONLY))
    profile = TargetProfile(name="xeon", backend="openvino", precisions=["fp32", "bf16"])
    with pytest.raises(EdgetlError, match="neither amx_bf16 nor avx512_bf16") as caught:
        OpenVinoTarget().compile(Path("model.onnx"), profile, tmp_path, None, precision="bf16")
    assert caught.value.hint and "fp32" in caught.value.hint


def _planted(tmp_path: Path):
    from test_quantize_ladder import _gate_data, _images, _planted_model

    from edgetl.quantize import CalibrationSet

    path = tmp_path / "model.onnx"
    _planted_model(path)
    return path, CalibrationSet(_images(3, 32), {}), _gate_data(path)


def _openvino_ladder(tmp_path: Path, **ladder: object):
    """The OpenVINO ladder on the planted model whose NNCF INT8 fails its gate, mixed rungs off."""
    pytest.importorskip("nncf")
    from edgetl.quantize import QuantizationSpec, quantize

    path, calib, data = _planted(tmp_path)
    settings = QuantizationSpec.model_validate(
        {"gate": {"min_agreement": 0.95}, "ladder": {"max_float_groups": 0, "max_latency_ratio": None, **ladder}}
    )
    return quantize(path, calib, out=tmp_path / "q.xml", layout="openvino", settings=settings, gate=data), data


def test_the_openvino_ladder_tries_bf16_before_fp16_where_the_cpu_runs_it_natively(tmp_path: Path):
    pytest.importorskip("openvino")
    native, reason = bf16_support()
    if not native:
        pytest.skip(f"this host cannot run the bf16 rung: {reason}")
    result, data = _openvino_ladder(tmp_path)
    ladder = result.details["ladder"]
    kinds = [r["kind"] for r in ladder["rungs"]]
    assert kinds[0] == "int8" and not ladder["rungs"][0]["passed"], "NNCF INT8 must fail on the planted model"
    assert kinds[-1] == "bf16" and ladder["kind"] == "bf16" and "fp16" not in kinds
    landed = ladder["rungs"][-1]
    assert landed["cost"]["timed"] == "paired with FP32" and landed["cost"]["fp32_p50_ms"] > 0
    assert result.details["inference_precision"] == "bf16" and result.details["bf16_fallback"] == "f32"
    assert "bf16 passed" in ladder["why"] and "bf16_skipped" not in ladder
    # The artifact is the FP32 IR; run as the target loads it (in bf16 here), it agrees as its gate says.
    from edgetl.quantize.evaluate import logits_of
    from edgetl.runtime.openvino import OpenVinoRunner, precision_options

    options = precision_options(result.details)
    assert options == {"inference_precision": "bf16", "bf16_fallback": True}
    assert OpenVinoRunner(result.path, "CPU", threads=None, **options).inference_precision == "bf16"
    agree = np.mean(logits_of(result.path, data.images, precision="bf16").argmax(1) == data.reference.argmax(1))
    assert agree == pytest.approx(result.details["gate"]["figures"]["agreement"]["value"])


def test_a_bf16_rung_over_the_latency_cap_fails_and_the_ladder_goes_on_to_fp16(tmp_path: Path):
    pytest.importorskip("openvino")
    native, reason = bf16_support()
    if not native:
        pytest.skip(f"this host cannot run the bf16 rung: {reason}")
    result, _ = _openvino_ladder(tmp_path, max_latency_ratio=1e-6)
    rungs = {r["kind"]: r for r in result.details["ladder"]["rungs"]}
    assert not rungs["bf16"]["passed"] and "over the latency cap" in rungs["bf16"]["note"]
    assert result.details["ladder"]["kind"] == "fp16" and "bf16" in result.details["ladder"]["why"]
    assert "inference_precision" not in result.details


def test_without_native_bf16_the_ladder_records_why_it_has_no_bf16_rung(tmp_path: Path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: set(AVX2_ONLY))
    result, _ = _openvino_ladder(tmp_path)
    ladder = result.details["ladder"]
    assert "bf16" not in [r["kind"] for r in ladder["rungs"]] and ladder["kind"] == "fp16"
    assert "neither amx_bf16 nor avx512_bf16" in ladder["bf16_skipped"]


def test_a_ladder_bf16_model_runs_in_f32_on_a_cpu_without_bf16_where_a_bf16_artifact_is_refused(
    tmp_path: Path, monkeypatch
):
    pytest.importorskip("openvino")
    import openvino as ov
    from test_quantize_ladder import _planted_model

    from edgetl.runtime.openvino import Bf16Unavailable, OpenVinoRunner

    _planted_model(tmp_path / "model.onnx")
    xml = tmp_path / "model.xml"
    ov.save_model(ov.convert_model(str(tmp_path / "model.onnx")), str(xml), compress_to_fp16=False)
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: set(AVX2_ONLY))
    runner = OpenVinoRunner(xml, "CPU", threads=1, inference_precision="bf16", bf16_fallback=True)
    assert runner.inference_precision == "f32"
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    with pytest.raises(Bf16Unavailable, match="neither amx_bf16 nor avx512_bf16"):
        OpenVinoRunner(xml, "CPU", threads=1, inference_precision="bf16")


def test_a_bf16_model_asks_tritons_openvino_backend_for_bf16():
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (with grpc) is not installed")
    from edgetl.deploy.triton import TritonModel, model_config, parse_model_config

    plain = parse_model_config(model_config(TritonModel("m", "openvino", 1, 64, ["ok", "ng"])))
    bf16 = parse_model_config(model_config(TritonModel("m", "openvino", 1, 64, ["ok", "ng"], bf16=True)))
    assert "HINT_BF16" not in plain.parameters
    assert bf16.parameters["HINT_BF16"].string_value == "YES"


def test_a_bundle_readme_says_how_an_int8_slot_that_landed_on_bf16_runs_elsewhere():
    from edgetl.bundle.card import figure_lines, quantization_summary

    gate = {"passed": True, "line": "agreement 0.990", "source": "1000 images"}
    ladder = {"rung": 6, "landed": "bf16 (the FP32 IR run in bf16)", "kind": "bf16", "why": "bf16 passed", "rungs": []}
    validated = {"images": 10, "per_class": {"ok": 5, "ng": 5}, "dataset_sha256": "ab", "measured_by": "bench"}
    card = {"validated_on": validated, "figures": {}}
    card["quantization"] = quantization_summary({"int8": {"gate": gate, "ladder": ladder}})
    assert any("runs it in f32" in line for line in figure_lines(card))
    card["quantization"] = quantization_summary({"int8": {"gate": gate, "ladder": {**ladder, "kind": "mixed"}}})
    assert not any("runs it in f32" in line for line in figure_lines(card))
