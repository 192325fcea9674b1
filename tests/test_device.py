"""train.device: cpu by default, a clear error for a missing GPU, and CUDA training where a GPU exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, tiny_config

from edgetl.config import ConfigError
from edgetl.data.dataset import prepare_dataset
from edgetl.models import load_checkpoint
from edgetl.train import resolve_device, train_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of torch")


def test_cpu_is_the_default_and_auto_falls_back_to_cpu(tmp_path: Path):
    config = tiny_config(tmp_path / "images", tmp_path / "runs")
    assert config.train.device == "cpu"
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"sees no CUDA GPU; set train.device to cpu"):
        resolve_device("cuda")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("device")
    images = make_image_folder(base / "images", per_class=12, size=40)
    config = tiny_config(images, base / "runs", train__epochs=3, train__patience=10)
    return config, prepare_dataset(config.data, base / "data"), base


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("strategy", ["partial", "full"])
def test_cuda_training_is_repeatable_and_writes_a_cpu_checkpoint(tiny_data, strategy: str):
    config, dataset, base = tiny_data
    cfg = config.model_copy(deep=True)
    cfg.train.strategy = strategy
    cfg.train.device = "cuda"
    first = train_model(cfg, dataset, base / f"{strategy}-1", progress=False)
    second = train_model(cfg, dataset, base / f"{strategy}-2", progress=False)
    assert first.meta["device"].startswith("cuda (")
    assert [r["val_loss"] for r in first.history] == [r["val_loss"] for r in second.history]
    one, _ = load_checkpoint(first.checkpoint)
    two, _ = load_checkpoint(second.checkpoint)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert a.device.type == "cpu", name
        torch.testing.assert_close(a, b)
    written = json.loads((base / f"{strategy}-1" / "meta.json").read_text())
    assert written["config"]["train"]["device"] == "cuda"
