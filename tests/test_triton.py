"""Triton model repositories: every config.pbtxt parses with Triton's own ModelConfig protobuf."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetl.deploy.triton import TritonModel, model_config, parse_model_config, write_model

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient (with grpc) is not installed")


@pytest.mark.parametrize("kind", ["onnxruntime_onnx", "openvino", "tensorrt_plan"])
@pytest.mark.parametrize("max_batch", [0, 8])
def test_config_parses_with_tritons_protobuf(kind: str, max_batch: int):
    model = TritonModel("m", kind, channels=1, size=300, classes=["ok", "ng"], max_batch_size=max_batch)  # type: ignore[arg-type]
    config = parse_model_config(model_config(model))
    assert config.name == "m" and config.max_batch_size == max_batch
    if kind == "openvino":
        assert config.backend == "openvino"
    else:
        assert config.platform == kind
    expected = [1, 300, 300] if max_batch else [1, 1, 300, 300]
    assert list(config.input[0].dims) == expected and config.input[0].name == "input"
    assert list(config.output[0].dims)[-1] == 2 and config.output[0].label_filename == "labels.txt"
    assert config.HasField("dynamic_batching") == bool(max_batch)


def _kinds(root: Path) -> set[str]:
    kinds = set()
    for path in sorted(root.glob("*/config.pbtxt")):
        config = parse_model_config(path.read_text())
        kinds.add(config.backend or config.platform)
        assert config.name == path.parent.name
        assert (path.parent / "labels.txt").read_text().split() == ["crack", "good"]
    return kinds


def test_bundle_triton_repository(trt_run):
    """A Jetson's repository has the backends that run there: ONNX Runtime and TensorRT, no OpenVINO."""
    _, run, manifest = trt_run
    root = run.root / "bundle" / "jetson-orin-nano" / "triton"
    assert _kinds(root) == {"onnxruntime_onnx", "tensorrt_plan"}
    assert (root / "tiny_onnx" / "1" / "model.onnx").is_file()
    assert manifest["models"]["int8"]["triton"] == "tiny_trt_int8"


def test_cpu_bundles_serve_every_precision_on_their_backend(tiny_run):
    run = tiny_run[1]
    assert _kinds(run.root / "bundle" / "cpu" / "triton") == {"onnxruntime_onnx"}
    assert _kinds(run.root / "bundle" / "intel-cpu" / "triton") == {"openvino"}
    for precision in ("fp32", "fp16", "int8"):
        model = run.root / "bundle" / "intel-cpu" / "triton" / f"tiny_openvino_{precision}"
        assert (model / "1" / "model.xml").is_file() and (model / "1" / "model.bin").is_file()
        assert "KIND_CPU" in (model / "config.pbtxt").read_text()
    int8 = parse_model_config((run.root / "bundle" / "cpu" / "triton" / "tiny_ort_int8" / "config.pbtxt").read_text())
    threshold = json.loads((run.target("cpu", "int8") / "threshold.json").read_text())["threshold"]
    assert float(int8.parameters["edgetl_reject_threshold"].string_value) == pytest.approx(threshold, rel=1e-5)
    # CPU bundles take uint8 NHWC pixels (export.uint8_input): Triton is told so.
    from tritonclient.grpc import model_config_pb2

    assert int8.input[0].data_type == model_config_pb2.TYPE_UINT8 and list(int8.input[0].dims) == [1, 32, 32, 1]


def test_unknown_file_for_a_backend_is_refused(tmp_path: Path):
    model = TritonModel("m", "openvino", channels=1, size=8, classes=["a", "b"])
    with pytest.raises(ValueError, match="model.xml"):
        write_model(tmp_path, model, {"model.onnx": tmp_path / "x"})


def test_reject_rule_travels_as_model_parameters():
    reject = {"good_class": "ok", "threshold": 0.4321}
    model = TritonModel("m", "onnxruntime_onnx", channels=1, size=8, classes=["ok", "scratch", "dent"], reject=reject)
    config = parse_model_config(model_config(model))
    assert config.parameters["edgetl_reject_threshold"].string_value == "0.4321"
    assert config.parameters["edgetl_good_class"].string_value == "ok"


def test_bundle_configs_carry_each_precisions_threshold(trt_run):
    _, run, _ = trt_run
    bundle = run.root / "bundle" / "jetson-orin-nano"
    thresholds = json.loads((bundle / "thresholds.json").read_text())
    int8 = parse_model_config((bundle / "triton" / "tiny_trt_int8" / "config.pbtxt").read_text())
    assert float(int8.parameters["edgetl_reject_threshold"].string_value) == pytest.approx(
        thresholds["int8"]["threshold"], rel=1e-5
    )
    ds = (bundle / "deepstream" / "config_infer_int8.txt").read_text()
    assert f"1 - P({thresholds['int8']['good_class']}) >=" in ds
