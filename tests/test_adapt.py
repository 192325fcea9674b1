"""edgetl adapt (AdaBN): only batch-norm statistics change, agreement on a shifted copy improves, the source run
is untouched, and the adapted run is built, benched and reported like any other."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import assert_clear_error, file_hashes, invoke
from PIL import Image

from edgetl.bench.accuracy import agreement
from edgetl.preprocess import PreprocessSpec
from edgetl.transfer.adapt import adabn, batchnorm_layers, logits_of

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _textures(n: int, side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.normal(140, 25, (n, side, side, 1))
    for i in range(n):
        r, c = rng.integers(5, side - 9, size=2)
        images[i, r : r + 4, :, 0] = rng.uniform(0, 255)
        images[i, :, c : c + 3, 0] = rng.uniform(0, 255)
    return images.clip(0, 255).astype(np.uint8)


def _exposed(images: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return (images.astype(np.float64) * gain + offset).clip(0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def pretrained():
    from edgetl.models import build_classifier, resolve_weights

    torch.manual_seed(0)
    weights, _ = resolve_weights("mobilenet_v2")
    return build_classifier("mobilenet_v2", 10, gray=True, weights_file=weights).eval()


def test_adabn_changes_only_batchnorm_statistics(pretrained):
    model = copy.deepcopy(pretrained)
    before = copy.deepcopy(model.state_dict())
    momenta = [layer.momentum for layer in batchnorm_layers(model)]
    done = adabn(model, _textures(40, 48, 0), PreprocessSpec.for_channels(1, input_size=48), batch_size=16)
    after = model.state_dict()
    assert done == {"layers": 52, "from_block": 0, "images": 40, "batches": 3, "batch_size": 16}
    assert before.keys() == after.keys()
    stats = [k for k in after if k.endswith(BN_STATS)]
    assert len(stats) == 3 * done["layers"]
    for key, value in after.items():
        if key.endswith(BN_STATS):
            assert not torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, before[key]), key  # bit-identical: weights, biases, head
    assert all(t.num_batches_tracked.item() == 3 for t in batchnorm_layers(model))
    assert [layer.momentum for layer in batchnorm_layers(model)] == momenta and not model.training


def test_adabn_of_the_trained_blocks_keeps_the_frozen_statistics(pretrained):
    model = copy.deepcopy(pretrained)
    before = copy.deepcopy(model.state_dict())
    done = adabn(model, _textures(20, 48, 0), PreprocessSpec.for_channels(1, input_size=48), from_block=14)
    after = model.state_dict()
    assert done["layers"] == sum(len(batchnorm_layers(b)) for b in model.blocks[14:]) and done["from_block"] == 14
    for key, value in after.items():
        block = int(key.split(".")[1]) if key.startswith("blocks.") else None
        trained_stat = key.endswith(BN_STATS) and block is not None and block >= 14
        assert torch.equal(value, before[key]) != trained_stat, key


def test_adabn_restores_agreement_on_a_shifted_copy(pretrained):
    """A model whose statistics fit station A, shown A at another exposure (gain 0.5, +60): AdaBN on the shifted
    images brings its answers back to what it says on A."""
    spec = PreprocessSpec.for_channels(1, input_size=64)
    station_a = _textures(96, 64, 1)
    model_a = copy.deepcopy(pretrained)
    adabn(model_a, station_a, spec)
    reference = logits_of(model_a, station_a, spec)
    shifted = _exposed(station_a, 0.5, 60)
    before = agreement(logits_of(model_a, shifted, spec), reference)
    model_b = copy.deepcopy(model_a)
    adabn(model_b, shifted, spec)
    after = agreement(logits_of(model_b, shifted, spec), reference)
    assert after["top1_agreement"] > before["top1_agreement"] + 0.3, (before, after)
    assert after["mean_abs_logit_diff"] < 0.5 * before["mean_abs_logit_diff"]


def _station(folder: Path, n: int, *, seed: int, labelled: bool) -> Path:
    """Images like the tiny run's ('good' smooth, 'crack' a dark line) under another exposure (gain 0.5, +70)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = rng.normal(150, 10, (40, 40))
        label = "crack" if i % 2 else "good"
        if label == "crack":
            row = rng.integers(10, 30)
            img[row : row + 3, :] = 20
        path = folder / f"{label}_{i:03d}.png"
        Image.fromarray((img * 0.5 + 70).clip(0, 255).astype(np.uint8), mode="L").save(path)
        rows.append((path.name, label))
    if not labelled:
        return folder
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "slice"])
        writer.writerows([(p, label, "line2" if i % 4 < 2 else "line3") for i, (p, label) in enumerate(rows)])
    return folder / "labels.csv"


