"""edgetl gap: a planted shift (a new lamp on one half of a set) is found, a random split of the same set is not."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hostile import assert_clear_error, invoke
from PIL import Image

from edgetl.runtime.drift import LARGE_SHIFT, NO_SHIFT, SHIFT
from edgetl.transfer.twosample import compare, frechet_dimension


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_figures_on_embeddings_null_and_shift():
    rng = np.random.default_rng(1)
    x = _unit(1.0 + 0.5 * rng.normal(size=(120, 48)))
    y = _unit(1.0 + 0.5 * rng.normal(size=(120, 48)))
    shifted = _unit(1.0 + 0.5 * rng.normal(size=(120, 48)) + np.r_[np.ones(24), -np.ones(24)] * 0.4)
    null, moved = compare(x, y, permutations=300), compare(x, shifted, permutations=300)
    assert null["verdict"] == NO_SHIFT and moved["verdict"] in {SHIFT, LARGE_SHIFT}
    assert moved["mmd"]["mmd2"] > null["mmd"]["mmd2"]
    assert moved["frechet"]["distance"] > null["frechet"]["distance"]
    lo, hi = null["c2st"]["interval"]
    assert lo <= 0.5 <= hi and moved["c2st"]["auc"] > hi
    assert null["frechet"]["dim"] == frechet_dimension(120, 120) == 12
    for figures in (null, moved):
        lo, hi = figures["frechet"]["interval"]
        assert 0 <= lo <= figures["frechet"]["distance"] <= hi


def test_groups_move_together_in_the_permutation_test():
    """Eight shots of each part: an image-level test would call two halves of different parts a shift far more
    often; moving whole groups keeps the p-value honest."""
    from edgetl.transfer.twosample import mmd_test

    rng = np.random.default_rng(3)
    parts = 1.0 + 0.5 * rng.normal(size=(40, 32))
    shots = _unit(np.repeat(parts, 8, axis=0) + 0.05 * rng.normal(size=(320, 32)))
    groups = np.repeat(np.arange(40), 8).astype(str)
    x, y = shots[:160], shots[160:]
    grouped = mmd_test(x, y, groups_x=groups[:160], groups_y=groups[160:], permutations=300)
    per_image = mmd_test(x, y, permutations=300)
    assert grouped["groups"] == [20, 20]
    assert grouped["p_value"] > per_image["p_value"]
    assert grouped["p_value"] >= 0.05


def _write_set(folder: Path, n: int, *, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = rng.normal(150, 10, (40, 40))
        if i % 2:
            row = rng.integers(10, 30)
            img[row : row + 3, :] = 20
        path = folder / f"cell{i:03d}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def _manifest(path: Path, files: list[Path], *, slices: list[str] | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "slice"])
        for i, f in enumerate(files):
            writer.writerow([f.as_posix(), "crack" if int(f.stem[4:]) % 2 else "good", slices[i] if slices else ""])
    return path


@pytest.fixture
def halves(tmp_path: Path):
    """60 images split at random into A and B, and B again under a new lamp: inverted and flatter (255 - 0.6 x).

    The tiny run's 2-epoch model hardly reacts to a brighter exposure alone (p near 0.05); a lamp this different it
    must see."""
    files = _write_set(tmp_path / "cells", 60, seed=11)
    order = np.random.default_rng(0).permutation(60)
    a = [files[i] for i in sorted(order[:30])]
    b = [files[i] for i in sorted(order[30:])]
    bright = tmp_path / "bright"
    bright.mkdir()
    moved = []
    for f in b:
        pixels = np.asarray(Image.open(f), dtype=np.float64)
        target = bright / f.name
        Image.fromarray((255 - 0.6 * pixels).clip(0, 255).astype(np.uint8), mode="L").save(target)
        moved.append(target)
    return (
        _manifest(tmp_path / "a.csv", a),
        _manifest(tmp_path / "b.csv", b),
        _manifest(tmp_path / "b-bright.csv", moved),
    )


def test_gap_finds_a_planted_lamp_change_and_not_a_random_split(run_copy, halves):
    copy, outside = run_copy
    a, b, bright = halves
    before = outside()
    result = invoke(["gap", copy, b, "--reference", a, "--permutations", "500"])
    assert result.exit_code == 0, result.output
    null = json.loads((copy / "gap" / "b.json").read_text())
    assert null["verdict"] == NO_SHIFT, null["scopes"]["all"]
    result = invoke(["gap", copy, bright, "--reference", a, "--permutations", "500"])
    assert result.exit_code == 0, result.output
    shifted = json.loads((copy / "gap" / "b-bright.json").read_text())
    assert shifted["verdict"] in {SHIFT, LARGE_SHIFT}, shifted["scopes"]["all"]
    assert shifted["scopes"]["all"]["mmd"]["p_value"] < 0.05
    assert shifted["scopes"]["all"]["c2st"]["auc"] > null["scopes"]["all"]["c2st"]["auc"]
    assert "rule:" in result.output and "verdict" in result.output
    assert outside() == before  # nothing written outside the run
    report = json.loads((copy / "report.json").read_text())
    assert set(report["transfer"]["gaps"]) == {"b", "b-bright"}
    assert "Domain gap: b-bright" in (copy / "report.md").read_text()


def test_gap_against_the_train_split_per_slice(run_copy, tmp_path: Path):
    copy, _ = run_copy
    files = _write_set(tmp_path / "station", 24, seed=4)
    manifest = _manifest(tmp_path / "station.csv", files, slices=["lineA"] * 12 + ["lineB"] * 12)
    result = invoke(["gap", copy, manifest, "--label", "station", "--permutations", "200"])
    assert result.exit_code == 0, result.output
    gap = json.loads((copy / "gap" / "station.json").read_text())
    assert set(gap["scopes"]) == {"all", "slice lineA", "slice lineB"}
    assert gap["reference"]["source"].startswith("the train split of")
    assert gap["scopes"]["all"]["frechet"]["dim"] >= 2


def test_gap_errors_are_clear(run_copy, tmp_path: Path):
    copy, _ = run_copy
    assert_clear_error(invoke(["gap", copy, tmp_path / "nowhere"]), "nowhere", "folder of images")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clear_error(invoke(["gap", copy, empty]), "holds no image files")
    _write_set(tmp_path / "ok", 8, seed=1)
    assert_clear_error(invoke(["gap", copy, tmp_path / "ok", "--slice-by", "camera"]), "--slice-by")
    assert_clear_error(invoke(["gap", copy, tmp_path / "ok", "--label", "../x"]), "gap label")
