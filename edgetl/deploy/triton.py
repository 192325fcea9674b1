"""Triton Inference Server model repository: one model per backend, config.pbtxt from the artifact facts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgetl.files import link_or_copy, write_text_atomic

Kind = Literal["onnxruntime_onnx", "openvino", "tensorrt_plan"]
MODEL_FILES: dict[str, list[str]] = {
    "onnxruntime_onnx": ["model.onnx"],
    "openvino": ["model.xml", "model.bin"],
    "tensorrt_plan": ["model.plan"],
}


@dataclass(frozen=True)
class TritonModel:
    """One model of the repository."""

    name: str
    kind: Kind
    channels: int
    size: int
    classes: list[str]
    max_batch_size: int = 0
    gpu: bool = False
    input_name: str = "input"
    output_name: str = "logits"
    reject: dict[str, Any] | None = None  # thresholds.json's entry: travels as model parameters
    pixels: bool = False  # True: uint8 NHWC pixels in (the model normalises them), else float32 NCHW
    bf16: bool = False  # OpenVINO: run in bf16 (the backend's HINT_BF16)


def model_config(model: TritonModel) -> str:
    """config.pbtxt text. max_batch_size 0 means the dims carry the (fixed) batch dimension."""
    image = [model.size, model.size, model.channels] if model.pixels else [model.channels, model.size, model.size]
    in_dims = image if model.max_batch_size else [1, *image]
    out_dims = [len(model.classes)] if model.max_batch_size else [1, len(model.classes)]
    engine = 'backend: "openvino"' if model.kind == "openvino" else f'platform: "{model.kind}"'
    lines = [
        f'name: "{model.name}"',
        engine,
        f"max_batch_size: {model.max_batch_size}",
        "input [",
        "  {",
        f'    name: "{model.input_name}"',
        f"    data_type: {'TYPE_UINT8' if model.pixels else 'TYPE_FP32'}",
        f"    dims: [ {', '.join(map(str, in_dims))} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{model.output_name}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {', '.join(map(str, out_dims))} ]",
        '    label_filename: "labels.txt"',
        "  }",
        "]",
        "instance_group [",
        "  {",
        "    count: 1",
        f"    kind: {'KIND_GPU' if model.gpu else 'KIND_CPU'}",
        "  }",
        "]",
    ]
    if model.max_batch_size:
        lines += ["dynamic_batching { }"]
    if model.bf16:
        lines += [
            "# bf16 inference, as gated on the build host; on a CPU without AMX or AVX512-BF16 OpenVINO would emulate",
            "# it, slower than f32: remove this parameter there (the model is the FP32 IR).",
            "parameters {",
            '  key: "HINT_BF16"',
            '  value: { string_value: "YES" }',
            "}",
        ]
    if model.reject:
        for key, value in (
            ("edgetl_good_class", model.reject["good_class"]),
            ("edgetl_reject_threshold", f"{model.reject['threshold']:.6g}"),
            ("edgetl_reject_rule", f"reject when 1 - P({model.reject['good_class']}) >= threshold"),
        ):
            lines += ["parameters {", f'  key: "{key}"', f'  value: {{ string_value: "{value}" }}', "}"]
    return "\n".join(lines) + "\n"


def parse_model_config(text: str) -> Any:
    """Parse config.pbtxt with Triton's own ModelConfig protobuf (the tritonclient package)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def write_model(root: Path, model: TritonModel, files: dict[str, Path] | None) -> list[str]:
    """Write root/<name>/config.pbtxt, labels.txt and version 1's files (copied); returns relative paths.

    ``files`` None leaves version 1 empty: the file (a TensorRT plan) is added on the device.
    """
    folder = root / model.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "config.pbtxt", model_config(model))
    write_text_atomic(folder / "labels.txt", "\n".join(model.classes) + "\n")
    written = [f"{model.name}/config.pbtxt", f"{model.name}/labels.txt"]
    for name, source in (files or {}).items():
        if name not in MODEL_FILES[model.kind]:
            raise ValueError(f"{model.kind} expects {MODEL_FILES[model.kind]}, not {name}")
        link_or_copy(source, folder / "1" / name)
        written.append(f"{model.name}/1/{name}")
    return written
