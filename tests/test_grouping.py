"""Splits that cannot leak: shots of one part (planted exposure and gain variants) never straddle splits."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgetl.config import DataConfig
from edgetl.data.dataset import DataError, Sample, prepare_dataset
from edgetl.data.grouping import group_samples, mutual_neighbours, pattern_groups


def _part(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A distinct synthetic part: a textured background with a few shapes at random places."""
    image = Image.fromarray(rng.normal(128, 12, (size, size)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 6))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 20, 2))
        w, h = (int(v) for v in rng.integers(8, 30, 2))
        shade = int(rng.integers(0, 255))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=shade)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=shade, width=int(rng.integers(2, 5)))
    return np.asarray(image)


def _exposure(image: np.ndarray, gamma: float, gain: float, rng: np.random.Generator) -> np.ndarray:
    x = image.astype(np.float32) / 255.0
    shot = 255.0 * gain * x**gamma + rng.normal(0, 2, image.shape)
    return shot.clip(0, 255).astype(np.uint8)


EXPOSURES = ((1.0, 1.0), (0.7, 1.1), (1.4, 0.9), (1.0, 0.75), (0.85, 1.25))


def planted_parts(root: Path, *, parts_per_class: int = 10, seed: int = 0) -> dict[str, str]:
    """An ImageFolder where each part is shot at several exposures; returns file name -> part."""
    rng = np.random.default_rng(seed)
    part_of = {}
    for label in ("good", "scratch"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for p in range(parts_per_class):
            base = _part(rng)
            if label == "scratch":
                base = base.copy()
                base[40:43, 10:80] = 20
            for gamma, gain in EXPOSURES:
                name = f"{label}_{rng.integers(1e9):09d}.png"  # names say nothing about the part
                Image.fromarray(_exposure(base, gamma, gain, rng)).save(root / label / name)
                part_of[name] = f"{label}-{p}"
    return part_of


def test_planted_exposure_variants_of_a_part_never_straddle_splits(tmp_path: Path):
    part_of = planted_parts(tmp_path / "images")
    dataset = prepare_dataset(DataConfig(root=tmp_path / "images", max_group_size=8), tmp_path / "run")
    splits_of: dict[str, set[str]] = defaultdict(set)
    groups_of: dict[str, set[str]] = defaultdict(set)
    for s in dataset.samples:
        splits_of[part_of[s.path.name]].add(s.split)
        groups_of[part_of[s.path.name]].add(s.group)
    straddling = [p for p, splits in splits_of.items() if len(splits) > 1]
    assert not straddling, straddling
    whole = sum(len(g) == 1 for g in groups_of.values())
    assert whole >= 0.9 * len(groups_of)  # nearly every part is one group
    facts = dataset.info["groups"]
    assert facts["embedding"]["used"] and facts["auto_linked_images"] >= 0.9 * len(dataset.samples)
    assert sum(facts["independent"].values()) == facts["groups"] and facts["largest_group"] <= 8


def test_without_grouping_the_same_images_do_straddle(tmp_path: Path):
    """The control: a plain per-image split leaks shots of one part into several splits."""
    part_of = planted_parts(tmp_path / "images")
    dataset = prepare_dataset(DataConfig(root=tmp_path / "images", grouping="none"), tmp_path / "run")
    splits_of: dict[str, set[str]] = defaultdict(set)
    for s in dataset.samples:
        splits_of[part_of[s.path.name]].add(s.split)
    assert sum(len(v) > 1 for v in splits_of.values()) >= 5


def test_group_pattern_names_the_part_from_the_path(tmp_path: Path):
    root = tmp_path / "images"
    rng = np.random.default_rng(1)
    for label in ("ok", "ng"):
        (root / label).mkdir(parents=True)
        for serial in range(8):
            for shot in range(3):
                image = rng.integers(0, 255, (40, 40), dtype=np.uint8)
                Image.fromarray(image).save(root / label / f"SN{label}{serial:03d}_shot{shot}.png")
    dataset = prepare_dataset(DataConfig(root=root, group_pattern=r"(SN\w+?)_shot"), tmp_path / "run")
    by_group: dict[str, set[str]] = defaultdict(set)
    for s in dataset.samples:
        by_group[s.group].add(s.split)
        assert s.group == s.path.name.split("_")[0]
    assert len(by_group) == 16 and all(len(v) == 1 for v in by_group.values())
    assert dataset.info["groups"]["source"] == "data.group_pattern"


def test_group_pattern_errors_name_the_fix(tmp_path: Path):
    samples = [Sample(tmp_path / "a" / "x1.png", "a"), Sample(tmp_path / "a" / "other.png", "a")]
    with pytest.raises(DataError, match="no capture group"):
        pattern_groups(samples, tmp_path, r"x\d")
    with pytest.raises(DataError, match="finds no part name in 1 of 2"):
        pattern_groups(samples, tmp_path, r"(x\d)")
    with pytest.raises(DataError, match="not a valid regular expression"):
        pattern_groups(samples, tmp_path, r"(x")


def test_manifest_splits_that_cut_a_named_group_are_refused(tmp_path: Path):
    rng = np.random.default_rng(2)
    rows = ["path,label,split,group"]
    for i in range(12):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / name)
        split = ("train", "val", "test")[i % 3]
        rows.append(f"{name},{'ab'[i % 2]},{split},part{i // 2}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="one part in several splits: part0"):
        prepare_dataset(DataConfig(manifest=tmp_path / "m.csv", grouping="none"), tmp_path / "run")


def test_union_rules_cap_conflicts_and_strength_order():
    samples = [Sample(Path(f"{i}.png"), "a") for i in range(6)]
    named = ["p", "p", "q", "", "", ""]
    result = group_samples(
        samples,
        named=named,
        hash_pairs=[(1, 2, 0)],  # links two named groups: a conflict, not a merge
        embedding_pairs=[(3, 4, 0.99), (4, 5, 0.98), (2, 5, 0.5)],
        max_group_size=2,
    )
    groups = result.groups
    assert groups[0] == groups[1] == "p" and groups[2] == "q"
    assert groups[3] == groups[4] != groups[5]  # the cap stops the weaker link 4-5
    assert groups[5] == "q"  # an automatic link may attach an image to a named group
    assert result.stats["links"]["hash"]["conflict"] == 1
    assert result.stats["links"]["embedding"]["capped"] == 1


def test_mutual_neighbours_are_mutual():
    features = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.99], [0.7, 0.7]], dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    found, floor = mutual_neighbours(features, k=1, background=2)
    assert {(i, j) for i, j, _ in found} == {(0, 1), (2, 3)}
    assert floor[0] == pytest.approx(features[0] @ features[4])  # image 0's second neighbour is image 4
