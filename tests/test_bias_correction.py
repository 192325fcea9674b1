"""Empirical bias correction of QDQ models: it removes the mean drift of each layer and touches nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgetl.export import export_module
from edgetl.quantize.bias_correction import _channel_means, spread
from edgetl.quantize.calibration import CalibrationSet
from edgetl.quantize.qdq import quantize_qdq


class _Net(nn.Module):
    """Four conv + ReLU6 blocks and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU6())

        self.blocks = nn.Sequential(block(1, 8), block(8, 16), block(16, 16), block(16, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=(2, 3)))


def _images(seed: int, count: int) -> np.ndarray:
    """Dim images with one bright pixel: most values lie within half an int8 step of zero and round down to it,
    the systematic drift bias correction exists for (a fine-tuned MobileNet's ReLU6 outputs look like this)."""
    images = np.random.default_rng(seed).uniform(0, 0.03, (count, 1, 24, 24)).astype(np.float32)
    images[:, :, 0, 0] = 8.0
    return images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CalibrationSet]:
    path = tmp_path_factory.mktemp("bias") / "model.onnx"
    export_module(_Net(), torch.zeros(1, 1, 24, 24), path)
    return path, CalibrationSet(_images(0, 48), {})


def _layer_drift(fp32: Path, quantized: Path, images: np.ndarray) -> list[float]:
    """Mean |FP32 - quantized| of each quantized layer's per-channel output mean."""
    model = onnx.load(str(quantized))
    produced = {o: n.op_type for n in model.graph.node for o in n.output}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and produced.get(n.input[1])]
    reference = {n.name: n.output[0] for n in onnx.load(str(fp32)).graph.node}
    want = _channel_means(onnx.load(str(fp32)), [reference[n.name] for n in layers], images, "input")
    got = _channel_means(model, [n.output[0] for n in layers], images, "input")
    return [float(np.abs(w - g).mean()) for w, g in zip(want, got, strict=True)]


@pytest.mark.parametrize("tensorrt", [False, True], ids=["onnxruntime-layout", "tensorrt-layout"])
def test_bias_correction_removes_the_mean_drift_and_changes_only_biases(tiny, tmp_path, tensorrt):
    fp32, calib = tiny
    options = {"tensorrt": True, "activations": "int8", "symmetric_activations": True} if tensorrt else {}
    plain, corrected = tmp_path / "plain.onnx", tmp_path / "corrected.onnx"
    quantize_qdq(fp32, plain, calib, reduce_range=True, **options)  # type: ignore[arg-type]
    details = quantize_qdq(fp32, corrected, calib, reduce_range=True, bias_correction=32, **options)  # type: ignore[arg-type]

    info = details["bias_correction"]
    assert info["layers"] == 5 and info["images"] == 32  # four convolutions and the head
    held_out = _images(1, 32)
    before, after = _layer_drift(fp32, plain, held_out), _layer_drift(fp32, corrected, held_out)
    # Measured on images the correction never saw: 30-100 x smaller here.
    assert sum(after) < 0.2 * sum(before), (before, after)

    a, b = onnx.load(str(plain)), onnx.load(str(corrected))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    changed = {
        x.name
        for x, y in zip(a.graph.initializer, b.graph.initializer, strict=True)
        if not np.array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y))
    }
    biases = {n.input[2] for n in a.graph.node if n.op_type in ("Conv", "Gemm")}
    bias_sources = biases | {n.input[0] for n in a.graph.node if n.output[0] in biases}
    assert changed and changed <= bias_sources


def test_layers_left_in_floating_point_keep_their_bias(tiny, tmp_path):
    fp32, calib = tiny
    out = tmp_path / "mixed.onnx"
    details = quantize_qdq(fp32, out, calib, fp32_blocks=2, bias_correction=16)
    assert details["bias_correction"]["layers"] == 3
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer}
    model = onnx.load(str(out))
    stem = [n for n in model.graph.node if n.op_type == "Conv" and ("/blocks.0/" in n.name or "/blocks.1/" in n.name)]
    kept = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert len(stem) == 2
    for node in stem:
        np.testing.assert_array_equal(kept[node.input[2]], original[node.input[2]])


def test_spread_takes_images_from_the_whole_set():
    images = np.arange(10)[:, None]
    assert spread(images, 4)[:, 0].tolist() == [0, 3, 6, 9]
    assert len(spread(images, 50)) == 10


def _whole_model_correction(fp32: Path, quantized: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The reference: each layer measured by running the whole model from the input, one layer after another."""
    model = onnx.load(str(quantized))
    fp32_model = onnx.load(str(fp32))
    reference = {n.name: n.output[0] for n in fp32_model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.name not in reference:
            continue
        if getattr(producer.get(node.input[1]), "op_type", "") != "DequantizeLinear":
            continue
        bias_dq = producer[node.input[2]]
        bias_name, step = bias_dq.input[0], numpy_helper.to_array(inits[bias_dq.input[1]]).astype(np.float64)
        (target,) = _channel_means(fp32_model, [reference[node.name]], images, "input")
        (current,) = _channel_means(model, [node.output[0]], images, "input")
        bias = numpy_helper.to_array(inits[bias_name])
        updated = np.clip(bias + np.rint((target - current) / step), -(2**31), 2**31 - 1).astype(bias.dtype)
        inits[bias_name].CopyFrom(numpy_helper.from_array(updated, bias_name))
    return {name: numpy_helper.to_array(i) for name, i in inits.items()}


def test_running_each_layer_from_its_kept_quantized_input_gives_the_whole_model_result(tiny, tmp_path):
    """The correction runs each layer from its quantized input, kept from the step before: the int32 biases are
    exactly those of measuring every layer through the whole model."""
    fp32, calib = tiny
    plain, pieces = tmp_path / "plain.onnx", tmp_path / "pieces.onnx"
    quantize_qdq(fp32, plain, calib, reduce_range=True)
    quantize_qdq(fp32, pieces, calib, reduce_range=True, bias_correction=32)
    want = _whole_model_correction(fp32, plain, spread(calib.tensors, 32))
    got = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(pieces)).graph.initializer}
    assert want.keys() == got.keys()
    moved = [k for k in want if not np.array_equal(want[k], numpy_helper.to_array(_init(plain, k)))]
    assert moved, "the reference must move some biases, or this test compares nothing"
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _init(path: Path, name: str) -> onnx.TensorProto:
    return next(i for i in onnx.load(str(path)).graph.initializer if i.name == name)


def test_candidates_of_one_model_share_the_fp32_reference_and_get_the_same_biases(tiny, tmp_path, monkeypatch):
    """The ladder corrects several candidates of one model on one set of images: the FP32 means are measured once,
    and a second correction of the same candidate moves its biases exactly as the first did."""
    import edgetl.quantize.bias_correction as bc

    fp32, calib = tiny
    bc._reference.clear()
    calls: list[int] = []
    real = bc._channel_means

    def counted(model, outputs, images, input_name):  # type: ignore[no-untyped-def]
        calls.append(len(outputs))
        return real(model, outputs, images, input_name)

    monkeypatch.setattr(bc, "_channel_means", counted)
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    quantize_qdq(fp32, first, calib, reduce_range=True, bias_correction=32)
    quantize_qdq(fp32, second, calib, reduce_range=True, bias_correction=32)
    assert len(calls) == 1
    for init in onnx.load(str(first)).graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(_init(second, init.name)), numpy_helper.to_array(init))
    quantize_qdq(fp32, tmp_path / "other.onnx", calib, reduce_range=True, bias_correction=16)
    assert len(calls) == 2  # other images: measured again
