"""Bundles for every target: one layout, complete, verified before use, parity pack runnable here, CLI on bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgetl.bundle import BundleError, bench_bundle, read_manifest, verify_bundle
from edgetl.cli import app
from edgetl.files import sha256_file


@pytest.fixture
def bundle(trt_run, tmp_path: Path) -> Path:
    _, run, _ = trt_run
    copy = tmp_path / "jetson-orin-nano"
    shutil.copytree(run.root / "bundle" / "jetson-orin-nano", copy)
    return copy


def test_bundle_is_complete(trt_run):
    _, run, manifest = trt_run
    folder = run.root / "bundle" / "jetson-orin-nano"
    for name in ("model.onnx", "model.fp16.onnx", "model.qdq.onnx", "labels.txt", "preprocess.json", "README.md"):
        assert name in manifest["files"], name
    assert set(manifest["models"]) == {"fp32", "fp16", "int8"}
    assert (folder / "labels.txt").read_text().split() == ["crack", "good"]
    assert json.loads((folder / "preprocess.json").read_text())["input_size"] == 32
    inputs = np.load(folder / manifest["parity"]["inputs"], allow_pickle=False)
    # Golden images stored as uint8 pixels (a quarter of float32); a float TensorRT model gets them normalised.
    assert inputs.dtype == np.uint8 and inputs.shape[1:] == (32, 32, 1)
    assert len(inputs) == len(manifest["parity"]["names"]) > 0
    for precision, path in manifest["parity"]["references"].items():
        assert np.load(folder / path, allow_pickle=False).shape == (len(inputs), 2), precision
    provenance = manifest["provenance"]
    assert provenance["checkpoint_sha256"] == sha256_file(run.train / "model.pt")
    assert provenance["dataset_sha256"] and provenance["versions"]["onnxruntime"]
    assert provenance["qdq_check"]["per_channel_weights"] > 0
    host = manifest["host_metrics"]
    assert host["split"] == "test" and 0 <= host["int8"]["accuracy"] <= 1
    thresholds = json.loads((folder / "thresholds.json").read_text())
    assert set(thresholds) == {"fp32", "fp16", "int8"} and thresholds["int8"]["good_class"] == "good"
    assert all(t["val_false_reject"] <= t["max_false_reject"] for t in thresholds.values())
    assert "defect_recall" in json.dumps(host["int8"]["binary"])
    assert any(p.startswith("deepstream/config_infer_int8") for p in manifest["files"])
    assert any(p.endswith("config.pbtxt") for p in manifest["files"])
    assert manifest["on_device"].startswith("edgetl compile ")
    # No OpenVINO model in a Jetson bundle: Triton gets the backends that run there (ONNX Runtime, TensorRT).
    assert not [p for p in manifest["files"] if p.endswith((".xml", ".bin")) or "openvino" in p]
    assert {m["triton"] for m in manifest["models"].values()} == {f"tiny_trt_{p}" for p in ("fp32", "fp16", "int8")}
    card = json.loads((folder / "card.json").read_text())
    assert card["arch"] == "mobilenet_v2" and card["classes"] == ["crack", "good"] and card["good_class"] == "good"
    assert card["input"]["shape"] == [1, 1, 32, 32] and card["dataset_sha256"] == provenance["dataset_sha256"]
    assert card["validated_on"]["split"] == "test" and "ONNX Runtime" in card["validated_on"]["measured_by"]
    assert card["figures"]["int8"]["metrics"]["accuracy"] == host["int8"]["accuracy"]
    assert card["recipe"]["strategy"] == "partial"
    gated = card["quantization"]["int8"]
    assert gated["gate"] and gated["rung"] >= 1 and gated["why"] and gated["rungs"][0]["name"]
    readme = (folder / "README.md").read_text()
    assert "INT8 accuracy gate" in readme
    assert "edgetl compile jetson-orin-nano" in readme and "cuda-python>=12.6,<13" in readme
    assert 'pip install "edgetl[onnxruntime]"' in readme and "edgetl predict jetson-orin-nano" in readme
    # Every file on disk is in the manifest and no temporary folder is left.
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(manifest["files"])
    assert not [p for p in (run.root / "bundle").iterdir() if p.name.startswith(".")]


def test_verify_runs_the_parity_pack_here(bundle: Path):
    result = verify_bundle(bundle)
    assert result["passed"]
    assert {r["precision"] for r in result["checked"]} == {"fp32", "fp16", "int8"}
    assert all(r["runtime"] == "onnxruntime-cpu" for r in result["checked"])  # no engines on this host
    assert (bundle / "verify.json").is_file()


def test_one_flipped_byte_is_refused_before_loading(bundle: Path):
    data = bytearray((bundle / "model.qdq.onnx").read_bytes())
    data[len(data) // 3] ^= 0x01
    (bundle / "model.qdq.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.qdq\.onnx differs"):
        verify_bundle(bundle)


def test_missing_file_and_escaping_path_are_refused(bundle: Path):
    (bundle / "parity" / "inputs.npy").unlink()
    with pytest.raises(BundleError, match=r"inputs\.npy is missing"):
        read_manifest(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {"../outside.txt": "0" * 64}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(bundle)


def test_parity_drift_fails_loudly(bundle: Path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    reference = bundle / manifest["parity"]["references"]["fp32"]
    logits = np.load(reference, allow_pickle=False)
    np.save(reference, logits[:, ::-1].copy())  # swap classes: every top-1 flips
    manifest["files"][manifest["parity"]["references"]["fp32"]] = sha256_file(reference)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="fp32 on onnxruntime-cpu.*FAILED|FAILED[\\s\\S]*fp32"):
        verify_bundle(bundle)


def test_cli_on_a_bundle(bundle: Path):
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(bundle)])
    assert ok.exit_code == 0, ok.output
    assert "parity pack passed" in ok.output
    device_only = runner.invoke(app, ["compile", str(bundle)])
    assert device_only.exit_code == 2
    assert "device" in device_only.output
    assert not (bundle / "engines").exists()
    timed = runner.invoke(app, ["bench", str(bundle)])
    assert timed.exit_code == 0, timed.output
    assert "p50" in timed.output and (bundle / "bench.json").is_file()


def test_bench_bundle_reports_every_precision(bundle: Path):
    rows = bench_bundle(bundle, warmup=1, iterations=3)["results"]
    assert {r["precision"] for r in rows} == {"fp32", "fp16", "int8"}
    assert all(r["latency_ms"]["p50"] > 0 for r in rows)


def test_rebuilding_keeps_the_previous_bundle_until_done(trt_run, monkeypatch: pytest.MonkeyPatch):
    """A bundle write that fails half-way leaves the earlier bundle untouched and no temporary folder."""
    import edgetl.bundle.write as bundle_module
    from edgetl.pipeline import stage_bundle
    from edgetl.targets.profiles import resolve_profile

    config, run, _ = trt_run
    folder = run.root / "bundle" / "jetson-orin-nano"
    before = {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "_triton", broken)
    with pytest.raises(OSError, match="disk full"):
        stage_bundle(config, run, resolve_profile("jetson"))
    assert {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file()} == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_bundle_stage_command(trt_run):
    _, run, _ = trt_run
    result = CliRunner().invoke(app, ["bundle", str(run.root)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "built here" in said and "not built here: TensorRT engines" in said
    assert read_manifest(run.root / "bundle" / "jetson-orin-nano")["kind"] == "edgetl-bundle"


def test_cpu_bundle_needs_the_bench_first(trt_run):
    """A CPU bundle carries the thresholds its bench tuned: without a bench it is refused with the command to run."""
    from edgetl.pipeline import stage_compile
    from edgetl.targets.profiles import resolve_profile

    config, run, _ = trt_run
    stage_compile(config, run, resolve_profile("cpu"))
    result = CliRunner().invoke(app, ["bundle", str(run.root), "--target", "cpu"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "threshold.json is missing" in said and "edgetl bench" in said
    assert not (run.root / "bundle" / "cpu").exists()


def test_bundle_files_are_readable_by_other_users(trt_run):
    """Bundles are copied to devices and mounted into containers: no owner-only temp-file modes."""
    _, run, _ = trt_run
    folder = run.root / "bundle" / "jetson-orin-nano"
    for path in [folder, *folder.rglob("*")]:
        assert path.stat().st_mode & 0o004, path


def test_report_carries_the_bundle_host_checks(trt_run):
    """A TensorRT-only run on a host without TensorRT: no artifact to time, the bundle's checks in the report."""
    from edgetl.pipeline import stage_bench
    from edgetl.report import validate_report
    from edgetl.targets.profiles import resolve_profile

    config, run, _ = trt_run
    report = stage_bench(config, run, [resolve_profile("jetson")])
    validate_report(report)
    bundle = report["bundles"]["jetson-orin-nano"]
    assert set(bundle["models"]) == {"fp32", "fp16", "int8"} and not bundle["engines_built_here"]
    assert bundle["on_device"].startswith("edgetl compile")
    text = (run.root / "report.md").read_text()
    assert "## Device bundle jetson-orin-nano (TensorRT 10.3, JetPack 6.2)" in text
    assert "Device bundle jetson-orin-nano" in (run.root / "report.html").read_text()


