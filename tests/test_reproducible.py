"""Same seed and data on the CPU: byte-identical checkpoints; an interrupted training resumes to the same model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import make_image_folder, tiny_config

import edgetl.train as train_module
from edgetl.data.dataset import prepare_dataset
from edgetl.train import ResumeError, train_model

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("repro")
    images = make_image_folder(base / "images", per_class=12, size=40)
    config = tiny_config(images, base / "runs", train__epochs=3, train__patience=10)
    dataset = prepare_dataset(config.data, base / "data")
    result = train_model(config, dataset, base / "first", progress=False)
    return config, dataset, base, result


def test_same_seed_and_data_give_byte_identical_checkpoints(reference):
    config, dataset, base, first = reference
    second = train_model(config, dataset, base / "second", progress=False)
    assert (base / "first" / "model.pt").read_bytes() == (base / "second" / "model.pt").read_bytes()
    assert first.meta["val_metrics"] == second.meta["val_metrics"]
    assert not (base / "second" / "resume.pt").exists()


def test_meta_records_versions_host_dataset_hash_and_seeds(reference):
    _, dataset, base, _ = reference
    meta = json.loads((base / "first" / "meta.json").read_text())
    for name in ("torch", "torchvision", "onnxruntime", "openvino", "nncf", "numpy", "edgetl"):
        assert meta["versions"][name], name
    assert ("tensorrt" in meta["versions"]) == (importlib.util.find_spec("tensorrt") is not None)
    assert meta["host"]["cpu"] and "cpu_flags" in meta["host"] and meta["host"]["machine"]
    if (REPO / ".git").exists():
        assert len(meta["host"]["git_revision"]) == 40
    assert meta["dataset_hash"] == dataset.info["hash"] and len(meta["dataset_hash"]) == 64
    assert meta["seeds"] == {"data": 0, "train": 0}
    assert "train_s" in meta["timings"]


class _Interrupted(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_model(reference, monkeypatch: pytest.MonkeyPatch):
    config, dataset, base, first = reference
    out = base / "resumed"
    real_save = train_module._save_resume

    def save_then_stop(path: Path, state: dict) -> None:
        real_save(path, state)
        if state["epoch"] == 2:
            raise _Interrupted

    monkeypatch.setattr(train_module, "_save_resume", save_then_stop)
    with pytest.raises(_Interrupted):
        train_model(config, dataset, out, progress=False)
    monkeypatch.setattr(train_module, "_save_resume", real_save)
    assert (out / "resume.pt").is_file() and not (out / "model.pt").exists()
    changed = config.model_copy(update={"train": config.train.model_copy(update={"lr": 0.01})})
    with pytest.raises(ResumeError, match="another config"):
        train_model(changed, dataset, out, progress=False, resume=True)
    resumed = train_model(config, dataset, out, progress=False, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    accuracy, reference_accuracy = (r.meta["val_metrics"]["val_accuracy"] for r in (resumed, first))
    assert abs(accuracy - reference_accuracy) <= 0.005
    assert (out / "model.pt").read_bytes() == (base / "first" / "model.pt").read_bytes()
    assert not (out / "resume.pt").exists()
    again = train_model(config, dataset, out, progress=False, resume=True)  # finished: kept as it is
    assert again.meta["fingerprint"] == resumed.meta["fingerprint"] and again.history == []


def test_cli_resume_with_a_foreign_checkpoint_is_a_clear_error(tmp_path: Path):
    import torch
    from typer.testing import CliRunner

    from edgetl.cli import app
    from edgetl.pipeline import init_run, stage_data
    from edgetl.train import RESUME_FORMAT

    images = make_image_folder(tmp_path / "images", per_class=6, size=32)
    config = tiny_config(images, tmp_path / "runs")
    run = init_run(config)
    stage_data(config, run)
    run.train.mkdir()
    torch.save({"format": RESUME_FORMAT, "fingerprint": "another run"}, run.train / "resume.pt")
    result = CliRunner().invoke(app, ["train", str(run.root), "--resume"])
    assert result.exit_code == 2
    assert "resume.pt was written for another config or data set" in result.output
    assert "Traceback" not in result.output
