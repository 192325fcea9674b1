"""The frozen prefix of a backbone (the blocks that are not trained), computed once per image view.

The prefix runs in ONNX Runtime or OpenVINO (several times faster than PyTorch eager on a CPU) or in torch on a GPU;
the recipe search, the final fit, grouping features and the domain-gap embeddings all use it.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgetl.data.dataset import Sample
from edgetl.models import Classifier
from edgetl.preprocess import PreprocessSpec, decode_image, resized_uint8


def load_uint8(samples: list[Sample], spec: PreprocessSpec, *, threads: int = 4) -> np.ndarray:
    """Decode and resize images: uint8 (N, H, W, C), the exact deploy-time pixels before normalisation."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        arrays = list(pool.map(lambda s: resized_uint8(decode_image(s.path), spec), samples))
    return np.stack(arrays)


class _Prefix(nn.Module):
    """blocks[:start] (+ pooling when every block is frozen), the part computed once per view."""

    def __init__(self, model: Classifier, start: int) -> None:
        super().__init__()
        self.blocks = model.blocks[:start]
        self.pool = start == len(model.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1) if self.pool else x


def export_prefix(model: Classifier, start: int, spec: PreprocessSpec, path: Path) -> None:
    """Export ``blocks[:start]`` (pooled when ``start`` is every block) to ONNX with a dynamic batch axis."""
    from edgetl.export import export_module

    prefix = _Prefix(model, start).eval()
    if next(prefix.parameters()).is_cuda:
        prefix = copy.deepcopy(prefix).cpu()
    example = torch.zeros(1, spec.channels, spec.input_size, spec.input_size)
    export_module(prefix, example, path, opset=17, dynamic_batch=True, output_name="features")


def prefix_runner(
    model: Classifier,
    start: int,
    spec: PreprocessSpec,
    backend: str,
    *,
    int8_calibration: np.ndarray | None = None,
    device: torch.device | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A function computing the frozen prefix on normalised NCHW batches with the chosen runtime.

    With ``int8_calibration`` (normalised NCHW images) the prefix is first quantized to INT8 QDQ
    (onnxruntime only), as the deployed INT8 model computes it. ``device`` is where the torch backend runs.
    """
    prefix = _Prefix(model, start).eval()
    if backend == "torch":
        target = device or torch.device("cpu")
        prefix = prefix.to(target)

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return prefix(torch.from_numpy(x).to(target)).cpu().numpy()

        return run_torch
    # Both runtimes read the whole model when the session is made, so the file can go right after.
    with tempfile.TemporaryDirectory(prefix="edgetl-prefix-") as folder:
        onnx_path = Path(folder) / "prefix.onnx"
        export_prefix(model, start, spec, onnx_path)
        if backend == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            return lambda x: np.asarray(compiled(x)[0])
        import onnxruntime as ort

        if int8_calibration is not None:
            from edgetl.quantize import CalibrationSet, QuantizationSpec, quantize

            quantized = Path(folder) / "prefix-int8.onnx"
            settings = QuantizationSpec(reduce_range=True)  # the cpu profile's layout: u8 x s8, 7-bit weights
            quantize(
                onnx_path, CalibrationSet(int8_calibration, {}), out=quantized, layout="onnxruntime", settings=settings
            )
            onnx_path = quantized
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return lambda x: np.asarray(session.run(None, {"input": x})[0])