# --- CPU bundles (the tiny run: cpu and intel-cpu, benched, then bundled) ------------------------------------


@pytest.mark.parametrize(
    ("profile", "files"),
    [
        ("cpu", {"fp32": ["model.onnx"], "int8": ["model.int8.onnx"]}),
        (
            "intel-cpu",
            {
                "fp32": ["model.xml", "model.bin"],
                "fp16": ["model.fp16.xml", "model.fp16.bin"],
                "int8": ["model.int8.xml", "model.int8.bin"],
            },
        ),
    ],
)
def test_every_target_gets_a_bundle_in_one_layout(tiny_run, profile: str, files: dict[str, list[str]]):
    _, run, report, _, _ = tiny_run
    folder = run.root / "bundle" / profile
    manifest = read_manifest(folder)
    assert {p: m["files"] for p, m in manifest["models"].items()} == files
    for name in ("labels.txt", "preprocess.json", "thresholds.json", "card.json", "README.md", "parity/inputs.npy"):
        assert name in manifest["files"], name
    assert manifest["backend"] == ("onnxruntime" if profile == "cpu" else "openvino")
    assert not manifest["deepstream"] and not [f for f in manifest["files"] if "deepstream" in f or "trt" in f]
    triton = [f for f in manifest["files"] if f.startswith("triton/") and f.endswith("config.pbtxt")]
    assert len(triton) == len(files)
    backend = "openvino" if profile == "intel-cpu" else "onnxruntime_onnx"
    assert all(backend in (folder / f).read_text() and "KIND_CPU" in (folder / f).read_text() for f in triton)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(manifest["files"])
    # The thresholds are exactly the bench's, artifact by artifact; so are the card's figures.
    thresholds = json.loads((folder / "thresholds.json").read_text())
    card = json.loads((folder / "card.json").read_text())
    for precision in files:
        bench = json.loads((run.target(profile, precision) / "threshold.json").read_text())
        assert thresholds[precision] == bench
        entry = next(a for a in report["artifacts"] if a["target"] == profile and a["precision"] == precision)
        assert card["figures"][precision]["metrics"] == entry["metrics"]
        assert card["figures"][precision]["threshold"]["threshold"] == bench["threshold"]
    assert "edgetl bench" in card["validated_on"]["measured_by"] and card["fp32_reference"]
    # The sign-off travels with the model: the bench's verdict line for this target.
    assert card["acceptance"]["summary"] == report["acceptance"]["targets"][profile]["line"]
    readme = (folder / "README.md").read_text()
    extra = "onnxruntime" if profile == "cpu" else "openvino"
    assert f'pip install "edgetl[{extra}]"' in readme and f"edgetl predict {profile} images/" in readme
    assert "edgetl compile" not in readme and "| int8 |" in readme


