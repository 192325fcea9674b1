"""Empirical bias correction of a QDQ model: shift each quantized layer's bias so its mean output matches FP32.

Rounding activations to the int8 grid is not unbiased: a ReLU6 output that is mostly a little above zero loses
mass to the zero bin, and the next layer's outputs drift a little in one direction. Layer by layer, in graph order,
the quantized model (with every earlier correction in place) is run on a few calibration images, the mean of the
layer's output per channel is compared with the FP32 model's, and the difference is added to the layer's bias.
The graph, its scales and its Q/DQ layout stay as they are, so the runtime fuses the model exactly as before.
This is the empirical bias correction of Nagel et al., "Data-Free Quantization" (2019), which NNCF applies to its
own quantized models; onnxruntime.quantization has none.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

_LAYERS = ("Conv", "Gemm")
_BATCH = 16


def _channel_means(model: Any, outputs: list[str], images: np.ndarray, input_name: str) -> list[np.ndarray]:
    """Mean per channel (axis 1) of each named tensor over the images.

    The model is cut to those outputs (the runtime drops every node they do not need) and given a free batch
    dimension, so the images run in batches.
    """
    import onnx
    import onnxruntime as ort

    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    del cut.graph.output[:]
    cut.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in outputs)
    del cut.graph.value_info[:]
    for value in cut.graph.input:
        if value.name == input_name:
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(cut.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sums = [np.zeros(0)] * len(outputs)
    for start in range(0, len(images), _BATCH):
        for k, tensor in enumerate(session.run(outputs, {input_name: images[start : start + _BATCH]})):
            axes = tuple(a for a in range(tensor.ndim) if a != 1)
            # sum over the batch of each image's mean per channel
            total = tensor.astype(np.float64).sum(axis=axes) * (tensor.shape[0] * tensor.shape[1] / tensor.size)
            sums[k] = total if sums[k].size == 0 else sums[k] + total
    return [s / len(images) for s in sums]


def correct_biases(fp32: Path, quantized: Path, images: np.ndarray, *, input_name: str = "input") -> dict[str, Any]:
    """Correct the biases of ``quantized`` (a QDQ model of ``fp32``, same node names) in place.

    ``images``: (N, C, H, W) float32 calibration inputs. Layers are the Conv and Gemm nodes whose weights come
    through a DequantizeLinear; an int32 bias (onnxruntime's layout) moves by whole steps of its own scale, a float
    bias (TensorRT's layout) by the difference itself. Returns what was done, for artifact.json.
    """
    import onnx
    from onnx import numpy_helper

    from edgetl.files import atomic_path

    started = time.perf_counter()
    model = onnx.load(str(quantized))
    fp32_model = onnx.load(str(fp32))
    reference = {n.name: n.output[0] for n in fp32_model.graph.node}
    initializers = {i.name: i for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}

    def dequantized(name: str) -> Any:
        node = producer.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    layers: list[tuple[Any, str, np.ndarray | None]] = []
    for node in model.graph.node:
        if node.op_type not in _LAYERS or len(node.input) < 3 or node.name not in reference:
            continue
        if dequantized(node.input[1]) is None:
            continue  # a layer left in floating point
        bias_dq = dequantized(node.input[2])
        if bias_dq is not None and bias_dq.input[0] in initializers:
            step = numpy_helper.to_array(initializers[bias_dq.input[1]]).astype(np.float64)
            layers.append((node, bias_dq.input[0], step))
        elif node.input[2] in initializers:
            layers.append((node, node.input[2], None))
    if not layers:
        return {"layers": 0, "images": len(images)}

    targets = _channel_means(fp32_model, [reference[n.name] for n, _, _ in layers], images, input_name)
    shifts = []
    for (node, bias_name, scale), target in zip(layers, targets, strict=True):
        (current,) = _channel_means(model, [node.output[0]], images, input_name)
        delta = target - current
        bias = numpy_helper.to_array(initializers[bias_name])
        updated: np.ndarray
        if scale is None:
            updated = (bias + delta).astype(bias.dtype)
        else:
            info = np.iinfo(bias.dtype)
            updated = np.clip(bias + np.rint(delta / scale), info.min, info.max).astype(bias.dtype)
        initializers[bias_name].CopyFrom(numpy_helper.from_array(updated, bias_name))
        shifts.append(float(np.abs(delta).mean()))
    with atomic_path(quantized) as tmp:
        onnx.save(model, str(tmp))
    return {
        "layers": len(layers),
        "images": len(images),
        "mean_abs_shift": round(float(np.mean(shifts)), 6),
        "seconds": round(time.perf_counter() - started, 1),
    }


def spread(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` images evenly spaced through the set (the calibration set is stored class by class)."""
    if count >= len(images):
        return images
    return images[np.unique(np.linspace(0, len(images) - 1, count).round().astype(int))]
