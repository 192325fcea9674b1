"""uint8-input models: the normalisation moved into the graph computes what the host-side code does."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgetl.export import export_module
from edgetl.pixel_input import PixelInputError, check_rewrite, onnx_pixel_input, openvino_pixel_input
from edgetl.runtime.onnxruntime import OnnxRuntimeRunner
from edgetl.runtime.preprocess import PreprocessSpec, model_input, normalize


def _spec(channels: int) -> PreprocessSpec:
    return PreprocessSpec.for_channels(channels, input_size=16)  # type: ignore[arg-type]


@pytest.fixture(params=[1, 3], ids=["grey", "rgb"])
def float_onnx(request, tmp_path: Path) -> tuple[Path, PreprocessSpec]:
    channels = request.param
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    path = tmp_path / "model.onnx"
    export_module(model, torch.zeros(1, channels, 16, 16), path, dynamic_batch=True)
    return path, _spec(channels)


def _pixels(spec: PreprocessSpec, n: int = 6) -> np.ndarray:
    # Not symmetric in rows, columns or channels, so a wrong transpose or channel order shows.
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(n, 16, 16, spec.channels), dtype=np.uint8)


def test_onnx_rewrite_takes_pixels_and_gives_the_float_models_logits(float_onnx, tmp_path: Path):
    path, spec = float_onnx
    out = tmp_path / "pixels.onnx"
    onnx_pixel_input(path, out, spec)
    pixels = _pixels(spec)
    with OnnxRuntimeRunner(path, threads=1) as ref, OnnxRuntimeRunner(out, threads=1) as got:
        assert got.input_dtype == np.uint8 and got.input_shape == (None, 16, 16, spec.channels)
        expected = ref.infer(normalize(pixels, spec))
        # The same float operations in the same order as the host-side code.
        np.testing.assert_allclose(got.infer(pixels), expected, rtol=0, atol=1e-6)
    check = check_rewrite(OnnxRuntimeRunner(path, threads=1), OnnxRuntimeRunner(out, threads=1), pixels, spec)
    assert check["top1_agreement"] == 1.0 and check["images"] == len(pixels)


def test_openvino_rewrite_takes_pixels_and_gives_the_float_models_logits(float_onnx, tmp_path: Path):
    ov = pytest.importorskip("openvino")
    from edgetl.runtime.openvino import OpenVinoRunner

    path, spec = float_onnx
    for compress in (False, True):  # an FP32 IR and an FP16 one (compressed weights stay compressed)
        xml = tmp_path / f"model{int(compress)}.xml"
        ov.save_model(ov.convert_model(str(path)), str(xml), compress_to_fp16=compress)
        out = tmp_path / f"pixels{int(compress)}.xml"
        openvino_pixel_input(xml, out, spec)
        pixels = _pixels(spec)
        with OpenVinoRunner(xml, "CPU", threads=1) as ref, OpenVinoRunner(out, "CPU", threads=1) as got:
            assert got.input_dtype == np.uint8 and got.input_shape[1:] == (16, 16, spec.channels)
            np.testing.assert_allclose(got.infer(pixels), ref.infer(normalize(pixels, spec)), atol=1e-4)
        assert abs(out.with_suffix(".bin").stat().st_size - xml.with_suffix(".bin").stat().st_size) < 1024


def test_a_rewrite_that_computes_something_else_is_refused(float_onnx, tmp_path: Path):
    path, spec = float_onnx
    wrong = spec.model_copy(update={"mean": [m + 0.3 for m in spec.mean]})
    out = tmp_path / "wrong.onnx"
    onnx_pixel_input(path, out, wrong)
    with pytest.raises(PixelInputError, match="differs from the float model") as caught:
        check_rewrite(OnnxRuntimeRunner(path, threads=1), OnnxRuntimeRunner(out, threads=1), _pixels(spec), spec)
    assert "export.uint8_input: false" in (caught.value.hint or "")


def test_model_input_follows_the_spec():
    spec = _spec(1)
    pixels = _pixels(spec, 2)
    assert model_input(pixels, spec.as_pixels()).dtype == np.uint8
    np.testing.assert_array_equal(model_input(pixels, spec), normalize(pixels, spec))
    with pytest.raises(ValueError, match="dtype and layout together"):
        PreprocessSpec(dtype="uint8", layout="NCHW")


def test_the_build_gives_cpu_artifacts_pixel_input_and_tensorrt_float(tiny_run, trt_run):
    _, run, _, _, _ = tiny_run
    for profile, precision in (("cpu", "fp32"), ("cpu", "int8"), ("intel-cpu", "fp16"), ("intel-cpu", "int8")):
        record = json.loads((run.target(profile, precision) / "artifact.json").read_text())
        assert record["preprocess"]["dtype"] == "uint8" and record["preprocess"]["layout"] == "NHWC"
        assert record["details"]["pixel_input"]["top1_agreement"] == 1.0, (profile, precision)
    cpu = json.loads((run.root / "bundle" / "cpu" / "preprocess.json").read_text())
    assert cpu["dtype"] == "uint8"
    stored = np.load(run.root / "bundle" / "cpu" / "parity" / "inputs.npy", allow_pickle=False)
    assert stored.dtype == np.uint8 and stored.shape[1:] == (32, 32, 1)
    _, trt, _ = trt_run
    jetson = json.loads((trt.root / "bundle" / "jetson-orin-nano" / "preprocess.json").read_text())
    assert jetson["dtype"] == "float32" and jetson["layout"] == "NCHW"


def _gate(path: Path, spec: PreprocessSpec):
    from edgetl.quantize.gate import GateData

    rng = np.random.default_rng(2)  # dark to bright images
    pixels = np.stack([rng.integers(0, hi, size=(16, 16, spec.channels)) for hi in np.linspace(40, 256, 40)])
    images = normalize(pixels.astype(np.uint8), spec)
    with OnnxRuntimeRunner(path, threads=1) as ref:
        logits = np.concatenate([ref.infer(images[i : i + 1]) for i in range(len(images))])
    return GateData(
        images=images,
        labels=logits.argmax(1),
        reference=logits,
        groups=[str(i) for i in range(len(images))],
        good_index=None,
        max_false_reject=0.02,
        source="test images",
    )


def test_a_quantized_rewrite_is_judged_by_its_accuracy_gate(tmp_path: Path):
    from edgetl.quantize.settings import GateSpec

    # A model whose class is the sign of the image's mean brightness: half the random images each way.
    spec = _spec(1)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[2].bias.zero_()
    path = tmp_path / "model.onnx"
    export_module(model, torch.zeros(1, 1, 16, 16), path, dynamic_batch=True)
    gate, limits = _gate(path, spec), GateSpec()
    assert 0 < gate.labels.mean() < 1
    good = tmp_path / "good.onnx"
    onnx_pixel_input(path, good, spec)
    check = check_rewrite(
        OnnxRuntimeRunner(path, threads=1),
        OnnxRuntimeRunner(good, threads=1),
        _pixels(spec),
        spec,
        gate=gate,
        limits=limits,
    )
    assert check["gate"]["passed"] and check["gate"]["figures"]["agreement"]["value"] == 1.0
    # A gate that screens on its first images judges the rewrite that passes there on all of them, as the ladder.
    screened = check_rewrite(
        OnnxRuntimeRunner(path, threads=1),
        OnnxRuntimeRunner(good, threads=1),
        _pixels(spec),
        spec,
        gate=dataclasses.replace(gate, screen=20),
        limits=limits,
    )
    assert screened["gate"]["passed"] and screened["gate"]["images"] == 40
    assert screened["gate"]["screen"]["images"] == 20
    wrong = tmp_path / "wrong.onnx"
    onnx_pixel_input(path, wrong, spec.model_copy(update={"mean": [m + 0.3 for m in spec.mean]}))
    runners = lambda: (OnnxRuntimeRunner(path, threads=1), OnnxRuntimeRunner(wrong, threads=1))  # noqa: E731
    with pytest.raises(PixelInputError, match="fails the accuracy gate"):
        check_rewrite(*runners(), _pixels(spec), spec, gate=gate, limits=limits)
    # Where the float-input model did not pass its gate either, the rewrite is recorded, not refused.
    kept = check_rewrite(*runners(), _pixels(spec), spec, gate=gate, limits=limits, float_passed=False)
    assert not kept["gate"]["passed"]


def test_a_failed_rewrite_keeps_the_float_model_and_says_why(tmp_path: Path):
    from edgetl.pixel_input import take_pixels
    from edgetl.quantize.settings import GateSpec
    from edgetl.targets.base import Artifact

    class Refusing:
        def to_pixel_input(self, *args, **kwargs):
            raise PixelInputError("differs")

    spec = _spec(1)
    artifact = Artifact(profile="cpu", backend="onnxruntime", precision="fp32", model_file="model.onnx")
    artifact.preprocess = spec.model_dump(mode="json")
    take_pixels(Refusing(), artifact, tmp_path, spec, _pixels(spec), gate=None, limits=GateSpec())
    assert artifact.preprocess["dtype"] == "float32"
    assert (
        artifact.details["pixel_input"]["kept"] == "float32 NCHW input"
        and "differs" in artifact.details["pixel_input"]["why"]
    )


def test_a_bundle_says_per_precision_which_input_its_model_takes(tmp_path: Path):
    from edgetl.bundle.readme import _input_line
    from edgetl.runtime.bundle import Bundle

    spec = _spec(1)
    manifest = {
        "preprocess": spec.model_dump(mode="json"),
        "models": {"fp32": {"preprocess": spec.as_pixels().model_dump(mode="json")}, "int8": {}},
    }
    bundle = Bundle(folder=tmp_path, manifest=manifest)
    assert bundle.spec_of("fp32").takes_pixels and not bundle.spec_of("int8").takes_pixels
    line = _input_line(manifest)
    assert "the fp32 models take the resized uint8 pixels" in line and "others the normalised float32" in line


def test_a_refused_rewrite_replaces_nothing_and_leaves_no_file(float_onnx):
    from edgetl.pixel_input import rewrite_checked

    path, spec = float_onnx
    before = path.read_bytes()
    wrong = spec.model_copy(update={"mean": [m + 0.3 for m in spec.mean]})
    with pytest.raises(PixelInputError):
        rewrite_checked(
            path,
            path.with_name("model.pixels.onnx"),
            lambda model, staged: onnx_pixel_input(model, staged, wrong),
            lambda p: OnnxRuntimeRunner(p, threads=1),
            _pixels(spec),
            spec,
            gate=None,
            limits=None,
            float_passed=True,
        )
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]
