"""The accuracy gate of a quantized model: top-1 agreement with FP32, drop in balanced accuracy and drop in defect
recall at the false-reject budget (the good class against every other, whatever the number of classes), each with
its 95 % interval, against the limits of ``quantization.gate``.

Defect recall is read at the budget only when the gate holds enough good images for it (``min_tail_images`` of
them above the threshold); otherwise at the smallest false-reject rate that does. At 1 % of 170 good images the
threshold is the second-highest good score, and two models that agree on 98 % of the images can differ there by
several points of recall for no reason but which good image came second.

A candidate is screened on the gate's first ``screen`` images (the validation split) and, only when it passes
there, scored again on all of them (:func:`screened_gate`): a ladder that takes the first rung to pass 246 images
takes rungs that passed by luck (on the ELPV demo, rungs at 0.984-0.988 agreement there agreed 0.965-0.977 on the
test split and on the training images outside the calibration set), while the rungs that fail cost no more.

Where the gate screens, agreement on all its images is judged on its one-sided lower bound
(``agreement_confidence``, 0.8 by default); the screen's, and a small data set's (no screen), on the point
estimate. The ladder lands on the first rung to pass, so the landed rung's figure is the one of several that came
out highest: on the ELPV demo a rung landed at 0.980 on 1000 images agreed 0.965 with FP32 on the test split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from edgetl.quantize.settings import GateSpec


@dataclass
class GateData:
    """Images the gate scores a quantized model on, and the FP32 model's logits on them."""

    images: np.ndarray  # (N, C, H, W) float32, preprocessed as at deploy time
    labels: np.ndarray  # (N,) class indices
    reference: np.ndarray  # (N, classes) FP32 logits
    groups: list[str]  # the part of each image (for the intervals)
    good_index: int | None  # the good class (against every other class); None: no defect-recall criterion
    max_false_reject: float  # the false-reject budget (bench.max_false_reject)
    source: str  # which images, in words (for the artifact and the report)
    screen: int | None = None  # the first images a candidate must pass on before the rest are read (None: all)
    screen_source: str = ""  # those first images, in words

    def head(self, n: int) -> GateData:
        """The first ``n`` images, as gate data of their own."""
        return replace(
            self,
            images=self.images[:n],
            labels=self.labels[:n],
            reference=self.reference[:n],
            groups=self.groups[:n],
            source=self.screen_source or f"the first {n} of {self.source}",
            screen=None,
        )


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall of the classes present (nan without images)."""
    recalls = [float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else float("nan")


def defect_recall_at_budget(logits: np.ndarray, is_defect: np.ndarray, good_index: int, budget: float) -> float:
    """Share of defective images rejected at the lowest threshold that rejects at most ``budget`` of the good ones
    (the threshold the bench tunes, :func:`edgetl.bench.accuracy.reject_threshold`, on these images)."""
    from edgetl.bench.accuracy import defect_scores

    scores = defect_scores(logits, good_index)
    good = np.sort(scores[~is_defect])[::-1]
    if not is_defect.any() or not len(good):
        return float("nan")
    k = int(np.floor(budget * len(good) + 1e-9))
    threshold = good[k] if k < len(good) else -np.inf
    return float(np.mean(scores[is_defect] > threshold))


def evidence_budget(budget: float, good_images: int, min_tail: int) -> float:
    """The false-reject rate the gate reads defect recall at: ``budget``, or the smallest rate that leaves
    ``min_tail`` of ``good_images`` above the threshold when ``budget`` leaves fewer (an extreme order statistic is
    too unsteady to compare two models by)."""
    if good_images <= 0:
        return budget
    return float(min(max(budget, min_tail / good_images), 1.0))


def score_gate(logits: np.ndarray, data: GateData, spec: GateSpec) -> dict[str, Any]:
    """The gate's three figures with intervals, the limits, whether each is met (point estimates), and why not."""
    from edgetl.bench.intervals import bootstrap_interval, proportion_interval

    pred, ref = logits.argmax(1), data.reference.argmax(1)
    groups = np.asarray(data.groups)
    agree = pred == ref
    figures: dict[str, Any] = {
        "agreement": {
            "value": float(agree.mean()),
            "interval": proportion_interval(agree, groups),
            "limit": spec.min_agreement,
            "met": bool(agree.mean() >= spec.min_agreement),
        }
    }
    if spec.agreement_confidence > 0:
        z = NormalDist().inv_cdf(spec.agreement_confidence)
        bound = proportion_interval(agree, groups, z=z)[0]
        figures["agreement"].update(
            {"lower_bound": bound, "confidence": spec.agreement_confidence, "met": bool(bound >= spec.min_agreement)}
        )

    def ba_drop(idx: np.ndarray) -> float:
        y = data.labels[idx]
        return balanced_accuracy(y, ref[idx]) - balanced_accuracy(y, pred[idx])

    drop = ba_drop(np.arange(len(pred)))
    figures["balanced_accuracy_drop"] = {
        "value": drop,
        "interval": bootstrap_interval(ba_drop, len(pred), groups),
        "limit": spec.max_balanced_accuracy_drop,
        "met": bool(drop <= spec.max_balanced_accuracy_drop),
    }
    if data.good_index is not None:
        good = data.good_index
        is_defect = data.labels != good
        budget = evidence_budget(data.max_false_reject, int((~is_defect).sum()), spec.min_tail_images)

        def recall_drop(idx: np.ndarray) -> float:
            return defect_recall_at_budget(data.reference[idx], is_defect[idx], good, budget) - (
                defect_recall_at_budget(logits[idx], is_defect[idx], good, budget)
            )

        value = recall_drop(np.arange(len(pred)))
        if np.isfinite(value):
            figures["defect_recall_drop"] = {
                "value": value,
                "interval": bootstrap_interval(recall_drop, len(pred), groups),
                "limit": spec.max_defect_recall_drop,
                "max_false_reject": data.max_false_reject,
                "read_at": budget,
                "met": bool(value <= spec.max_defect_recall_drop),
            }
    failed = [name for name, f in figures.items() if not f["met"]]
    return {
        "passed": not failed,
        "failed": failed,
        "figures": figures,
        "images": len(pred),
        "source": data.source,
    }


