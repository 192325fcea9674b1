"""Small, exact edits of an exported ONNX graph for deployment runtimes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.errors import EdgetlError
from edgetl.files import atomic_path
from edgetl.onnx_safety import check_onnx_file


class GraphEditError(EdgetlError, ValueError):
    """A graph this edit cannot be applied to exactly; the message says why and what to do."""


def fold_input_scale(onnx_in: Path, onnx_out: Path, scale: list[float]) -> None:
    """Multiply input channel ``c`` of the first convolution's weights by ``scale[c]``.

    ONNX Conv pads with zeros only, so this is exact: ``conv(x * s) == conv'(x)`` where ``conv'`` has the
    scaled kernels, because a padded zero stays zero when scaled. The first convolution must read the graph
    input directly and own a floating-point weight initializer (keep the stem out of INT8 for quantized models).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(check_onnx_file(onnx_in)))
    graph = model.graph
    input_name = graph.input[0].name
    readers = [n for n in graph.node if input_name in n.input]
    if len(readers) != 1 or readers[0].op_type != "Conv":
        kinds = ", ".join(n.op_type for n in readers) or "nothing"
        raise GraphEditError(
            f"{onnx_in}: the input feeds {kinds}, not one Conv; the per-channel scale cannot be folded. "
            "Use the same std for every channel, or keep the stem in floating point (quantization.fp32_blocks)."
        )
    conv = readers[0]
    weights = {t.name: t for t in graph.initializer}
    if conv.input[1] not in weights:
        raise GraphEditError(
            f"{onnx_in}: the first Conv's weights are not a plain initializer (quantized?); "
            "keep the stem in floating point (quantization.fp32_blocks >= 1) to fold the input scale."
        )
    tensor = weights[conv.input[1]]
    if sum(conv.input[1] in n.input for n in graph.node) != 1:
        raise GraphEditError(f"{onnx_in}: the first Conv's weights are shared; cannot fold the input scale.")
    w = numpy_helper.to_array(tensor).astype(np.float32)
    if w.shape[1] != len(scale):
        raise GraphEditError(f"{onnx_in}: {w.shape[1]} input channels but {len(scale)} scale values.")
    folded = w * np.asarray(scale, np.float32)[None, :, None, None]
    tensor.CopyFrom(numpy_helper.from_array(folded.astype(np.float32), tensor.name))
    with atomic_path(onnx_out) as tmp:
        onnx.save(model, str(tmp))


def append_softmax(onnx_in: Path, onnx_out: Path, *, output_name: str = "probs") -> None:
    """Add a Softmax over classes after the logits: DeepStream's classifier reads probabilities."""
    import onnx
    from onnx import helper

    model = onnx.load(str(check_onnx_file(onnx_in)))
    graph = model.graph
    logits = graph.output[0]
    graph.node.append(helper.make_node("Softmax", [logits.name], [output_name], name="edgetl_softmax", axis=1))
    new_output = onnx.ValueInfoProto()
    new_output.CopyFrom(logits)
    new_output.name = output_name
    del graph.output[:]
    graph.output.append(new_output)
    onnx.checker.check_model(model)
    with atomic_path(onnx_out) as tmp:
        onnx.save(model, str(tmp))
