"""Models that take the camera's uint8 pixels: the normalisation moves from the host into the graph.

A compiled CPU artifact (ONNX Runtime ONNX, OpenVINO IR) is rewritten to take uint8 ``(N, H, W, C)`` pixels, the
resized image as it is, and to compute ``((x / 255) - mean) / std`` in NCHW itself: the same arithmetic, in the same
order, as :func:`edgetl.runtime.preprocess.normalize` (ONNX: Transpose, Cast, Div, Sub, Div; OpenVINO: its
``PrePostProcessor``). The line then feeds pixels and skips a float conversion and a transpose per image. Each
rewrite is checked against the float model on real images before it replaces anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.data.dataset import Dataset
from edgetl.errors import EdgetlError
from edgetl.files import atomic_path
from edgetl.quantize.gate import GateData
from edgetl.quantize.settings import GateSpec
from edgetl.runtime.preprocess import PreprocessSpec, model_input, normalize, pixels_of
from edgetl.runtime.runner import Runner

# Logits of the pixel-input model may differ from the float model's by float rounding (OpenVINO may fuse the
# normalisation into the first convolution); more than this, or any changed top-1, is a failed rewrite.
MAX_SCALED_DIFF = 1e-3


class PixelInputError(EdgetlError, RuntimeError):
    """A pixel-input rewrite that does not compute what the float model does; nothing was replaced."""


def check_images(dataset: Dataset, spec: PreprocessSpec, count: int = 32) -> np.ndarray:
    """Validation pixels (uint8 N, H, W, C; training images when there is no validation split) on which a
    rewrite is checked against the float model."""
    from edgetl.data.inputs import split_pixels

    return split_pixels(dataset, spec, "val" if dataset.split("val") else "train", limit=count)[0]


def take_pixels(
    target: Any,
    artifact: Any,
    folder: Path,
    spec: PreprocessSpec,
    pixels: np.ndarray,
    *,
    gate: GateData | None,
    limits: GateSpec,
) -> None:
    """Rewrite a freshly compiled artifact (in its staging ``folder``) to take uint8 pixels where its backend can,
    checked (quantized precisions by their gate); its record then says so (``preprocess``, ``details.pixel_input``).
    """
    gated = artifact.precision in ("int8", "bf16") and gate is not None
    try:
        check = target.to_pixel_input(
            artifact, folder, spec, pixels, gate=gate if gated else None, limits=limits if gated else None
        )
    except PixelInputError as exc:
        # The float-input model stays: a bundle says per precision which input its model takes.
        artifact.details["pixel_input"] = {"kept": "float32 NCHW input", "why": str(exc)}
        _warn(f"{artifact.profile} {artifact.precision}: keeps float input; {exc}")
        return
    if check is not None:
        artifact.preprocess = spec.as_pixels().model_dump(mode="json")
        artifact.details["pixel_input"] = check


def rewrite_checked(
    model: Path,
    staged: Path,
    write: Callable[[Path, Path], None],
    runner: Callable[[Path], Runner],
    pixels: np.ndarray,
    spec: PreprocessSpec,
    *,
    gate: GateData | None,
    limits: GateSpec | None,
    float_passed: bool,
    companions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``write(model, staged)``, check the staged model against ``model`` (:func:`check_rewrite`), then replace
    ``model`` (and its ``companions``, suffixes such as an IR's ``.bin``) by it; on any failure nothing is replaced
    and the staged files are removed."""
    try:
        write(model, staged)
        check = check_rewrite(
            runner(model), runner(staged), pixels, spec, gate=gate, limits=limits, float_passed=float_passed
        )
    except BaseException:
        for suffix in (staged.suffix, *companions):
            staged.with_suffix(suffix).unlink(missing_ok=True)
        raise
    for suffix in companions:
        staged.with_suffix(suffix).replace(model.with_suffix(suffix))
    staged.replace(model)  # a new file: the exported model this one may be linked to is unchanged
    return check


def gate_passed(artifact: Any) -> bool:
    """Whether the artifact's float-input model passed its accuracy gate (True where it has none)."""
    gate = artifact.details.get("gate")
    return not isinstance(gate, dict) or bool(gate.get("passed", True))


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"warning: {message}", markup=False)