def test_adapt_run_end_to_end(run_copy, tmp_path: Path):
    copy_dir, _ = run_copy
    source_before = file_hashes(copy_dir)
    unlabelled = _station(tmp_path / "line2", 32, seed=8, labelled=False)
    held_out = _station(tmp_path / "line2-eval", 24, seed=9, labelled=True)
    result = invoke(["adapt", copy_dir, "--images", unlabelled, "--eval", held_out])
    assert result.exit_code == 0, result.output
    assert file_hashes(copy_dir) == source_before  # the source run is never written
    adapted = copy_dir.parent / "tiny-adapted"
    report = json.loads((adapted / "adapt" / "report.json").read_text())
    assert report["adaptation"]["images"] == 32 and report["adaptation"]["layers"] == 52
    assert report["eval_images_also_adapted_on"] == 0
    assert set(report["accuracy"]) == {"all", "slice line2", "slice line3"}
    change = report["accuracy"]["all"]["change"]
    assert change["balanced_accuracy_interval"] is not None
    gap = report["gap"]
    assert gap["before"]["images"] == gap["after"]["images"] == [12, 24]  # the train split against --eval
    assert gap["before"]["verdict"] and gap["after"]["verdict"]
    # The adapted checkpoint differs from the source in batch-norm statistics only.
    src_state = torch.load(copy_dir / "train" / "model.pt", weights_only=True)["state_dict"]
    new_state = torch.load(adapted / "train" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, new_state[k]) for k, v in src_state.items() if not k.endswith(BN_STATS))
    assert any(not torch.equal(v, new_state[k]) for k, v in src_state.items() if k.endswith("running_mean"))
    meta = json.loads((adapted / "train" / "meta.json").read_text())
    assert meta["adaptation"]["source_run"] == str(copy_dir)
    calib = json.loads((adapted / "calibration" / "manifest.json").read_text())
    assert calib["split"].startswith("adaptation images")
    full = json.loads((adapted / "report.json").read_text())
    assert full["run"] == "tiny-adapted" and full["artifacts"]
    assert full["transfer"]["adaptation"]["evaluation"].startswith(str(held_out))
    assert "AdaBN: the new station before and after" in (adapted / "report.md").read_text()
    # The adapted run's gap embeds its reference through the model it was adapted from.
    result = invoke(["gap", adapted, held_out, "--permutations", "200"])
    assert result.exit_code == 0, result.output
    assert json.loads((adapted / "gap" / "labels.json").read_text())["adapted"] is True
    again = invoke(["adapt", copy_dir, "--images", unlabelled, "--no-build"])
    assert_clear_error(again, "already holds a run", "--force")


def test_adapt_errors_are_clear(run_copy, tmp_path: Path):
    copy_dir, _ = run_copy
    few = _station(tmp_path / "few", 3, seed=1, labelled=False)
    assert_clear_error(invoke(["adapt", copy_dir, "--images", few, "--no-build"]), "at least 8")
    images = _station(tmp_path / "ok", 12, seed=2, labelled=False)
    assert_clear_error(
        invoke(["adapt", copy_dir, "--images", images, "--name", copy_dir.name, "--no-build"]), "source run itself"
    )
    assert_clear_error(invoke(["adapt", copy_dir, "--images", images, "--eval", images, "--no-build"]), "no labels")
    assert_clear_error(invoke(["adapt", copy_dir, "--images", images, "--layers", "some", "--no-build"]), "--layers")
