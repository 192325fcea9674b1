from pathlib import Path

import pytest
import torch

from edgetl.models import (
    WeightsError,
    build_classifier,
    fold_to_gray,
    load_checkpoint,
    resolve_weights,
    save_checkpoint,
)
from edgetl.preprocess import GRAY_MEAN, GRAY_STD


@pytest.fixture(scope="module")
def mnv2_weights() -> Path:
    path, digest = resolve_weights("mobilenet_v2")
    assert digest.startswith("b0353104")
    return path


def test_packaged_mobilenet_v2_weights_are_found_offline_and_load_fully(mnv2_weights: Path):
    model = build_classifier("mobilenet_v2", 2, weights_file=mnv2_weights)
    assert len(model.blocks) == 19
    assert model.head.out_features == 2


def test_folded_gray_model_equals_gray_replicated_to_rgb(mnv2_weights: Path):
    rgb = build_classifier("mobilenet_v2", 3, weights_file=mnv2_weights).eval()
    gray = build_classifier("mobilenet_v2", 3, weights_file=mnv2_weights).eval()
    gray.head.load_state_dict(rgb.head.state_dict())
    fold_to_gray(gray)
    pixels = torch.rand(2, 1, 64, 64)
    normalised = (pixels - GRAY_MEAN[0]) / GRAY_STD[0]
    with torch.no_grad():
        expected = rgb(normalised.repeat(1, 3, 1, 1))
        got = gray(normalised)
    assert gray.blocks[0][0].in_channels == 1
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_missing_weights_say_the_three_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as err:
        resolve_weights("resnet18")
    text = str(err.value)
    assert "model.weights" in text and "checkpoints" in text and "allow_download" in text
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights("resnet18", path=tmp_path / "none.pth")


def test_wrong_weight_file_is_refused(tmp_path: Path):
    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save({"x": torch.zeros(1)}, fake)
    with pytest.raises(WeightsError, match="not torchvision's"):
        resolve_weights("mobilenet_v2", path=fake)
    with pytest.raises(WeightsError, match="weights_sha256"):
        resolve_weights("mobilenet_v2", path=fake, sha256="0" * 64)


def test_hub_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnv2_weights: Path):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "mobilenet_v2-b0353104.pth").write_bytes(mnv2_weights.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path, _ = resolve_weights("mobilenet_v2")
    assert path.parent == cache


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18", "efficientnet_b0", "mobilenet_v3_large"])
def test_every_registered_arch_builds_and_folds(arch: str):
    model = build_classifier(arch, 4, gray=True).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 4)


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path):
    model = build_classifier("mobilenet_v2", 2, gray=True).eval()
    meta = {"arch": "mobilenet_v2", "classes": ["a", "b"], "dropout": 0.2, "preprocess": {"channels": 1}}
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "m.pt")
    assert loaded_meta["classes"] == ["a", "b"]
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob(".*tmp"))


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "edgetl-checkpoint-v1", "payload": Evil()}, path)
    with pytest.raises(ValueError, match="not a loadable edgetl checkpoint"):
        load_checkpoint(path)