def onnx_pixel_input(onnx_in: Path, onnx_out: Path, spec: PreprocessSpec) -> None:
    """Write ``onnx_out``: ``onnx_in`` with a uint8 NHWC input named as before and the normalisation in front."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgetl.onnx_safety import check_onnx_file

    model = onnx.load(str(check_onnx_file(onnx_in)))
    graph = model.graph
    old = graph.input[0]
    name = old.name
    dims = old.type.tensor_type.shape.dim
    if len(dims) != 4 or old.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise PixelInputError(f"{onnx_in}: the input {name!r} is not a float NCHW tensor; it is left as it is.")
    normalised = f"{name}_normalised"
    for node in graph.node:
        node.input[:] = [normalised if i == name else i for i in node.input]
    channels = len(spec.mean)
    shape = [1, channels, 1, 1]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(255.0, np.float32), f"{name}_255"),
            numpy_helper.from_array(np.asarray(spec.mean, np.float32).reshape(shape), f"{name}_mean"),
            numpy_helper.from_array(np.asarray(spec.std, np.float32).reshape(shape), f"{name}_std"),
        ]
    )
    prefix = [
        helper.make_node("Transpose", [name], [f"{name}_nchw"], perm=[0, 3, 1, 2], name=f"{name}_to_nchw"),
        helper.make_node("Cast", [f"{name}_nchw"], [f"{name}_float"], to=TensorProto.FLOAT, name=f"{name}_cast"),
        helper.make_node("Div", [f"{name}_float", f"{name}_255"], [f"{name}_scaled"], name=f"{name}_div255"),
        helper.make_node("Sub", [f"{name}_scaled", f"{name}_mean"], [f"{name}_centred"], name=f"{name}_sub_mean"),
        helper.make_node("Div", [f"{name}_centred", f"{name}_std"], [normalised], name=f"{name}_div_std"),
    ]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(prefix + nodes)
    batch, c, h, w = (d.dim_param or d.dim_value for d in dims)
    pixels = helper.make_tensor_value_info(name, TensorProto.UINT8, [batch, h, w, c])
    graph.input.remove(old)
    graph.input.insert(0, pixels)
    for prop in model.metadata_props:
        if prop.key == "edgetl.preprocess":
            prop.value = spec.as_pixels().model_dump_json()
    with atomic_path(onnx_out) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)


def openvino_pixel_input(xml_in: Path, xml_out: Path, spec: PreprocessSpec) -> None:
    """Write ``xml_out`` (+ its .bin, beside ``xml_in``'s): the IR with a uint8 NHWC input and OpenVINO's
    preprocessing steps in front. ``xml_out`` must not be ``xml_in`` (OpenVINO maps the weights it reads)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    model = ov.Core().read_model(str(xml_in))
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess()
    steps.convert_element_type(ov.Type.f32).scale(255.0).mean(list(spec.mean)).scale(list(spec.std))
    # compress_to_fp16=False keeps the weights as they are (an FP16 IR stays FP16, an FP32 one FP32).
    ov.save_model(ppp.build(), str(xml_out), compress_to_fp16=False)


def check_rewrite(
    float_runner: Runner,
    pixel_runner: Runner,
    pixels: np.ndarray,
    spec: PreprocessSpec,
    *,
    gate: GateData | None = None,
    limits: GateSpec | None = None,
    float_passed: bool = True,
) -> dict[str, Any]:
    """The pixel-input model against the float model on ``pixels`` (uint8 N, H, W, C); raises when they differ.

    A floating-point model must give the float model's logits (up to rounding) and top-1 on every image. A
    quantized model (``gate``: its accuracy gate's images, ``limits``: the profile's gate) may round its first
    quantization step differently once the normalisation is fused into it, so it must instead pass the gate
    itself where the float-input model did (``float_passed``). Returns images, max |logit difference|, the largest
    difference scaled by the logits' size, top-1 agreement (and the gate's figures for a quantized model).
    """
    float_spec, pixel_spec = spec.as_float(), spec.as_pixels()
    scored: dict[str, Any] = {}
    with float_runner, pixel_runner:
        ref = np.concatenate([float_runner.infer(model_input(p, float_spec)) for p in pixels])
        got = np.concatenate([pixel_runner.infer(model_input(p, pixel_spec)) for p in pixels])
        if gate is not None and limits is not None:
            from edgetl.quantize.gate import screened_gate

            gate_pixels = pixels_of(gate.images, spec)
            if not np.array_equal(normalize(gate_pixels, spec), gate.images):
                raise PixelInputError("the accuracy gate's images are not normalised pixels; cannot re-gate the model")

            def pixel_logits(images: np.ndarray) -> np.ndarray:
                batch = pixels_of(images, spec)
                return np.concatenate([pixel_runner.infer(batch[i : i + 1]) for i in range(len(batch))])

            scored = screened_gate(pixel_logits, gate, limits)
    diff = np.abs(ref - got).max(axis=1)
    scaled = diff / np.maximum(1.0, np.abs(ref).max(axis=1))
    result: dict[str, Any] = {
        "images": len(pixels),
        "max_abs_diff": float(diff.max()),
        "max_scaled_diff": float(scaled.max()),
        "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "limit": MAX_SCALED_DIFF,
    }
    hint = "set export.uint8_input: false to keep host-side normalisation, and report this model"
    if gate is not None and limits is not None:
        from edgetl.quantize.gate import gate_line

        result["gate"] = {**scored, "line": gate_line(scored), "source": gate.source}
        result["rule"] = "a quantized model: passes its accuracy gate with uint8 input where it passed with float"
        if not scored["passed"] and float_passed:
            raise PixelInputError(
                f"the uint8-input model fails the accuracy gate the float-input one passed ({gate_line(scored)})",
                hint=hint,
            )
        return result
    result["rule"] = f"max |logit diff| <= {MAX_SCALED_DIFF:.0e} x max(1, max |logit|) and the same top-1"
    if result["max_scaled_diff"] > MAX_SCALED_DIFF or result["top1_agreement"] < 1.0:
        raise PixelInputError(
            f"the uint8-input model differs from the float model: max |logit diff| {result['max_abs_diff']:.2e} "
            f"({result['max_scaled_diff']:.2e} of the logits' size, limit {MAX_SCALED_DIFF:.0e}), top-1 agreement "
            f"{result['top1_agreement']:.3f} on {len(pixels)} images",
            hint=hint,
        )
    return result
