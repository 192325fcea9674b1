"""95 % intervals: Wilson for proportions (widened for grouped images), a group bootstrap for balanced accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.bench.intervals import (
    balanced_accuracy_interval,
    design_effect,
    overlaps,
    proportion_interval,
    wilson,
)


def test_wilson_matches_the_textbook_values():
    # Wilson 95 % for 0/10 and 10/10: [0, 0.2775] and [0.7225, 1]; for 50/100: [0.4038, 0.5962].
    assert wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson(50, 100) == pytest.approx([0.4038, 0.5962], abs=1e-4)
    assert wilson(0, 0) == [0.0, 1.0]


def test_grouped_images_widen_a_proportions_interval():
    hits = np.repeat([True] * 8 + [False] * 2, 6)  # 10 parts, 6 shots each, every shot of a part alike
    groups = np.repeat(np.arange(10), 6)
    alone = proportion_interval(hits)
    grouped = proportion_interval(hits, groups)
    assert design_effect(hits, groups) == pytest.approx(6.0)
    assert grouped[0] < alone[0] and grouped[1] > alone[1]
    assert grouped == pytest.approx(wilson(8, 10))  # as if each part were one image
    independent = np.arange(60)
    assert proportion_interval(hits, independent) == pytest.approx(alone)


def test_balanced_accuracy_interval_holds_the_point_and_shrinks_with_data():
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.8, y, rng.integers(0, 3, n))
        return y, pred

    y, pred = sample(60)
    low, high = balanced_accuracy_interval(y, pred)
    point = np.mean([(pred[y == c] == c).mean() for c in range(3)])
    assert low <= point <= high
    y2, pred2 = sample(2000)
    low2, high2 = balanced_accuracy_interval(y2, pred2)
    assert high2 - low2 < (high - low) / 3
    # Resampling whole parts: correlated shots make it wider.
    groups = np.repeat(np.arange(12), 5)
    yg = np.repeat(rng.integers(0, 2, 12), 5)
    pg = np.where(np.repeat(rng.random(12) < 0.8, 5), yg, 1 - yg)
    by_group = balanced_accuracy_interval(yg, pg, groups)
    by_image = balanced_accuracy_interval(yg, pg)
    assert by_group[1] - by_group[0] > by_image[1] - by_image[0]
    assert balanced_accuracy_interval(yg, pg, groups) == by_group  # seeded: reproducible


def test_a_change_inside_both_intervals_is_no_change():
    assert overlaps([0.80, 0.90], 0.85, [0.82, 0.92], 0.87)
    assert not overlaps([0.80, 0.84], 0.82, [0.88, 0.92], 0.90)


def test_perfect_predictions_on_few_parts_are_not_called_certain():
    y = np.repeat([0, 1], 6)
    groups = np.repeat(np.arange(4), 3)
    low, high = balanced_accuracy_interval(y, y.copy(), groups)
    assert high == 1.0 and low < 0.6  # 2 parts per class: far from proven perfect
