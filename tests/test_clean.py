"""Smaller runs: calibration pixels as uint8, and `edgetl clean` removes only what can be rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hostile import file_hashes, invoke

from edgetl.preprocess import PreprocessSpec, preprocess_file
from edgetl.quantize.calibration import load_calibration


def test_calibration_pixels_are_uint8_and_load_as_the_deploy_time_tensors(tiny_run):
    _, run, _, _, _ = tiny_run
    stored = np.load(run.calibration / "calib.npy", allow_pickle=False)
    assert stored.dtype == np.uint8 and stored.shape[-1] == 1  # N, H, W, C pixels: a quarter of float32
    calib = load_calibration(run.calibration)
    spec = PreprocessSpec.model_validate(calib.manifest["preprocess"])
    expected = np.concatenate([preprocess_file(Path(f["path"]), spec) for f in calib.manifest["files"]])
    assert calib.tensors.dtype == np.float32 and calib.tensors.shape == tuple(calib.manifest["shape"])
    np.testing.assert_array_equal(calib.tensors, expected)  # normalised on load by the deploy-time code
    assert calib.batches()[0].shape == (1, *expected.shape[1:])


def test_a_float32_calibration_file_from_an_earlier_run_still_loads(run_copy):
    import hashlib

    copy, _ = run_copy
    folder = copy / "calibration"
    tensors = load_calibration(folder).tensors
    np.save(folder / "calib.npy", tensors)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["tensor_sha256"] = hashlib.sha256((folder / "calib.npy").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.testing.assert_array_equal(load_calibration(folder).tensors, tensors)


def test_clean_removes_only_what_can_be_rebuilt_and_the_stages_rebuild_it(run_copy):
    copy, outside = run_copy
    rebuildable = {"bench/reference_logits.npz", "calibration/calib.npy", "drift/embedder.onnx"}
    if (copy / "calibration" / "histograms.npz").is_file():  # when the INT8 ladder reached histogram ranges
        rebuildable.add("calibration/histograms.npz")
    before, around = file_hashes(copy), outside()
    dry = invoke(["clean", copy, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would remove {len(rebuildable)} files" in dry.output and file_hashes(copy) == before
    result = invoke(["clean", copy])
    assert result.exit_code == 0, result.output
    after = file_hashes(copy)
    removed = {Path(p).relative_to(copy).as_posix() for p in set(before) - set(after)}
    assert removed == rebuildable
    assert all(after[p] == before[p] for p in after)  # models, reports, configs and records untouched
    assert outside() == around
    # Compiling INT8 needs the pixels: a clear error that names the command that writes them again.
    compiled = invoke(["compile", copy, "--target", "cpu"])
    assert compiled.exit_code == 2 and "edgetl calibrate" in compiled.output and "calib.npy" in compiled.output
    assert invoke(["calibrate", copy]).exit_code == 0
    assert file_hashes(copy)[str(copy / "calibration" / "calib.npy")] == before[str(copy / "calibration" / "calib.npy")]
    bench = invoke(["bench", copy, "--target", "cpu", "--iterations", "2", "--warmup", "0"])
    assert bench.exit_code == 0, bench.output
    assert (copy / "bench" / "reference_logits.npz").is_file()
    assert invoke(["clean", copy, "--dry-run"]).output.count("would remove") == 3  # 2 files + the total line
    # The drift embedder comes back with the next bundle, the same model.
    assert invoke(["bundle", copy]).exit_code == 0
    embedder = str(copy / "drift" / "embedder.onnx")
    assert embedder in file_hashes(copy)
