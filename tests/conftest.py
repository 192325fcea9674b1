"""Shared fixtures: tiny generated image sets and configs (no network, seconds to run)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hostile import run_copy  # noqa: F401  (the hardening tests' private copy of the tiny run)
from PIL import Image

from edgetl.config import BuildConfig, build_config_from_dict


def make_image_folder(root: Path, *, per_class: int = 12, size: int = 48, seed: int = 0) -> Path:
    """Two visually separable classes of grey images: 'good' (smooth) and 'crack' (a dark line)."""
    rng = np.random.default_rng(seed)
    for label in ("good", "crack"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(150, 10, (size, size)).clip(0, 255)
            if label == "crack":
                row = rng.integers(size // 4, 3 * size // 4)
                img[row : row + 3, :] = 20
            Image.fromarray(img.astype(np.uint8), mode="L").save(root / label / f"{label}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


def tiny_config(data_root: Path, runs: Path, **overrides: object) -> BuildConfig:
    """A config that trains in seconds: 32-pixel inputs, 2 epochs."""
    raw: dict = {
        "name": "tiny",
        "runs_dir": str(runs),
        "targets": ["cpu", "intel-cpu"],
        "data": {"root": str(data_root), "test_fraction": 0.25, "val_fraction": 0.25},
        "model": {"arch": "mobilenet_v2", "gray": True, "input_size": 32},
        "train": {"strategy": "partial", "trainable_blocks": 4, "epochs": 2, "views": 2, "batch_size": 8},
        "export": {"parity_images": 4},
        "calibration": {"samples": 8},
        "bench": {"warmup": 2, "iterations": 5, "e2e_iterations": 3, "throughput_seconds": 0.05},
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return build_config_from_dict(raw)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below root (to prove sources are untouched)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def build_through_compile(config: BuildConfig):
    """init, data, train, export, calibrate and compile for every target of ``config``; returns the RunDir."""
    from edgetl.pipeline import stage_calibrate, stage_compile, stage_data, stage_export, stage_train
    from edgetl.run import init_run
    from edgetl.targets.profiles import resolve_profile

    run = init_run(config)
    stage_data(config, run)
    stage_train(config, run, progress=False)
    stage_export(config, run)
    stage_calibrate(config, run)
    for name in config.targets:
        stage_compile(config, run, resolve_profile(name))
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """One tiny run built through every stage (bench, then a bundle per target), shared by the stage, bench,
    report and runtime tests.

    Returns (config, run, report, images, hashes of the images before the run).
    """
    from edgetl.pipeline import stage_bench, stage_bundle
    from edgetl.targets.profiles import resolve_profile

    base = tmp_path_factory.mktemp("tiny")
    images = make_image_folder(base / "images", per_class=12, size=40)
    before = tree_hashes(images)
    config = tiny_config(images, base / "runs")
    run = build_through_compile(config)
    profiles = [resolve_profile(n) for n in config.targets]
    report = stage_bench(config, run, profiles)
    for profile in profiles:
        stage_bundle(config, run, profile)
    return config, run, report, images, before


@pytest.fixture(scope="session")
def trt_run(tmp_path_factory: pytest.TempPathFactory):
    """A tiny run built for the jetson profile: prepared TensorRT inputs and the device bundle."""
    from edgetl.pipeline import stage_bundle
    from edgetl.targets.profiles import resolve_profile

    base = tmp_path_factory.mktemp("trt")
    images = make_image_folder(base / "images", per_class=16, size=40)
    config = tiny_config(images, base / "runs", targets=["jetson"], calibration__samples=12)
    run = build_through_compile(config)
    manifest = stage_bundle(config, run, resolve_profile("jetson"))
    return config, run, manifest
