"""Nothing untrusted is executed: no unsafe unpickling anywhere, ONNX external data stays in the model's folder."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from edgetl.models import WeightsError, build_classifier, load_checkpoint
from edgetl.onnx_safety import UntrustedFileError, check_onnx_file

REPO = Path(__file__).parents[1]


def _python_files() -> list[Path]:
    return [p for folder in ("edgetl", "tests", "benchmarks") for p in sorted((REPO / folder).rglob("*.py"))]


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_no_torch_load_without_weights_only_and_no_other_unsafe_loader():
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            where = f"{path.relative_to(REPO)}:{node.lineno} {func}"
            if func.endswith("torch.load"):
                flag = _keyword(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(where)
            elif func in {"pickle.load", "pickle.loads", "dill.load", "joblib.load", "yaml.load", "yaml.unsafe_load"}:
                offenders.append(where)
            elif func in {"np.load", "numpy.load"}:
                flag = _keyword(node, "allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    offenders.append(where)
    assert not offenders, f"unsafe loaders: {offenders}"


class _RunsCode:
    """Unpickling this object would create a marker file (as a hostile checkpoint could run any command)."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = str(marker)
    checkpoint = tmp_path / "model.pt"
    torch.save({"format": "edgetl-checkpoint-v1", "state_dict": {}, "meta": {"x": evil}}, checkpoint)
    with pytest.raises(ValueError, match="refused") as err:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(err.value)
    weights = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": evil}, weights)
    with pytest.raises(WeightsError, match="refused"):
        build_classifier("mobilenet_v2", 2, weights_file=weights)
    assert not marker.exists()


def _model_with_external_data(folder: Path, location: str) -> Path:
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [2, 2])],
        [weight],
    )
    path = folder / "model.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "sub/../../secret.bin", "link.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path: Path, location: str):
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "link.bin").symlink_to(tmp_path / "secret.bin")
    model = _model_with_external_data(tmp_path / "m", location)
    with pytest.raises(UntrustedFileError, match="outside the model's folder"):
        check_onnx_file(model)


def test_onnx_external_data_beside_the_model_loads_everywhere(tmp_path: Path):
    from edgetl.targets.onnxruntime import OnnxRuntimeRunner
    from edgetl.targets.profiles import resolve_profile

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    model = _model_with_external_data(tmp_path / "m", "w.bin")
    assert check_onnx_file(model) == model
    out = OnnxRuntimeRunner(model, threads=1).infer(np.ones((2, 2), np.float32))
    np.testing.assert_allclose(out, 2.0)
    # The same file pointing outside is refused by every place that loads ONNX.
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    bad = _model_with_external_data(tmp_path / "bad", "../secret.bin")
    from edgetl.export import onnx_metadata
    from edgetl.targets import get_target

    with pytest.raises(UntrustedFileError):
        OnnxRuntimeRunner(bad, threads=1)
    with pytest.raises(UntrustedFileError):
        onnx_metadata(bad)
    for backend in ("onnxruntime", "openvino"):
        out_dir = tmp_path / f"out-{backend}"
        out_dir.mkdir()
        with pytest.raises(UntrustedFileError):
            get_target(backend).compile(bad, resolve_profile(backend), out_dir, None, precision="fp32")
        assert not any(out_dir.iterdir())