@pytest.mark.parametrize("profile", ["cpu", "intel-cpu"])
def test_verify_runs_every_cpu_bundle_through_the_runtime(tiny_run, tmp_path: Path, profile: str):
    _, run, _, _, _ = tiny_run
    copy = tmp_path / profile
    shutil.copytree(run.root / "bundle" / profile, copy)
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == 0, result.output
    runtime = "openvino-CPU" if profile == "intel-cpu" else "onnxruntime-cpu"
    assert f"int8 on {runtime}" in result.output and "parity pack passed" in result.output
    assert (copy / "verify.json").is_file()
    timed = bench_bundle(copy, warmup=1, iterations=3)["results"]
    assert {r["runtime"] for r in timed} == {runtime} and all(r["latency_ms"]["p50"] > 0 for r in timed)
    verify_bundle(copy)  # verify.json and bench.json are device outputs: the bundle still verifies with them
    nothing = CliRunner().invoke(app, ["compile", str(copy)])
    assert nothing.exit_code == 2 and "nothing to compile" in nothing.output


def test_verify_refuses_a_file_the_manifest_does_not_list(tiny_run, tmp_path: Path):
    _, run, _, _, _ = tiny_run
    copy = tmp_path / "cpu"
    shutil.copytree(run.root / "bundle" / "cpu", copy)
    (copy / "model.int8.onnx.orig").write_bytes(b"an editor's backup")
    result = CliRunner().invoke(app, ["verify", str(copy)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "does not list: model.int8.onnx.orig" in said
    (copy / "model.int8.onnx.orig").unlink()
    (copy / "engines").mkdir()
    (copy / "engines" / "stray.txt").write_text("written by compile on a device")
    verify_bundle(copy)  # engines/ belongs to the device steps (each engine has its own artifact.json)


def test_bundle_command_writes_every_target(tiny_run):
    _, run, _, _, _ = tiny_run
    result = CliRunner().invoke(app, ["bundle", str(run.root)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "bundle cpu" in said and "bundle intel-cpu" in said and "thresholds of the bench" in said


def test_a_manifest_naming_a_file_it_does_not_list_is_refused(tiny_run, tmp_path: Path):
    """Every path the manifest names (thresholds, parity pack, models) must be a listed, hash-checked file."""
    _, run, _, _, _ = tiny_run
    copy = tmp_path / "cpu"
    shutil.copytree(run.root / "bundle" / "cpu", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["thresholds"] = "../thresholds.json"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not among its files"):
        verify_bundle(copy)


def test_bundle_models_are_stored_once_and_the_run_size_counts_them_once(trt_run):
    from edgetl.clean import run_size

    _, run, manifest = trt_run
    folder = run.root / "bundle" / "jetson-orin-nano"
    shared = folder / "model.onnx"
    triton_copy = next(folder / f for f in manifest["triton"] if f.endswith("/1/model.onnx"))
    # Hard links, not copies: the run's exported model, the bundle's and its Triton repository's are one file.
    assert shared.stat().st_ino == (run.export / "model.onnx").stat().st_ino == triton_copy.stat().st_ino
    assert sha256_file(shared) == manifest["files"]["model.onnx"]
    reports = ("report.json", "report.md", "report.html", ".edgetl.lock")
    naive = sum(p.stat().st_size for p in run.root.rglob("*") if p.is_file() and p.name not in reports)
    size = run_size(run)
    assert size["bytes"] <= naive - 2 * shared.stat().st_size
    assert sum(size["parts"].values()) <= size["bytes"]
