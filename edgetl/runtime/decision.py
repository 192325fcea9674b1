"""The reject decision: defect score = 1 - softmax(logits)[good], reject when score >= threshold.

The arithmetic is the bench's (``edgetl.bench.accuracy``: float64 softmax), so a verdict here is the verdict the
bench counted for the same logits; a test holds the two to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgetl.errors import EdgetlError

Verdict = Literal["ok", "reject"]


class ThresholdError(EdgetlError, ValueError):
    """A reject threshold that cannot be used."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def defect_scores(logits: np.ndarray, good_index: int) -> np.ndarray:
    """Defect score of each image: 1 - P(good)."""
    return np.asarray(1.0 - softmax(logits)[:, good_index])


@dataclass(frozen=True)
class RejectRule:
    """Reject when 1 - P(good_class) >= threshold; ``source`` says where the threshold came from."""

    good_class: str
    good_index: int
    threshold: float | None
    source: str

    def verdict(self, score: float) -> Verdict | None:
        """ok or reject, None without a threshold."""
        if self.threshold is None:
            return None
        return "reject" if score >= self.threshold else "ok"


def reject_rule(
    classes: list[str],
    entry: dict[str, Any] | None,
    *,
    good_class: str | None = None,
    override: float | None = None,
) -> RejectRule | None:
    """The rule of one precision: its thresholds.json ``entry`` (tuned), or ``override``.

    Returns None when no good class is known (no reject decision, only the class).
    """
    good = (entry or {}).get("good_class", good_class)
    if good is None:
        if override is not None:
            raise ThresholdError("a threshold needs the bundle's good class, and this bundle names none.")
        return None
    if good not in classes:
        raise ThresholdError(f"the good class {good!r} is not one of the bundle's classes {classes}.")
    if override is not None:
        if not 0.0 <= override <= 1.0:
            raise ThresholdError(f"threshold {override} is not a defect score between 0 and 1.")
        return RejectRule(good, classes.index(good), float(override), "given")
    threshold = None if entry is None else entry.get("threshold")
    return RejectRule(good, classes.index(good), None if threshold is None else float(threshold), "tuned")
