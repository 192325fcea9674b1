"""Nothing is lost: SIGKILL at random moments and a full disk at every write site leave earlier artifacts whole."""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import re
import stat
import time
from pathlib import Path

import onnx
import pytest
import torch
from conftest import make_image_folder, tiny_config

from edgetl.data.dataset import load_split
from edgetl.files import DiskFullError, read_json
from edgetl.models import load_checkpoint
from edgetl.onnx_safety import check_onnx_file
from edgetl.pipeline import (
    stage_bench,
    stage_calibrate,
    stage_compile,
    stage_data,
    stage_export,
    stage_train,
)
from edgetl.quantize.calibration import load_calibration
from edgetl.run import RunDir, init_run, open_run
from edgetl.targets import Artifact
from edgetl.targets.profiles import resolve_profile

TEMP_NAME = re.compile(r"^\..+\.(\d+\.[A-Za-z0-9_]+\.tmp|\d+\.old)$")
STAGES = ("train", "export", "compile")
KILLS = {"train": 5, "export": 5, "compile": 10}  # 20 SIGKILLs in all


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """A complete run (cpu target) and how long each stage took."""
    base = tmp_path_factory.mktemp("crash")
    images = make_image_folder(base / "images", per_class=8, size=32)
    config = tiny_config(
        images, base / "runs", targets=["cpu"], train__epochs=2, export__parity_images=2, calibration__samples=4
    )
    run = init_run(config)
    seconds = {}
    for name, stage in (
        ("data", lambda: stage_data(config, run)),
        ("train", lambda: stage_train(config, run, progress=False)),
        ("export", lambda: stage_export(config, run)),
        ("calibrate", lambda: stage_calibrate(config, run)),
        ("compile", lambda: stage_compile(config, run, resolve_profile("cpu"))),
        ("bench", lambda: stage_bench(config, run, [resolve_profile("cpu")])),
    ):
        t0 = time.perf_counter()
        stage()
        seconds[name] = time.perf_counter() - t0
    # A finished recompile makes a new artifact folder without the old one's bench threshold (it must be
    # re-tuned by the next bench), so thresholds are outside the "nothing vanishes" rule.
    files = {
        p.relative_to(run.root).as_posix() for p in run.root.rglob("*") if p.is_file() and p.name != "threshold.json"
    }
    return config, run, seconds, files, (run.train / "model.pt").read_bytes()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP_NAME.match(p.name)]


def assert_intact(run: RunDir, files: set[str]) -> None:
    """Every earlier artifact loads and verifies; no file appeared or vanished (temporary names aside, and the caches a
    stage may leave whole before a later write fails: training's resume.pt, the calibration set's histograms)."""
    load_split(run.data)
    _model, meta = load_checkpoint(run.train / "model.pt")
    assert meta["classes"] == ["crack", "good"]
    read_json(run.train / "meta.json")
    if (run.train / "resume.pt").is_file():
        assert torch.load(run.train / "resume.pt", weights_only=True)["epoch"] >= 1
    onnx.checker.check_model(str(check_onnx_file(run.export / "model.onnx")), full_check=True)
    assert read_json(run.export / "parity.json")["passed"]
    load_calibration(run.calibration)
    for precision in ("fp32", "int8"):
        assert Artifact.read(run.target("cpu", precision), verify=True).precision == precision
    for name in files:
        if name.endswith(".json"):
            read_json(run.root / name)
    now = {
        p.relative_to(run.root).as_posix()
        for p in run.root.rglob("*")
        if p.is_file()
        and p.name != "threshold.json"
        and not any(TEMP_NAME.match(part) for part in p.relative_to(run.root).parts)
    }
    for threshold in run.root.rglob("threshold.json"):
        read_json(threshold)
    caches = {"train/resume.pt", "calibration/histograms.npz"}
    assert now - caches == files - caches, sorted(now ^ files)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_previous_artifacts_whole(built):
    config, run, seconds, files, reference = built
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["crash_worker", "edgetl.pipeline", "edgetl.train", "edgetl.export"])
    chance = random.Random(5)
    system_temp = run.root.parent / "system-temp"
    system_temp.mkdir()
    killed = 0
    for stage in STAGES:
        for _ in range(KILLS[stage]):
            ready = context.Event()
            from crash_worker import run_stage_forever

            child = context.Process(target=run_stage_forever, args=(str(run.root), stage, ready, str(system_temp)))
            child.start()
            assert ready.wait(120), "the child never started"
            time.sleep(chance.uniform(0.0, seconds[stage]))
            child.kill()
            child.join(30)
            assert child.exitcode == -9
            killed += 1
            assert_intact(run, files)
            open_run(run.root)  # the next command on the run clears what the killed writer left
            assert temp_files(run.root) == []
            assert list(system_temp.iterdir()) == [], "a killed stage left scratch files outside its run"
    assert killed >= 20
    # An interrupted training resumes to the model an uninterrupted run gives.
    stage_train(config, run, progress=False, resume=True)
    assert (run.train / "model.pt").read_bytes() == reference
    assert_intact(run, files)


def _disk_full_at(monkeypatch: pytest.MonkeyPatch, call: str, k: int) -> list[int]:
    """Make the k-th ``os.<call>`` on a regular file (fsync, write) or the k-th os.replace fail with ENOSPC."""
    real = getattr(os, call)
    count = [0]

    def failing(*args, **kwargs):
        if call == "replace" or stat.S_ISREG(os.fstat(args[0]).st_mode):
            count[0] += 1
            if count[0] == k:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, call, failing)
    return count


@pytest.mark.parametrize(
    ("stage", "call"),
    [
        ("init", "fsync"),
        ("data", "fsync"),
        ("data", "write"),
        pytest.param("train", "fsync", marks=pytest.mark.slow),
        pytest.param("export", "fsync", marks=pytest.mark.slow),
        ("calibrate", "fsync"),
        ("calibrate", "replace"),
        pytest.param("compile", "fsync", marks=pytest.mark.slow),
        ("bench", "fsync"),
    ],
)
def test_full_disk_at_each_write_site_is_a_clear_error(built, monkeypatch: pytest.MonkeyPatch, stage, call):
    config, run, _, files, _ = built
    if stage == "train":
        config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})})
    runs = {
        "init": lambda: init_run(config, force=True),
        "data": lambda: stage_data(config, run),
        "train": lambda: stage_train(config, run, progress=False),
        "export": lambda: stage_export(config, run),
        "calibrate": lambda: stage_calibrate(config, run),
        "compile": lambda: stage_compile(config, run, resolve_profile("cpu")),
        "bench": lambda: stage_bench(config, run, [resolve_profile("cpu")]),
    }
    sites = 0
    for k in range(1, 40):
        with monkeypatch.context() as patch:
            count = _disk_full_at(patch, call, k)
            try:
                runs[stage]()
            except DiskFullError as exc:
                message = str(exc)
                assert "no space left on the disk while writing" in message and str(run.root) in message
                assert "is unchanged" in message
                sites += 1
            else:
                assert count[0] < k
                break
        assert temp_files(run.root) == []
        assert_intact(run, files)
    assert sites >= 1, f"no write site reached in stage {stage}"


def test_a_full_disk_outside_the_run_folder_is_a_clear_error_too(monkeypatch, capsys):
    import sys

    import edgetl.targets.profiles as profiles
    from edgetl.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/edgetl-ort-x/prepared.onnx")

    monkeypatch.setattr(profiles, "available_profiles", full)
    monkeypatch.setattr(sys, "argv", ["edgetl", "targets"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "no space left on the disk while writing /tmp/edgetl-ort-x/prepared.onnx" in capsys.readouterr().err
