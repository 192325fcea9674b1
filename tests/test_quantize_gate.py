"""The gate's screen: a candidate is read beyond the validation split only when it passes there, and the gate's
images are the validation split then training images the calibration never saw, never the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.data.dataset import Dataset, Sample
from edgetl.quantize import GateData, QuantizationSpec, quantize
from edgetl.quantize.gate import gate_line, screened_gate
from edgetl.quantize.gate_data import gate_samples
from edgetl.quantize.settings import GateSpec


def _indexed_gate(n: int, screen: int | None) -> GateData:
    """Two-class gate data whose image i holds i, so a fake model can answer per image."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [n - n // 3, n // 3])
    reference = rng.normal(0, 0.3, (n, 2)).astype(np.float32)
    reference[np.arange(n), labels] += 3.0
    return GateData(
        images=np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1),
        labels=labels,
        reference=reference,
        groups=[f"part{i}" for i in range(n)],
        good_index=0,
        max_false_reject=0.05,
        source=f"{n} generated logits",
        screen=screen,
        screen_source=f"the first {screen} generated logits",
    )


def _flipping(data: GateData, flipped: np.ndarray, calls: list[int]):
    """A fake candidate that answers like FP32 except on the ``flipped`` images, recording each call's size."""

    def logits_for(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        index = images[:, 0, 0, 0].astype(int)
        out = data.reference[index].copy()
        swap = np.isin(index, flipped)
        out[swap] = out[swap][:, ::-1]
        return out

    return logits_for


def test_a_candidate_that_fails_the_screen_is_not_read_further():
    data, calls = _indexed_gate(150, 50), []
    gate = screened_gate(_flipping(data, np.arange(0, 10), calls), data, GateSpec())
    assert calls == [50]
    assert not gate["passed"] and gate["screened_out"] and gate["images"] == 50
    assert gate["source"] == "the first 50 generated logits"


def test_a_candidate_that_passes_the_screen_by_luck_is_judged_on_every_image():
    data, calls = _indexed_gate(150, 50), []
    gate = screened_gate(_flipping(data, np.arange(60, 75), calls), data, GateSpec())
    assert calls == [50, 100]
    assert gate["images"] == 150 and gate["source"] == "150 generated logits"
    assert not gate["passed"] and "agreement" in gate["failed"]
    assert gate["figures"]["agreement"]["value"] == pytest.approx(135 / 150)
    assert gate["screen"]["images"] == 50 and "(not met)" not in gate["screen"]["line"]


def test_a_faithful_candidate_passes_on_every_image_and_without_a_screen_all_are_read_at_once():
    data, calls = _indexed_gate(150, 50), []
    gate = screened_gate(_flipping(data, np.array([], int), calls), data, GateSpec())
    assert calls == [50, 100] and gate["passed"] and gate["images"] == 150
    unscreened, calls = _indexed_gate(150, None), []
    gate = screened_gate(_flipping(unscreened, np.arange(0, 10), calls), unscreened, GateSpec())
    assert calls == [150] and not gate["passed"] and "screen" not in gate


def _dataset(val: int, train: int, test: int, *, adequate: bool = True) -> Dataset:
    samples = [
        Sample(Path(f"/d/{split}{i}.png"), "good" if i % 3 else "bad", split=split)
        for split, count in (("train", train), ("val", val), ("test", test))
        for i in range(count)
    ]
    info = {"validation": {"adequate": adequate}}
    return Dataset(samples=samples, classes=["bad", "good"], root=Path("/d"), info=info)


def test_the_gate_reads_validation_first_then_training_images_the_calibration_never_saw():
    dataset = _dataset(val=30, train=100, test=50)
    calibrated = {f"/d/train{i}.png" for i in range(0, 100, 5)}
    samples, screen, source, screen_source = gate_samples(dataset, calibrated, 60)
    assert [s.split for s in samples[:30]] == ["val"] * 30 and screen == 30
    assert len(samples) == 60 and all(s.split == "train" for s in samples[30:])
    assert not {s.path.as_posix() for s in samples} & calibrated
    assert len({s.path for s in samples}) == 60
    assert "30 training images outside the calibration set (60 images)" in source
    assert screen_source == "the validation split (30 images)"
    # A validation split too small to trust on its own: every candidate is scored on all the images at once.
    samples, screen, source, _ = gate_samples(_dataset(val=6, train=100, test=50, adequate=False), calibrated, 60)
    assert screen is None and len(samples) == 60 and source.startswith("the validation split (too small")
    # No room beyond the validation split: the validation split alone, unscreened.
    samples, screen, _, _ = gate_samples(dataset, calibrated, 20)
    assert screen is None and [s.split for s in samples] == ["val"] * 20


def test_the_ladder_climbs_past_a_rung_that_passed_its_screen_by_luck(tmp_path):
    from test_quantize_ladder import _gate_data, _images, _planted_model

    from edgetl.quantize import CalibrationSet
    from edgetl.quantize.evaluate import logits_of

    path = tmp_path / "model.onnx"
    _planted_model(path)
    calib, data = CalibrationSet(_images(3, 32), {}), _gate_data(path)
    settings = QuantizationSpec.model_validate(
        {"gate": {"min_agreement": 0.95}, "ladder": {"max_latency_ratio": None, "recipes": []}}
    )
    plain = quantize(
        path,
        calib,
        out=tmp_path / "plain.onnx",
        layout="onnxruntime",
        settings=settings.model_copy(update={"ladder": settings.ladder.model_copy(update={"enabled": False})}),
        gate=data,
    )
    agrees = logits_of(plain.path, data.images).argmax(1) == data.reference.argmax(1)
    assert agrees.mean() < 0.95, "plain INT8 must fail the gate on the planted model"
    # Put images plain INT8 agrees on first: it passes that screen by luck, and fails on all of them.
    order = np.concatenate([np.flatnonzero(agrees), np.flatnonzero(~agrees)])
    screened = GateData(
        images=data.images[order],
        labels=data.labels[order],
        reference=data.reference[order],
        groups=[data.groups[i] for i in order],
        good_index=data.good_index,
        max_false_reject=data.max_false_reject,
        source=data.source,
        screen=40,
    )
    result = quantize(path, calib, out=tmp_path / "q.onnx", layout="onnxruntime", settings=settings, gate=screened)
    first = result.details["ladder"]["rungs"][0]
    assert not first["passed"] and first["gate"]["screen"]["images"] == 40 and first["gate"]["images"] == 200
    assert result.details["ladder"]["kind"] == "mixed" and result.details["gate"]["images"] == 200
    assert result.details["gate"]["passed"]
    from edgetl.report_rows import _rung_row

    assert _rung_row(first)[-1].startswith("passed on the first 40 images; figures on all 200")


def test_agreement_at_the_limit_passes_only_as_a_point_estimate_and_the_screen_stays_one():
    data, calls = _indexed_gate(1000, 250), []
    flipped = np.arange(300, 320)  # 20 of 1000 past the screen: agreement 0.980, exactly the limit
    point = screened_gate(_flipping(data, flipped, calls), data, GateSpec(agreement_confidence=0.0))
    judged = screened_gate(_flipping(data, flipped, calls), data, GateSpec())
    assert point["figures"]["agreement"]["value"] == pytest.approx(0.98) and point["figures"]["agreement"]["met"]
    agreement = judged["figures"]["agreement"]
    assert agreement["confidence"] == 0.8 and agreement["lower_bound"] < 0.98 and not agreement["met"]
    assert not judged["passed"] and "screen" in judged  # the screen (250 images, none flipped) passed
    assert "80% lower bound" in gate_line(judged)
    # Clearly above the limit, the bound passes too: 5 flips in 1000.
    clear = screened_gate(_flipping(data, np.arange(300, 305), calls), data, GateSpec())
    assert clear["passed"] and clear["figures"]["agreement"]["lower_bound"] >= 0.98
    # The screen is judged on the point estimate: 3 flips in 250 images (0.988, whose 80 % bound is below 0.98).
    edge = screened_gate(_flipping(data, np.arange(0, 3), calls), data, GateSpec())
    assert "screen" in edge and edge["passed"]


def test_a_small_data_sets_unscreened_gate_judges_agreement_on_the_point_estimate():
    data, calls = _indexed_gate(30, None), []
    gate = screened_gate(_flipping(data, np.array([], dtype=int), calls), data, GateSpec())
    assert gate["passed"] and "lower_bound" not in gate["figures"]["agreement"]  # 30/30: a bound would be 0.977
