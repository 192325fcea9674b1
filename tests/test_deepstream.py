"""DeepStream's input formula on raw pixels + the generated model == the PyTorch pipeline (numerically)."""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn

from edgetl.deploy.deepstream import deepstream_input, deepstream_model, nvinfer_config, write_deepstream
from edgetl.deploy.onnx_edit import GraphEditError, fold_input_scale
from edgetl.export import export_module
from edgetl.preprocess import PreprocessSpec, decode_image, preprocess_file, resized_uint8


def _net(channels: int) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(channels, 8, 3, stride=2, padding=1, bias=False),  # zero padding: the fold must stay exact
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _image(path: Path, mode: str) -> Path:
    rng = np.random.default_rng(1)
    shape = (37, 53, 3) if mode == "RGB" else (37, 53)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


@pytest.mark.parametrize("channels", [3, 1])
def test_deepstream_formula_and_model_match_pytorch(tmp_path: Path, channels: int):
    spec = PreprocessSpec.for_channels(channels, input_size=48)
    net = _net(channels)
    onnx_path = tmp_path / "model.onnx"
    export_module(net, torch.zeros(1, channels, 48, 48), onnx_path)
    ds_path = tmp_path / "ds.onnx"
    deepstream_model(onnx_path, ds_path, spec)

    image = _image(tmp_path / "part.png", "RGB" if channels == 3 else "L")
    with torch.inference_mode():
        expected = torch.softmax(net(torch.from_numpy(preprocess_file(image, spec))), 1).numpy()
    ds = deepstream_input(spec)
    assert (ds.fold_scale is not None) == (channels == 3)  # ImageNet std differs per channel; grey has one
    raw = resized_uint8(decode_image(image), spec)  # the pixels nvinfer receives
    got = ort.InferenceSession(str(ds_path)).run(["probs"], {"input": ds.apply(raw)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.argmax() == expected.argmax()


def test_fold_refuses_a_quantized_first_convolution(tmp_path: Path):
    import onnx
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int8), "w_q")
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "s"], ["w"]),
        helper.make_node("Conv", ["input", "w"], ["logits"], name="conv0"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)],
        [w, numpy_helper.from_array(np.float32(0.1), "s")],
    )
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(GraphEditError, match="fp32_blocks"):
        fold_input_scale(path, tmp_path / "out.onnx", [1.0, 2.0, 3.0])


def test_nvinfer_config_keys():
    spec = PreprocessSpec.for_channels(1, input_size=300)
    text = nvinfer_config(spec, onnx_file="model.qdq.onnx", precision="int8")
    parser = configparser.ConfigParser()
    parser.read_string(text)
    prop = parser["property"]
    assert prop["onnx-file"] == "model.qdq.onnx" and prop["network-mode"] == "1"
    assert prop["network-type"] == "1" and prop["model-color-format"] == "2"
    assert prop["infer-dims"] == "1;300;300" and prop["batch-size"] == "1"
    assert prop["output-blob-names"] == "probs" and prop["labelfile-path"] == "labels.txt"
    assert "classifier-threshold" in prop and prop["model-engine-file"].endswith("int8.engine")
    scale, offset = float(prop["net-scale-factor"]), float(prop["offsets"])
    pixel = np.float32(200)
    assert scale * (pixel - offset) == pytest.approx((200 / 255 - spec.mean[0]) / spec.std[0], rel=1e-6)


def test_write_deepstream_folder(tmp_path: Path):
    spec = PreprocessSpec.for_channels(3, input_size=32)
    onnx_path = tmp_path / "model.onnx"
    export_module(_net(3), torch.zeros(1, 3, 32, 32), onnx_path)
    files = write_deepstream(tmp_path / "ds", spec, ["good", "crack", "chip"], {"fp32": onnx_path, "fp16": onnx_path})
    assert set(files) == {"labels.txt", "model.onnx", "config_infer_fp32.txt", "config_infer_fp16.txt"}
    assert (tmp_path / "ds" / "labels.txt").read_text().strip() == "good;crack;chip"


def test_nvinfer_keeps_the_aspect_ratio_of_a_letterbox_model():
    boxed = configparser.ConfigParser()
    boxed.read_string(
        nvinfer_config(
            PreprocessSpec.for_channels(1, input_size=64, resize="letterbox"), onnx_file="m", precision="fp32"
        )
    )
    assert boxed["property"]["maintain-aspect-ratio"] == "1" and boxed["property"]["symmetric-padding"] == "1"
    squashed = configparser.ConfigParser()
    squashed.read_string(nvinfer_config(PreprocessSpec.for_channels(1, input_size=64), onnx_file="m", precision="fp32"))
    assert squashed["property"]["maintain-aspect-ratio"] == "0" and "symmetric-padding" not in squashed["property"]
