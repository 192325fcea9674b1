"""Every strategy on every backbone trains and exports on a tiny set; gray: auto follows the images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder, tiny_config
from PIL import Image

from edgetl.data.dataset import prepare_dataset
from edgetl.models import ARCHS, load_checkpoint
from edgetl.train import resolve_gray, train_model


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("strategies")
    images = make_image_folder(base / "images", per_class=8, size=32)
    config = tiny_config(images, base / "runs")
    return images, base, prepare_dataset(config.data, base / "data")


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("strategy", ["linear", "partial", "full"])
def test_every_strategy_trains_every_backbone(tiny_dataset, arch: str, strategy: str):
    images, base, dataset = tiny_dataset
    config = tiny_config(
        images,
        base / "runs",
        model__arch=arch,
        model__pretrained=False,
        train__strategy=strategy,
        train__trainable_blocks=1,
        train__epochs=1,
        train__views=1,
    )
    out = base / f"{arch}-{strategy}"
    result = train_model(config, dataset, out, progress=False)
    expected = {"linear": ARCHS[arch].num_blocks, "partial": ARCHS[arch].num_blocks - 1, "full": 0}[strategy]
    assert result.meta["trained_from_block"] == expected
    model, meta = load_checkpoint(out / "model.pt")
    logits = model(torch.zeros(2, 1, 32, 32))
    assert logits.shape == (2, 2) and meta["strategy"] == strategy


def test_gray_auto_follows_the_training_images(tmp_path: Path):
    gray_root = make_image_folder(tmp_path / "gray", per_class=6, size=32)
    gray = prepare_dataset(tiny_config(gray_root, tmp_path / "r").data, tmp_path / "d1")
    assert resolve_gray("auto", gray)[0] is True
    colour_root = make_image_folder(tmp_path / "colour", per_class=6, size=32)
    rng = np.random.default_rng(0)
    for path in (colour_root / "good").glob("*.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    colour = prepare_dataset(tiny_config(colour_root, tmp_path / "r").data, tmp_path / "d2")
    gray_flag, reason = resolve_gray("auto", colour)
    assert gray_flag is False and "have colour" in reason
    replicated_root = make_image_folder(tmp_path / "replicated", per_class=6, size=32)
    for path in replicated_root.rglob("*.png"):
        Image.open(path).convert("RGB").save(path)  # grey pixels saved as RGB are still grey
    replicated = prepare_dataset(tiny_config(replicated_root, tmp_path / "r").data, tmp_path / "d3")
    gray_flag, reason = resolve_gray("auto", replicated)
    assert gray_flag and "greyscale" in reason
    assert resolve_gray(False, replicated) == (False, "model.gray set in the config")
