"""Train, export, calibrate, compile and bench on a tiny generated data set (seconds)."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import tree_hashes

from edgetl.config import TrainConfig
from edgetl.export import onnx_metadata
from edgetl.models import load_checkpoint
from edgetl.pipeline import (
    stage_bench,
    stage_export,
)
from edgetl.report import SCHEMA_VERSION
from edgetl.run import init_run, open_run
from edgetl.targets import Artifact, backends, get_target
from edgetl.targets.profiles import resolve_profile
from edgetl.train import resolve_strategy


def test_train_outputs(tiny_run):
    _, run, _, _, _ = tiny_run
    for name in ("model.pt", "meta.json", "history.csv", "curves.png"):
        assert (run.train / name).is_file(), name
    meta = json.loads((run.train / "meta.json").read_text())
    assert meta["strategy"] == "partial" and meta["trained_from_block"] == 15
    assert meta["classes"] == ["crack", "good"]
    assert meta["preprocess"]["channels"] == 1
    assert meta["dataset_hash"] and meta["versions"]["torch"]
    model, _ = load_checkpoint(run.train / "model.pt")
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2)


def test_export_parity_and_metadata(tiny_run):
    _, run, _, _, _ = tiny_run
    parity = json.loads((run.export / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    props = onnx_metadata(run.export / "model.onnx")
    assert json.loads(props["edgetl.classes"]) == ["crack", "good"]
    assert json.loads(props["edgetl.preprocess"])["input_size"] == 32
    assert onnx.load(str(run.export / "model.onnx")).opset_import[0].version == 17


def test_calibration_manifest(tiny_run):
    _, run, _, _, _ = tiny_run
    manifest = json.loads((run.calibration / "manifest.json").read_text())
    assert manifest["count"] == 8 and manifest["split"] == "train"
    assert sum(manifest["counts_per_class"].values()) == 8
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])


@pytest.mark.parametrize("backend", backends())
def test_target_conformance(tiny_run, backend: str):
    """Every backend: artifacts verify, load, and match the ONNX FP32 reference."""
    import onnxruntime as ort

    from edgetl.runtime.preprocess import PreprocessSpec, preprocess_file

    config, run, _, images, _ = tiny_run
    target = get_target(backend)
    if backend == "tensorrt":
        pytest.skip("TensorRT engines are built on the device; tests/test_tensorrt.py covers them where a GPU is")
    profile = next(resolve_profile(t) for t in config.targets if resolve_profile(t).backend == backend)
    assert target.is_available() and target.version()
    reference_session = ort.InferenceSession(str(run.export / "model.onnx"))
    for precision in profile.precisions:
        artifact = Artifact.read(run.target(profile.name, precision))
        assert artifact.backend == backend and artifact.classes == ["crack", "good"]
        spec = PreprocessSpec.model_validate(artifact.preprocess)
        # In-distribution inputs (the images INT8 was calibrated on), not noise that INT8 ranges clip.
        paths = sorted(images.rglob("*.png"))[::3]
        xs = [preprocess_file(path, spec) for path in paths]  # uint8 pixels for a uint8-input artifact
        with target.load(artifact, threads=1) as runner:
            outs = np.concatenate([runner.infer(x) for x in xs])
        floats = [preprocess_file(path, spec.as_float()) for path in paths]  # the exported model's input
        reference = np.concatenate([reference_session.run(None, {"input": x})[0] for x in floats])
        assert outs.shape == (len(xs), 2)
        if precision == "fp32":
            assert np.abs(outs - reference).max() <= 1e-4
        else:
            spread = float(reference.max() - reference.min())
            assert np.abs(outs - reference).mean() <= 0.25 * spread + 0.05, precision


def test_tampered_artifact_is_refused(tiny_run, tmp_path: Path):
    import shutil

    _, run, _, _, _ = tiny_run
    copy = tmp_path / "int8"
    shutil.copytree(run.target("cpu", "int8"), copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.onnx"):
        Artifact.read(copy)


def test_report_has_every_artifact(tiny_run):
    _config, run, report, images, before = tiny_run
    assert report["schema_version"] == SCHEMA_VERSION
    got = {(a["target"], a["precision"]) for a in report["artifacts"]}
    assert got == {
        ("cpu", "fp32"),
        ("cpu", "int8"),
        ("intel-cpu", "fp32"),
        ("intel-cpu", "fp16"),
        ("intel-cpu", "int8"),
    }
    for a in report["artifacts"]:
        assert set(a["metrics"]) >= {"accuracy", "balanced_accuracy", "per_class"}
        assert a["latency_ms"]["p50"] > 0 and a["size_bytes"] > 0
        assert 0 <= a["fp32_agreement"] <= 1
    assert (run.root / "report.md").read_text().count("| cpu |") == 2
    assert tree_hashes(images) == before


def test_stages_rerun_alone_from_the_run_folder(tiny_run):
    _, run, _, _, _ = tiny_run
    reopened, config = open_run(run.root)
    first = (run.export / "model.onnx").read_bytes()
    stage_export(config, reopened)
    assert (run.export / "model.onnx").read_bytes() == first
    assert not [p for p in run.root.rglob("*") if p.name.endswith(".tmp")]


def test_existing_run_needs_force(tiny_run):
    from edgetl.config import ConfigError

    config, _, _, _, _ = tiny_run
    with pytest.raises(ConfigError, match="--force"):
        init_run(config)


def test_given_strategies_resolve_to_their_first_trained_block():
    assert resolve_strategy(TrainConfig(strategy="linear"), "mobilenet_v2") == ("linear", 19)
    assert resolve_strategy(TrainConfig(strategy="partial"), "mobilenet_v2") == ("partial", 7)
    assert resolve_strategy(TrainConfig(strategy="full"), "resnet18") == ("full", 0)
    assert resolve_strategy(TrainConfig(strategy="partial", trainable_blocks=99), "resnet18") == ("partial", 0)


def test_every_int8_artifact_records_its_gate_and_the_rung_it_landed_on(tiny_run):
    _, run, _, _, _ = tiny_run
    for profile in ("cpu", "intel-cpu"):
        details = Artifact.read(run.target(profile, "int8")).details
        gate, ladder = details["gate"], details["ladder"]
        assert gate["source"].startswith("the validation split") and gate["images"] > 0
        assert set(gate["figures"]) >= {"agreement", "balanced_accuracy_drop", "defect_recall_drop"}
        assert gate["limits"]["min_agreement"] == 0.98 and gate["line"]
        assert ladder["rungs"][0]["kind"] == "int8" and ladder["why"]
        assert ladder["landed"] == ladder["rungs"][ladder["rung"] - 1]["name"]
        assert gate["passed"] == ladder["rungs"][ladder["rung"] - 1]["gate"]["passed"]
        # No hand-tuned stem rule: what stays in floating point is the ladder's measured choice.
        assert details.get("fp32_blocks", 0) == 0


def test_int8_keeps_the_configured_stem_in_floating_point(tiny_run, tmp_path):
    import shutil

    import openvino as ov

    from edgetl.pipeline import stage_compile
    from edgetl.run import RunDir

    config, run, _, _, _ = tiny_run
    copy = RunDir(tmp_path / "run")
    for part in ("data", "train", "export", "calibration"):
        shutil.copytree(run.root / part, copy.root / part)
    stem = config.model_copy(update={"calibration": config.calibration.model_copy(update={"fp32_blocks": 2})})
    for name in ("cpu", "intel-cpu"):
        profile = resolve_profile(name)
        q = profile.quantization
        ladder_off = q.model_copy(update={"ladder": q.ladder.model_copy(update={"enabled": False})})
        profile = profile.model_copy(update={"quantization": ladder_off})
        stage_compile(stem, copy, profile)
    ort_artifact = Artifact.read(copy.target("cpu", "int8"))
    assert ort_artifact.details["fp32_blocks"] == 2 and ort_artifact.details["fp32_nodes"] > 0
    graph = onnx.load(str(ort_artifact.model_path)).graph
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    stem_convs = [n for n in graph.node if n.op_type == "Conv" and ("/blocks.0/" in n.name or "/blocks.1/" in n.name)]
    later = [n for n in graph.node if n.op_type == "Conv" and "/blocks.5/" in n.name]
    assert stem_convs and all(produced_by.get(n.input[1]) != "DequantizeLinear" for n in stem_convs)
    assert later and all(produced_by.get(n.input[1]) == "DequantizeLinear" for n in later)
    ov_artifact = Artifact.read(copy.target("intel-cpu", "int8"))
    assert ov_artifact.details["fp32_blocks"] == 2
    ops = ov.Core().read_model(str(ov_artifact.model_path)).get_ordered_ops()
    # Saved IRs hold quantized weights as int8 constants with a scale named ".../fq_weights_<n>" (a Multiply).
    weights = [o.get_friendly_name() for o in ops if "fq_weights" in o.get_friendly_name()]
    assert any("/blocks.5/" in name for name in weights)
    assert not any("/blocks.0/" in name or "/blocks.1/" in name for name in weights)


def test_rerunning_bench_keeps_the_build_timings(tiny_run):
    config, run, _, _, _ = tiny_run
    profiles = [resolve_profile("cpu")]
    first = stage_bench(config, run, profiles, timings={"train": 12.5})
    again = stage_bench(config, run, profiles)
    assert first["timings_s"]["train"] == again["timings_s"]["train"] == 12.5
    assert "bench" in again["timings_s"]


def test_bias_correction_follows_the_profile_unless_the_config_overrides_it(tiny_run, tmp_path):
    import shutil

    from edgetl.pipeline import stage_compile
    from edgetl.run import RunDir
    from edgetl.targets.profiles import resolve_profile

    config, run, _, _, _ = tiny_run
    # The ladder may land on a rung without the correction (it measures each recipe both ways), so the profile's
    # own recipe is compiled with the ladder off: that one always corrects.
    ladder = Artifact.read(run.target("cpu", "int8")).details["ladder"]
    assert ladder["rungs"][0]["bias_correction"] is True
    copy = RunDir(tmp_path / "run")
    for part in ("data", "train", "export", "calibration"):
        shutil.copytree(run.root / part, copy.root / part)
    profile = resolve_profile("cpu")
    q = profile.quantization
    profile = profile.model_copy(
        update={"quantization": q.model_copy(update={"ladder": q.ladder.model_copy(update={"enabled": False})})}
    )
    stage_compile(config, copy, profile)
    details = Artifact.read(copy.target("cpu", "int8")).details
    assert details["moving_average"] and details["bias_correction"]["layers"] > 0
    assert details["bias_correction"]["images"] == 8  # the whole (tiny) calibration set
    off = config.model_copy(update={"calibration": config.calibration.model_copy(update={"bias_correction": 0})})
    stage_compile(off, copy, resolve_profile("cpu"))
    details = Artifact.read(copy.target("cpu", "int8")).details
    assert details["bias_correction"] is None
    assert all("bias_correction" not in r for r in details["ladder"]["rungs"])
