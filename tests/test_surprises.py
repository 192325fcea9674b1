"""Silent surprises become errors or warnings: --data with --config, compare across data, image types, paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from hostile import assert_clear_error, invoke
from PIL import Image

from edgetl.config import DataConfig
from edgetl.data.check import check_dataset


def test_data_with_config_replaces_the_configs_data_and_says_so(image_folder: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other.csv"
    other.write_text("path,label\n")
    config = tmp_path / "my.yaml"
    config.write_text(yaml.safe_dump({"data": {"manifest": str(other)}, "name": "x"}))
    result = invoke(["init", "--config", config, "--data", image_folder])
    assert result.exit_code == 0, result.output
    assert f"--data {image_folder} replaces data.manifest: {other} of {config}" in result.output
    written = yaml.safe_load((tmp_path / "runs" / "x" / "config.yaml").read_text())
    assert written["data"]["root"] == str(image_folder.resolve()) and written["data"]["manifest"] is None


def _report(folder: Path, *, classes: list[str], data_hash: str) -> Path:
    row = {"target": "cpu", "precision": "fp32", "latency_ms": {"p50": 1.0}}
    row["metrics"] = {"accuracy": 0.9, "balanced_accuracy": 0.9}
    folder.mkdir()
    report = {"artifacts": [row], "model": {"classes": classes}, "dataset": {"hash": data_hash}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_compare_refuses_runs_on_other_data_or_classes_unless_asked(tmp_path: Path):
    a = _report(tmp_path / "a", classes=["crack", "good"], data_hash="1" * 64)
    same = _report(tmp_path / "same", classes=["crack", "good"], data_hash="1" * 64)
    data = _report(tmp_path / "data", classes=["crack", "good"], data_hash="2" * 64)
    classes = _report(tmp_path / "classes", classes=["dent", "good"], data_hash="1" * 64)
    assert invoke(["compare", a, same]).exit_code == 0
    assert_clear_error(invoke(["compare", a, data]), "not comparable", "the data differ", "--different-data")
    assert_clear_error(invoke(["compare", a, classes]), "the classes differ", "['dent', 'good']")
    anyway = invoke(["compare", a, data, "--different-data"])
    assert anyway.exit_code == 0 and "NOT the models' difference" in anyway.output


def _folder_with_formats(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("good", "crack"):
        (root / label).mkdir(parents=True)
        for i, ext in enumerate(("png", "webp", "gif", "jpg", "png")):
            pixels = rng.integers(0, 255, (32, 32), dtype=np.uint8)
            Image.fromarray(pixels).save(
                root / label / f"{label}_{i}.{ext}", **({"lossless": True} if ext == "webp" else {})
            )
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / label / f"{label}_x.ppm")
        (root / label / "notes.txt").write_text("not an image")
    return root


def test_an_image_folder_and_a_manifest_read_the_same_image_types(tmp_path: Path):
    root = _folder_with_formats(tmp_path / "images")
    folder = check_dataset(DataConfig(root=root, min_images_per_class=4))  # type: ignore[call-arg]
    assert sorted({s.path.suffix for s in folder.samples}) == [".gif", ".jpg", ".png", ".webp"]
    assert not folder.errors
    skipped = [f for f in folder.warnings if f.path.endswith(".ppm")]
    assert len(skipped) == 2 and "not read: .ppm: not an image type edgetl reads" in skipped[0].reason
    rows = [
        f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in sorted(root.rglob("*.*")) if p.suffix != ".txt"
    ]
    (root / "manifest.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    listed = check_dataset(DataConfig(manifest=root / "manifest.csv", min_images_per_class=4))  # type: ignore[call-arg]
    usable = {s.path for s in listed.samples} - {Path(f.path) for f in listed.errors}
    assert usable == {s.path for s in folder.samples}
    assert sorted(Path(f.path).suffix for f in listed.errors) == [".ppm", ".ppm"]


def test_a_file_with_an_image_name_but_another_format_is_not_decoded(tmp_path: Path):
    from edgetl.preprocess import ImageDecodeError, decode_image

    fake = tmp_path / "scan.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(fake, format="PPM")
    try:
        decode_image(fake)
    except ImageDecodeError as exc:
        assert "PNG, JPEG, BMP, TIFF, WebP and GIF" in str(exc)
    else:
        raise AssertionError("a PPM named .png was decoded")


def test_an_existing_file_given_as_data_is_called_a_file(tmp_path: Path):
    notes = tmp_path / "images.txt"
    notes.write_text("x")
    for args in (["data", "check", notes, "--out", tmp_path / "c"], ["build", "--data", notes, "--runs-dir", tmp_path]):
        assert_clear_error(invoke(args), str(notes), "is a file, not a folder", ".csv")


def test_a_manifest_may_name_files_outside_its_folder(image_folder: Path, tmp_path: Path):
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    files = sorted(image_folder.rglob("*.png"))
    rows = [f"{p},{p.parent.name}" for p in files[:10]]  # absolute paths outside the manifest's folder
    rows += [f"{os.path.relpath(p, elsewhere)},{p.parent.name}" for p in files[10:]]  # and relative ones with ..
    (elsewhere / "manifest.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    result = invoke(["data", "check", elsewhere / "manifest.csv", "--out", tmp_path / "check"])
    assert result.exit_code == 0, result.output
    assert f"{len(files)} images checked: 0 errors" in result.output


def test_third_party_noise_is_quiet_unless_verbose(run_copy, tmp_path: Path):
    copy, _ = run_copy
    profile = tmp_path / "ov-int8.yaml"
    profile.write_text("backend: openvino\nprecisions: [int8]\nquantization: {fp32_blocks: 2}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "edgetl.cli", "compile", str(copy), "--target", str(profile)]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert quiet.returncode == 0, quiet.stderr
    assert "compiled ov-int8 int8" in quiet.stdout + quiet.stderr
    assert "INFO:nncf" not in quiet.stdout + quiet.stderr and "CUDA_HOME" not in quiet.stdout + quiet.stderr


def test_verbose_leaves_third_party_logging_alone():
    import logging

    from edgetl.quiet import after_nncf_import, quiet_third_party

    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    try:
        quiet_third_party(verbose=True)
        after_nncf_import()
        assert logger.level == level
        quiet_third_party(verbose=False)
        assert logger.level == logging.ERROR
    finally:
        quiet_third_party(verbose=True)
        logger.setLevel(level)
