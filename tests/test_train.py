import numpy as np
import pytest
import torch

from edgetl.augment import augment_batch
from edgetl.config import AugmentConfig
from edgetl.models import build_classifier
from edgetl.prefix import prefix_runner
from edgetl.preprocess import PreprocessSpec


@pytest.mark.parametrize("start", [5, 19])
def test_cache_backends_compute_the_same_frozen_features(start: int):
    torch.manual_seed(0)
    model = build_classifier("mobilenet_v2", 2, gray=True).eval()
    spec = PreprocessSpec.for_channels(1, input_size=64)
    x = np.random.default_rng(0).normal(size=(3, 1, 64, 64)).astype(np.float32)
    reference = prefix_runner(model, start, spec, "torch")(x)
    for backend in ("onnxruntime", "openvino"):
        np.testing.assert_allclose(prefix_runner(model, start, spec, backend)(x), reference, atol=1e-4)
    assert reference.ndim == (2 if start == 19 else 4)


def test_augmentation_keeps_shape_dtype_and_respects_switches():
    images = torch.randint(0, 255, (4, 1, 32, 32), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    out = augment_batch(images, AugmentConfig(), rng)
    assert out.shape == images.shape and out.dtype == torch.uint8
    off = AugmentConfig(
        hflip=False,
        vflip=False,
        rot90=False,
        degrees=0,
        translate=0,
        scale=0,
        brightness=0,
        contrast=0,
        gamma=0,
        blur=0,
        noise=0,
    )
    assert torch.equal(augment_batch(images, off, rng), images)


def test_int8_prefix_views_are_close_to_fp32_but_quantized():
    torch.manual_seed(0)
    model = build_classifier("mobilenet_v2", 2, gray=True).eval()
    spec = PreprocessSpec.for_channels(1, input_size=64)
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(8, 1, 64, 64)).astype(np.float32)
    x = rng.normal(size=(2, 1, 64, 64)).astype(np.float32)
    fp32 = prefix_runner(model, 4, spec, "onnxruntime")(x)
    int8 = prefix_runner(model, 4, spec, "onnxruntime", int8_calibration=calibration)(x)
    assert int8.shape == fp32.shape
    assert not np.array_equal(int8, fp32)
    assert np.corrcoef(int8.ravel(), fp32.ravel())[0, 1] > 0.95


def test_photometric_augmentation_changes_exposure_gamma_focus_and_noise():
    images = torch.full((8, 1, 24, 24), 120, dtype=torch.uint8)
    images[:, :, 8:16, 8:16] = 200
    none = {k: 0 for k in ("degrees", "translate", "scale", "brightness", "contrast", "gamma", "blur", "noise")}
    geometry_off = {"hflip": False, "vflip": False, "rot90": False}
    rng = np.random.default_rng(0)
    for key, value in (("gamma", 0.5), ("noise", 0.05), ("brightness", 0.3)):
        config = AugmentConfig(**geometry_off, **{**none, key: value})
        assert not torch.equal(augment_batch(images, config, rng), images), key
    blurred = augment_batch(images.repeat(4, 1, 1, 1), AugmentConfig(**geometry_off, **{**none, "blur": 2.0}), rng)
    assert any(not torch.equal(b, images[0]) for b in blurred)
    assert AugmentConfig().scaled(0.0).gamma == 0 and AugmentConfig().scaled(2.0).noise == 0.04
