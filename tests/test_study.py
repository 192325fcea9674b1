"""edgetl study transfer: whole groups per class, nested subsets, and the whole study end to end on a tiny set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hostile import assert_clear_error, invoke

from edgetl.data.dataset import Sample
from edgetl.transfer.study import nested_fractions


def test_subsets_are_whole_groups_per_class_and_nested():
    samples = [
        Sample(Path(f"{i}.png"), "crack" if i < 40 else "good", group=f"part{i // 4}") for i in range(120)
    ]  # 10 crack parts, 20 good parts, 4 shots each
    subsets = nested_fractions(samples, ["crack", "good"], (0.1, 0.5, 1.0), seed=3)
    assert len(subsets[1.0]) == 120
    for fraction, index in subsets.items():
        groups = {samples[i].group for i in index}
        assert all(sum(1 for s in samples if s.group == g) == sum(1 for i in index if samples[i].group == g)
                   for g in groups)  # fmt: skip
        labels = [samples[i].label for i in index]
        assert labels.count("crack") == 4 * max(1, int(np.ceil(fraction * 10)))
        assert labels.count("good") == 4 * max(1, int(np.ceil(fraction * 20)))
    assert set(subsets[0.1]) <= set(subsets[0.5]) <= set(subsets[1.0])
    assert not np.array_equal(subsets[0.5], nested_fractions(samples, ["crack", "good"], (0.5,), seed=4)[0.5])


def test_study_end_to_end_on_a_tiny_set(run_copy):
    copy, outside = run_copy
    before = outside()
    result = invoke(["study", "transfer", copy, "--fractions", "0.5,1", "--seeds", "2", "--scratch-epochs", "2"])
    assert result.exit_code == 0, result.output
    study = json.loads((copy / "study" / "transfer.json").read_text())
    assert [r["fraction"] for r in study["rows"]] == [0.5, 1.0]
    assert study["input_size"] == 32 and len(study["fits"]) == 8
    for row in study["rows"]:
        for arm in ("pretrained", "scratch"):
            assert 0 <= row[arm]["balanced_accuracy"] <= 1 and row[arm]["seeds"] == 2
            assert row[arm]["seconds_to_best"] <= row[arm]["seconds"] + 1e-6
        assert "difference" in row
    assert set(study["claims"]) == {"development_time", "performance", "fraction_of_data"}
    assert "random initialisation" in study["recipes"]["scratch"]
    for name in ("transfer.csv", "transfer.png", "transfer.md"):
        assert (copy / "study" / name).is_file()
    assert not (copy / "study" / "transfer.partial.json").exists()
    assert (copy / "study" / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    assert "Pretrained versus scratch" in (copy / "report.md").read_text()
    assert outside() == before


def test_study_errors_are_clear(run_copy):
    copy, _ = run_copy
    assert_clear_error(invoke(["study", "transfer", copy, "--fractions", "0,1"]), "--fractions")
    assert_clear_error(invoke(["study", "transfer", copy, "--fractions", "half"]), "--fractions")
