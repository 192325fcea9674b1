"""Empirical bias correction of a QDQ model: shift each quantized layer's bias so its mean output matches FP32.

Rounding activations to the int8 grid is not unbiased: a ReLU6 output that is mostly a little above zero loses
mass to the zero bin, and the next layer's outputs drift a little in one direction. Layer by layer, in graph order,
the quantized model (with every earlier correction in place) is run on a few calibration images, the mean of the
layer's output per channel is compared with the FP32 model's, and the difference is added to the layer's bias.
The graph, its scales and its Q/DQ layout stay as they are, so the runtime fuses the model exactly as before.
Each layer runs from its own quantized input, kept from the step before (an integer tensor: what the runtime's
fused kernels produce upstream, bit for bit), so the whole correction costs about two forward passes rather than
one per layer. The FP32 reference is measured once per model and image set, and every candidate of a ladder
shares it.
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
            total = _image_mean_sum(tensor)
            sums[k] = total if sums[k].size == 0 else sums[k] + total
    return [s / len(images) for s in sums]


def _image_mean_sum(tensor: np.ndarray) -> np.ndarray:
    """Sum over the batch of each image's mean per channel (axis 1), accumulated in float64 without a copy."""
    axes = tuple(a for a in range(tensor.ndim) if a != 1)
    return tensor.sum(axis=axes, dtype=np.float64) * (tensor.shape[0] * tensor.shape[1] / tensor.size)


# The FP32 model's per-channel means of the last call: the ladder corrects several candidates of one model on one
# set of images, and the reference does not change between them.
_reference: dict[tuple[Any, ...], dict[str, np.ndarray]] = {}


def _reference_means(fp32: Path, fp32_model: Any, images: np.ndarray, input_name: str) -> dict[str, np.ndarray]:
    """Per-channel means of every Conv and Gemm output of the FP32 model over the images (cached for one model:
    keyed by the bytes of the model file and of the images)."""
    import hashlib

    key = (
        hashlib.sha256(fp32.read_bytes()).hexdigest(),
        hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
        images.shape,
        input_name,
    )
    if key not in _reference:
        outputs = [n.output[0] for n in fp32_model.graph.node if n.op_type in _LAYERS]
        _reference.clear()
        _reference[key] = dict(zip(outputs, _channel_means(fp32_model, outputs, images, input_name), strict=True))
    return _reference[key]


class _Pieces:
    """A QDQ model run piece by piece over fixed images: a piece starts at tensors already computed (the
    quantized outputs of Q nodes, kept as integer arrays) and ends at the tensors asked for."""

    def __init__(self, model: Any, images: np.ndarray, input_name: str, *, unfused: bool) -> None:
        self.model = model
        self.unfused = unfused
        self.producer = {out: n for n in model.graph.node for out in n.output}
        self.initializers = {i.name: i for i in model.graph.initializer}
        self.position = {id(n): k for k, n in enumerate(model.graph.node)}
        last: dict[str, int] = {}
        for k, node in enumerate(model.graph.node):
            for name in node.input:
                last[name] = k
        self.last_use = last
        self.input_name = input_name
        self.kept: dict[str, np.ndarray] = {input_name: images}

    def _session(self, outputs: list[str]) -> tuple[Any, list[str]]:
        import onnx
        import onnxruntime as ort

        needed: set[int] = set()
        starts: list[str] = []
        stack, seen = list(outputs), set()
        while stack:
            name = stack.pop()
            if name in seen or not name or name in self.initializers:
                continue
            seen.add(name)
            if name in self.kept:
                starts.append(name)
                continue
            node = self.producer[name]
            needed.add(id(node))
            stack.extend(node.input)
        nodes = [n for n in self.model.graph.node if id(n) in needed]
        used = {i for n in nodes for i in n.input}
        graph = onnx.helper.make_graph(
            nodes,
            "piece",
            [
                onnx.helper.make_tensor_value_info(
                    name,
                    onnx.helper.np_dtype_to_tensor_dtype(self.kept[name].dtype),
                    ["batch", *self.kept[name].shape[1:]],
                )
                for name in starts
            ],
            [onnx.helper.make_empty_tensor_value_info(name) for name in outputs],
            [self.initializers[name] for name in self.initializers if name in used],
        )
        piece = onnx.helper.make_model(graph, opset_imports=self.model.opset_import)
        piece.ir_version = self.model.ir_version
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.unfused:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(piece.SerializeToString(), options, providers=["CPUExecutionProvider"]), starts

    def _run(self, outputs: list[str]) -> Any:
        session, starts = self._session(outputs)
        count = len(self.kept[self.input_name])
        for begin in range(0, count, _BATCH):
            yield session.run(outputs, {name: self.kept[name][begin : begin + _BATCH] for name in starts})

    def keep(self, name: str) -> None:
        """Compute ``name`` over every image and keep it as a start for later pieces; drop the kept tensors that
        no node after its producer reads (pieces further on start from it instead)."""
        if name in self.kept:
            return
        self.kept[name] = np.concatenate([out[0] for out in self._run([name])])
        here = self.position[id(self.producer[name])]
        for old in [n for n in self.kept if n not in (self.input_name, name) and self.last_use.get(n, -1) < here]:
            del self.kept[old]

    def channel_means(self, name: str) -> np.ndarray:
        """Mean per channel (axis 1) of ``name`` over the images."""
        total = np.zeros(0)
        for (tensor,) in self._run([name]):
            part = _image_mean_sum(tensor)
            total = part if total.size == 0 else total + part
        return total / len(self.kept[self.input_name])


def correct_biases(
    fp32: Path, quantized: Path, images: np.ndarray, *, input_name: str = "input", unfused: bool = False
) -> dict[str, Any]:
    """Correct the biases of ``quantized`` (a QDQ model of ``fp32``, same node names) in place.

    ``unfused``: run the quantized model node by node, the arithmetic of its Q/DQ nodes (a TensorRT QDQ model:
    what TensorRT computes); otherwise with the runtime's fused int8 kernels, as the line runs it.

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
    reference = {n.name: n.output[0] for n in fp32_model.graph.node if n.op_type in _LAYERS}
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

    means = _reference_means(fp32, fp32_model, images, input_name)
    targets = [means[reference[n.name]] for n, _, _ in layers]
    shifts = []
    pieces = _Pieces(model, images, input_name, unfused=unfused)
    for (node, bias_name, scale), target in zip(layers, targets, strict=True):
        source = dequantized(node.input[0])
        if source is not None and source.input[0] in producer:
            pieces.keep(source.input[0])  # the layer's quantized input: final, every layer upstream is corrected
        current = pieces.channel_means(node.output[0])
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
