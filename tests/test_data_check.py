"""`edgetl data check` and the checks `edgetl build` runs first: every bad input named with its reason."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder, tree_hashes
from PIL import Image
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.config import DataConfig
from edgetl.data.check import check_dataset
from edgetl.data.dataset import DataError, load_split, prepare_dataset
from edgetl.preprocess import PreprocessSpec, decode_image, preprocess_file, resized_uint8

runner = CliRunner()


def _reasons(report, name: str) -> list[str]:
    return [f"{f.severity}: {f.reason}" for f in report.findings if Path(f.path).name == name]


def _tiff(path: Path, *, width: int, height: int, samples: int) -> None:
    """A minimal uncompressed 8-bit TIFF with ``samples`` channels (Pillow cannot write odd counts)."""
    pixels = bytes(width * height * samples)
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, samples),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + struct.pack(
            "<I" if kind == 4 else "<HH", value, *(() if kind == 4 else (0,))
        )
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(pixels)) + pixels + ifd)


def _png_rgb16(path: Path, values: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width, _ = values.shape
    raw = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_unusable_files_are_each_named_with_a_reason(tmp_path: Path):
    root = make_image_folder(tmp_path / "images", per_class=6, size=32)
    good = root / "good"
    (good / "zero.png").write_bytes(b"")
    (good / "text.jpg").write_text("this is not an image")
    (good / "cut.png").write_bytes((good / "good_000.png").read_bytes()[:60])
    _tiff(good / "five.tif", width=20, height=20, samples=5)
    Image.fromarray(np.zeros((20, 20), np.float32)).save(good / "float.tif")
    Image.fromarray(np.full((20, 20), -3, np.int32)).save(good / "negative.tif")
    Image.fromarray(np.full((20, 20), 70000, np.int32)).save(good / "wide.tif")
    Image.new("L", (40, 8)).save(good / "thin.png")
    before = tree_hashes(root)
    report = check_dataset(DataConfig(root=root))  # type: ignore[call-arg]
    assert "empty file (0 bytes)" in _reasons(report, "zero.png")[0]
    assert "cannot decode" in _reasons(report, "text.jpg")[0]
    assert "cannot decode" in _reasons(report, "cut.png")[0]
    assert _reasons(report, "five.tif")[0].startswith("error:")
    assert "floating-point" in _reasons(report, "float.tif")[0]
    assert "outside 0..65535" in _reasons(report, "negative.tif")[0]
    assert "outside 0..65535" in _reasons(report, "wide.tif")[0]
    assert "40x8 pixels, smaller than data.min_image_size=16" in _reasons(report, "thin.png")[0]
    assert len(report.errors) == 8 and not _reasons(report, "good_001.png")
    report.write(tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "check.csv").read_text(encoding="utf-8"))))
    assert {Path(r["path"]).name for r in rows} >= {"zero.png", "text.jpg", "thin.png"}
    assert json.loads((tmp_path / "out" / "check.json").read_text())["errors"] == 8
    with pytest.raises(DataError, match=r"8 of 20 images cannot be used") as err:
        prepare_dataset(DataConfig(root=root), tmp_path / "run")  # type: ignore[call-arg]
    assert "zero.png" in str(err.value) and "check.csv" in str(err.value)
    assert (tmp_path / "run" / "check.csv").is_file() and not (tmp_path / "run" / "split.csv").exists()
    assert tree_hashes(root) == before


def test_modes_are_converted_by_the_documented_rule_never_saturated(tmp_path: Path):
    cmyk = tmp_path / "cmyk.tif"
    Image.new("CMYK", (20, 20), (0, 0, 0, 0)).save(cmyk)
    assert decode_image(cmyk).mode == "RGB" and np.asarray(decode_image(cmyk)).min() == 255
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 1
    palette.save(tmp_path / "pa.png")
    assert np.asarray(decode_image(tmp_path / "pa.png"))[0, 0].tolist() == [10, 20, 30]  # alpha dropped
    _png_rgb16(tmp_path / "rgb16.png", np.array([[[0, 256, 65535], [32896, 65280, 511]]], np.uint16))
    assert np.asarray(decode_image(tmp_path / "rgb16.png")).tolist() == [[[0, 1, 255], [128, 255, 1]]]
    deep = np.array([[0, 257, 65535, 40000]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert np.asarray(decode_image(tmp_path / "deep.png")).tolist() == [[0, 1, 255, 156]]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_refused_with_the_limit_kept_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    Image.new("L", (40, 40)).save(tmp_path / "warn.png")  # 1600 px: between the limit and twice it
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")  # 10000 px: over twice the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for name in ("warn.png", "bomb.png"):
        with pytest.raises(ValueError, match="decompression bomb refused"):
            decode_image(tmp_path / name)
    source = "\n".join(p.read_text() for p in Path(__file__).parents[1].joinpath("edgetl").rglob("*.py"))
    assert "MAX_IMAGE_PIXELS = None" not in source and "MAX_IMAGE_PIXELS=None" not in source


def test_class_problems_empty_small_and_single(tmp_path: Path):
    root = make_image_folder(tmp_path / "images", per_class=6, size=32)
    (root / "scratch").mkdir()
    (root / "dent").mkdir()
    Image.new("L", (32, 32), 7).save(root / "dent" / "d.png")
    report = check_dataset(DataConfig(root=root, min_images_per_class=4))  # type: ignore[call-arg]
    assert "class folder has no images" in _reasons(report, "scratch")[0]
    assert "class 'dent' has 1 images, below data.min_images_per_class=4" in _reasons(report, "dent")[0]
    shutil.rmtree(root / "crack")
    shutil.rmtree(root / "dent")
    (root / "scratch").rmdir()
    with pytest.raises(DataError, match="single class"):
        prepare_dataset(DataConfig(root=root), tmp_path / "run")  # type: ignore[call-arg]


def test_exact_duplicates_are_errors_and_near_duplicates_warnings(tmp_path: Path):
    root = make_image_folder(tmp_path / "images", per_class=6, size=32)
    shutil.copy(root / "good" / "good_000.png", root / "crack" / "copy_other_label.png")
    shutil.copy(root / "good" / "good_001.png", root / "good" / "copy_same_label.png")
    near = np.asarray(Image.open(root / "good" / "good_002.png")).astype(np.int16) + 2
    Image.fromarray(near.clip(0, 255).astype(np.uint8)).save(root / "good" / "brighter.png")
    report = check_dataset(DataConfig(root=root))  # type: ignore[call-arg]
    pair = _reasons(report, "copy_other_label.png") + _reasons(report, "good_000.png")
    assert len(pair) == 1 and "labelled crack and good" in pair[0] and pair[0].startswith("error")
    pair = _reasons(report, "copy_same_label.png") + _reasons(report, "good_001.png")
    assert len(pair) == 1 and "would leak into the test score" in pair[0] and pair[0].startswith("error")
    near = [f"{f.path} {f.reason}" for f in report.findings if "near-identical" in f.reason]
    assert any("good_002.png" in text and "brighter.png" in text for text in near)
    assert all(f.severity == "warning" for f in report.findings if "near-identical" in f.reason)
    # Once split, near-identical pairs are summed up in dataset.json.
    (root / "crack" / "copy_other_label.png").unlink()
    (root / "good" / "copy_same_label.png").unlink()
    dataset = prepare_dataset(DataConfig(root=root, test_fraction=0.25, val_fraction=0.25), tmp_path / "run")
    assert any("near-identical image pairs" in w for w in dataset.warnings)
    shutil.copy(root / "good" / "good_000.png", root / "crack" / "copy_other_label.png")
    shutil.copy(root / "good" / "good_001.png", root / "good" / "copy_same_label.png")
    # A manifest that puts both copies in the same split: a warning, not an error.
    manifest = tmp_path / "images" / "m.csv"
    rows = ["path,label,split"]
    for i, p in enumerate(sorted((root / "good").glob("good_*.png")) + sorted((root / "crack").glob("crack_*.png"))):
        rows.append(f"{p.relative_to(root).as_posix()},{p.parent.name},{('train', 'val', 'test')[i % 3]}")
    rows.append("good/copy_same_label.png,good,val")  # good_001 is in split 'val' (i = 1)
    manifest.write_text("\n".join(rows) + "\n")
    report = check_dataset(DataConfig(manifest=manifest))  # type: ignore[call-arg]
    assert _reasons(report, "copy_same_label.png") == [
        f"warning: identical to {root / 'good' / 'good_001.png'} (same split val); it counts twice"
    ]


def test_symlinks_escaping_an_image_folder_are_refused_paths_a_manifest_names_are_not(tmp_path: Path):
    root = make_image_folder(tmp_path / "data" / "images", per_class=6, size=32)
    outside = tmp_path / "secret.png"
    Image.new("L", (32, 32), 99).save(outside)
    (root / "good" / "link.png").symlink_to(outside)
    report = check_dataset(DataConfig(root=root))  # type: ignore[call-arg]
    assert "outside the data root" in _reasons(report, "link.png")[0]
    assert "symbolic link" in _reasons(report, "link.png")[0]
    (root / "good" / "link.png").unlink()
    manifest = root / "m.csv"
    files = sorted(root.rglob("*.png"))
    lines = ["path,label"] + [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in files]
    manifest.write_text("\n".join([*lines, "../../secret.png,good", f"{files[0]},good"]) + "\n")
    report = check_dataset(DataConfig(manifest=manifest))  # type: ignore[call-arg]
    # A manifest names its files explicitly: a path leaving its folder (relative or absolute) is the user's choice.
    assert not [f for f in report.errors if "outside" in f.reason]
    assert "secret.png" in {s.path.name for s in report.samples}


def test_non_ascii_file_and_class_names_work(tmp_path: Path):
    root = make_image_folder(tmp_path / "imágenes", per_class=6, size=32)
    (root / "crack").rename(root / "fissuré")
    for i, p in enumerate(sorted((root / "good").glob("*.png"))):
        p.rename(p.with_name(f"défaut_画像_ß_{i}.png"))
    dataset = prepare_dataset(DataConfig(root=root, test_fraction=0.25, val_fraction=0.25), tmp_path / "run")
    assert dataset.classes == ["fissuré", "good"]
    again = load_split(tmp_path / "run")
    assert any("画像" in s.path.name for s in again.samples)
    assert all(s.path.is_file() for s in again.samples)


def test_exif_orientation_one_policy_for_training_and_deploy(tmp_path: Path):
    from edgetl.prefix import load_uint8

    array = np.zeros((40, 20), np.uint8)
    array[:10, :] = 255  # bright band on top of a portrait image
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=100)
    spec = PreprocessSpec.for_channels(1, input_size=16)
    assert spec.exif_orientation == "apply"
    from edgetl.data.dataset import Sample

    trained = load_uint8([Sample(path, "x")], spec)[0]
    deployed = resized_uint8(decode_image(path), spec)
    np.testing.assert_array_equal(trained, deployed)
    assert trained[:, -4:].mean() > 200 and trained[:, :4].mean() < 50  # the band is on the right once applied
    normalised = preprocess_file(path, spec)[0, 0]
    np.testing.assert_allclose(normalised * spec.std[0] + spec.mean[0], deployed[:, :, 0] / 255, atol=1e-6)


def test_cli_data_check_reports_and_exits_2_on_errors(tmp_path: Path):
    root = make_image_folder(tmp_path / "images", per_class=6, size=32)
    before = tree_hashes(root)
    ok = runner.invoke(app, ["data", "check", str(root), "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    assert "12 images checked: 0 errors" in ok.output
    (root / "good" / "zero.png").write_bytes(b"")
    before = tree_hashes(root)
    bad = runner.invoke(app, ["data", "check", str(root), "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "zero.png: empty file (0 bytes)" in bad.output
    assert "Traceback" not in bad.output
    assert (tmp_path / "bad" / "check.csv").is_file()
    assert tree_hashes(root) == before


def test_build_runs_the_same_check_first(tmp_path: Path):
    root = make_image_folder(tmp_path / "images", per_class=6, size=32)
    (root / "crack" / "fake.png").write_text("nope")
    result = runner.invoke(app, ["build", "--data", str(root), "--runs-dir", str(tmp_path / "runs"), "--name", "x"])
    assert result.exit_code == 2
    assert "fake.png" in result.output and "cannot decode" in result.output
    assert (tmp_path / "runs" / "x" / "data" / "check.csv").is_file()
    assert not (tmp_path / "runs" / "x" / "train").exists()
