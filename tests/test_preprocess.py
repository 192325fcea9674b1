from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgetl.preprocess import (
    ImageDecodeError,
    PreprocessSpec,
    decode_image,
    preprocess_file,
    torch_normalize,
    torchvision_transform,
)


@pytest.mark.parametrize("channels", [1, 3])
def test_numpy_runtime_matches_torchvision_transform(tmp_path: Path, channels: int):
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 255, (61, 47, 3), dtype=np.uint8)).save(path)
    spec = PreprocessSpec.for_channels(channels, input_size=40)  # type: ignore[arg-type]
    ours = preprocess_file(path, spec)
    theirs = torchvision_transform(spec)(decode_image(path)).unsqueeze(0).numpy()
    assert ours.shape == (1, channels, 40, 40)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_torch_normalize_matches_numpy():
    spec = PreprocessSpec.for_channels(3, input_size=8)
    x = np.random.default_rng(1).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    from edgetl.preprocess import normalize

    ref = normalize(x, spec)
    got = torch_normalize(torch.from_numpy(x).permute(0, 3, 1, 2), spec).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_sixteen_bit_is_scaled_linearly_not_clipped(tmp_path: Path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    image = decode_image(path)
    assert image.mode == "L"
    assert np.asarray(image).tolist() == [[0, 1, 128, 255]]


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK", "LA", "1"])
def test_other_modes_become_8_bit(tmp_path: Path, mode: str):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    Image.new(mode, (9, 7)).save(path)
    assert decode_image(path).mode in {"L", "RGB"}


def test_grey_is_replicated_for_three_channel_models(tmp_path: Path):
    path = tmp_path / "g.png"
    Image.fromarray(np.full((10, 10), 100, np.uint8)).save(path)
    x = preprocess_file(path, PreprocessSpec.for_channels(3, input_size=10))
    raw = x * np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1) + np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(raw, 100 / 255, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path: Path):
    array = np.zeros((20, 10), np.uint8)
    array[:5, :] = 255  # bright band on top, portrait
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(array).save(path, exif=exif, quality=100)
    assert decode_image(path).size == (20, 10)


def test_corrupt_and_empty_files_raise_with_reason(tmp_path: Path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    good = tmp_path / "good.png"
    Image.new("L", (64, 64)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:40])
    for path in (empty, text, truncated):
        with pytest.raises(ImageDecodeError):
            decode_image(path)


def test_letterbox_keeps_the_aspect_ratio_and_centres_on_black(tmp_path: Path):
    from edgetl.preprocess import letterbox, resized_uint8

    wide = Image.fromarray(np.full((20, 80), 200, np.uint8), mode="L")
    boxed = np.asarray(letterbox(wide, 40))
    assert boxed.shape == (40, 40)
    # 80x20 -> 40x10, centred: rows 15..24 hold the image, the rest is black padding.
    assert (boxed[15:25] == 200).all() and (boxed[:15] == 0).all() and (boxed[25:] == 0).all()
    spec = PreprocessSpec.for_channels(1, input_size=40, resize="letterbox")
    np.testing.assert_array_equal(resized_uint8(wide, spec)[:, :, 0], boxed)
    stretched = resized_uint8(wide, PreprocessSpec.for_channels(1, input_size=40))
    assert (stretched == 200).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_letterbox_numpy_runtime_matches_torchvision_transform(tmp_path: Path, channels: int):
    rng = np.random.default_rng(3)
    path = tmp_path / "tall.png"
    Image.fromarray(rng.integers(0, 255, (70, 33, 3), dtype=np.uint8)).save(path)
    spec = PreprocessSpec.for_channels(channels, input_size=32, resize="letterbox")  # type: ignore[arg-type]
    ours = preprocess_file(path, spec)
    theirs = torchvision_transform(spec)(decode_image(path)).unsqueeze(0).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