def screened_gate(logits_for: Callable[[np.ndarray], np.ndarray], data: GateData, spec: GateSpec) -> dict[str, Any]:
    """The gate of a candidate whose logits on given images ``logits_for`` computes: first on ``data.screen``
    images; on all of them only when it passes there. A candidate that fails the screen is recorded with the
    screen's figures (``screened_out``); one that passes is judged on every image, with the screen's line kept
    beside."""
    n = data.screen
    point = spec.model_copy(update={"agreement_confidence": 0.0})
    if n is None or n >= len(data.images):
        # No screen: a small data set, scored at once. Its few dozen images could not show the bound (under 36
        # images not even with every one agreeing), so its agreement stays a point estimate, as the screen's.
        return score_gate(logits_for(data.images), data, point)
    first = logits_for(data.images[:n])
    screened = score_gate(first, data.head(n), point)
    if not screened["passed"]:
        return {**screened, "screened_out": True}
    logits = np.concatenate([first, logits_for(data.images[n:])])
    return {**score_gate(logits, data, spec), "screen": {"images": n, "line": gate_line(screened)}}


def gate_line(gate: dict[str, Any]) -> str:
    """One line for a console, a report cell or a card: each figure, its interval and its limit."""
    names = {"agreement": "agreement", "balanced_accuracy_drop": "bal. acc. drop", "defect_recall_drop": "recall drop"}
    parts = []
    for name, f in gate.get("figures", {}).items():
        low, high = f["interval"]
        sign = ">=" if name == "agreement" else "<="
        mark = "" if f["met"] else " (not met)"
        if f.get("lower_bound") is not None:
            mark = f", its {f['confidence']:.0%} lower bound {f['lower_bound']:.3f}" + mark
        read_at = f.get("read_at")
        at = "" if read_at is None or read_at == f.get("max_false_reject") else f" (at {read_at:.1%} false rejects)"
        parts.append(
            f"{names.get(name, name)}{at} {f['value']:.3f} [{low:.3f}, {high:.3f}] {sign} {f['limit']:g}{mark}"
        )
    return "; ".join(parts)
