"""onnx_safety scans every tensor a runtime may read: graph, sparse initializers, node attributes, functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgetl.onnx_safety import UntrustedFileError, check_onnx_file, external_data_files


def _external(name: str, location: str, array: np.ndarray) -> onnx.TensorProto:
    tensor = numpy_helper.from_array(array, name)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _sparse(location: str) -> onnx.SparseTensorProto:
    values = _external("s", location, np.ones(2, np.float32))
    indices = numpy_helper.from_array(np.array([0, 3], np.int64), "s_indices")
    return helper.make_sparse_tensor(values, indices, [2, 2])


def _save(folder: Path, graph: onnx.GraphProto, functions: list | None = None) -> Path:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        ir_version=8,
        functions=functions or [],
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _io() -> tuple[list, list]:
    return (
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [2, 2])],
    )


def model_with_a_function(folder: Path, location: str) -> Path:
    """The external tensor sits in a Constant node inside a model-local function."""
    constant = helper.make_node("Constant", [], ["w"], value=_external("fw", location, np.ones((2, 2), np.float32)))
    matmul = helper.make_node("MatMul", ["x", "w"], ["y"])
    function = helper.make_function(
        "local", "Weighted", ["x"], ["y"], [constant, matmul], [helper.make_opsetid("", 17)]
    )
    inputs, outputs = _io()
    graph = helper.make_graph(
        [helper.make_node("Weighted", ["input"], ["logits"], domain="local")], "g", inputs, outputs
    )
    return _save(folder, graph, [function])


def model_with_a_sparse_initializer(folder: Path, location: str) -> Path:
    inputs, outputs = _io()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "s"], ["logits"])],
        "g",
        inputs,
        outputs,
        sparse_initializer=[_sparse(location)],
    )
    return _save(folder, graph)


def model_with_a_sparse_attribute(folder: Path, location: str) -> Path:
    inputs, outputs = _io()
    constant = helper.make_node("Constant", [], ["s"], sparse_value=_sparse(location))
    graph = helper.make_graph([constant, helper.make_node("MatMul", ["input", "s"], ["logits"])], "g", inputs, outputs)
    return _save(folder, graph)


BUILDERS = [model_with_a_function, model_with_a_sparse_initializer, model_with_a_sparse_attribute]


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname"])
def test_external_data_outside_the_folder_is_refused_wherever_the_tensor_sits(tmp_path: Path, build, location: str):
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    model = build(tmp_path / "m", location)
    with pytest.raises(UntrustedFileError, match="outside the model's folder"):
        check_onnx_file(model)


@pytest.mark.parametrize("build", BUILDERS)
def test_external_data_beside_the_model_is_found_wherever_the_tensor_sits(tmp_path: Path, build):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    assert external_data_files(build(tmp_path / "m", "w.bin")) == ["w.bin"]


def test_a_damaged_onnx_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07not a protobuf" * 3)
    with pytest.raises(UntrustedFileError, match="not a readable ONNX file") as info:
        check_onnx_file(path)
    assert "edgetl compile" in (info.value.hint or "")
