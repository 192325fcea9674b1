"""How many training images calibrate INT8, and that a small validation split leaves the gate images of its own."""

from __future__ import annotations

from pathlib import Path

from edgetl.data.dataset import Dataset, Sample
from edgetl.quantize.calibration import calibration_count, select_calibration


def _dataset(train: dict[str, int], *, adequate: bool) -> Dataset:
    samples = [
        Sample(path=Path(f"{label}/{i}.png"), label=label, split="train")
        for label, n in train.items()
        for i in range(n)
    ]
    samples += [Sample(path=Path("good/val.png"), label="good", split="val")]
    info = {"validation": {"adequate": adequate, "reasons": [] if adequate else ["7 good validation images"]}}
    return Dataset(samples=samples, classes=sorted(train), root=Path("."), info=info)


def test_an_adequate_validation_split_calibrates_on_the_requested_sample():
    data = _dataset({"good": 600, "crack": 100}, adequate=True)
    assert calibration_count(data, 300) == 300 and len(select_calibration(data, 300, 0)) == 300
    assert calibration_count(data, 1000) == 700


def test_a_small_validation_split_keeps_half_the_training_split_for_the_int8_gate():
    data = _dataset({"good": 60, "crack": 30, "chip": 6}, adequate=False)
    chosen = select_calibration(data, 300, 0)
    assert len(chosen) == calibration_count(data, 300) == 48
    labels = {data.samples[i].label for i in chosen}
    assert labels == {"good", "crack", "chip"}  # still stratified
    assert calibration_count(_dataset({"good": 30, "crack": 10}, adequate=False), 300) == 32  # the floor
    assert calibration_count(_dataset({"good": 10, "crack": 10}, adequate=False), 300) == 20  # all there is


def test_a_class_with_one_training_image_does_not_stop_the_selection():
    data = _dataset({"good": 60, "crack": 30, "chip": 1}, adequate=False)
    assert len(select_calibration(data, 300, 0)) == 45
