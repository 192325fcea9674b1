"""Classification metrics (sklearn.metrics), the good-versus-defect reject threshold, slices, FP32 agreement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetl.config import ConfigError
from edgetl.runtime.decision import defect_scores  # one definition: the line computes the same score

# Class names read as "the part is fine" when choosing the good class (the one every other class is rejected against).
GOOD_NAMES = ("good", "ok", "pass", "functional", "normal", "nominal", "non_defective", "nondefective")


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], *, groups: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision / recall / F1 / support, confusion matrix, and the 95 %
    intervals of accuracy, balanced accuracy and every class's recall and precision (``groups``: the part of each
    image)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    from edgetl.bench.intervals import balanced_accuracy_interval, independent_groups, proportion_interval

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    g = None if groups is None else np.asarray(groups)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    single_class = len(set(np.asarray(y_true).tolist())) < 2
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # With one class present sklearn warns and returns that class's recall; keep that value.
        "balanced_accuracy": float(
            np.mean(y_true == y_pred) if single_class else balanced_accuracy_score(y_true, y_pred)
        ),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "images": len(y_true),
        "groups": independent_groups(groups, len(y_true)),
        "intervals": {
            "accuracy": proportion_interval(y_true == y_pred, g),
            "balanced_accuracy": balanced_accuracy_interval(y_true, y_pred, g),
            "recall": {
                name: proportion_interval(y_pred[y_true == i] == i, None if g is None else g[y_true == i])
                for i, name in enumerate(classes)
                if np.any(y_true == i)
            },
            "precision": {
                name: proportion_interval(y_true[y_pred == i] == i, None if g is None else g[y_pred == i])
                for i, name in enumerate(classes)
                if np.any(y_pred == i)
            },
        },
    }


def good_class_index(classes: Sequence[str], *, good: str | None = None, counts: Sequence[int] | None = None) -> int:
    """Index of the "good part" class, against which every other class is a defect.

    ``good`` names it explicitly; otherwise a class named like good/ok/functional/normal, otherwise the class
    with the most images in ``counts`` (on an inspection line good parts are the majority).
    """
    if good is not None:
        if good not in classes:
            raise ConfigError(f"bench.good_class {good!r} is not one of the classes {list(classes)}.")
        return list(classes).index(good)
    for i, name in enumerate(classes):
        if name.lower().replace("-", "_") in GOOD_NAMES:
            return i
    if counts is not None:
        return int(np.argmax(counts))
    return 0


def reject_threshold(scores: np.ndarray, is_defect: np.ndarray, *, max_false_reject: float) -> dict[str, Any]:
    """The lowest defect-score threshold whose false-reject rate on these (validation) images is <= the target.

    A part is rejected when its score is >= the threshold. Uses sklearn's ROC curve: the operating point with the
    highest defect recall among those rejecting at most ``max_false_reject`` of the good parts.
    """
    from sklearn.metrics import roc_curve

    if is_defect.all() or not is_defect.any():
        raise ValueError("the validation split needs both good and defective images to choose a reject threshold.")
    fpr, tpr, thresholds = roc_curve(is_defect, scores, drop_intermediate=False)
    ok = np.flatnonzero(fpr <= max_false_reject)
    best = ok[np.argmax(tpr[ok])]
    # roc_curve's first threshold is +inf (reject nothing); scores are <= 1, so just above 1 says the same in JSON.
    threshold = float(thresholds[best]) if np.isfinite(thresholds[best]) else float(np.nextafter(1.0, 2.0))
    return {
        "threshold": threshold,
        "max_false_reject": max_false_reject,
        "val_false_reject": float(fpr[best]),
        "val_defect_recall": float(tpr[best]),
        "val_images": len(scores),
    }


def binary_metrics(
    scores: np.ndarray, is_defect: np.ndarray, *, threshold: float, groups: Sequence[str] | None = None
) -> dict[str, Any]:
    """ROC-AUC, PR-AUC (average precision), and defect recall / false-reject rate at ``threshold`` with their
    95 % intervals (``groups``: the part of each image)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from edgetl.bench.intervals import proportion_interval

    is_defect = np.asarray(is_defect, dtype=bool)
    g = None if groups is None else np.asarray(groups)
    both = bool(is_defect.any() and not is_defect.all())
    rejected = scores >= threshold
    intervals = {}
    if is_defect.any():
        intervals["defect_recall"] = proportion_interval(rejected[is_defect], None if g is None else g[is_defect])
    if (~is_defect).any():
        intervals["false_reject"] = proportion_interval(rejected[~is_defect], None if g is None else g[~is_defect])
    return {
        "roc_auc": float(roc_auc_score(is_defect, scores)) if both else None,
        "pr_auc": float(average_precision_score(is_defect, scores)) if both else None,
        "threshold": threshold,
        "defect_recall": float(rejected[is_defect].mean()) if is_defect.any() else None,
        "false_reject": float(rejected[~is_defect].mean()) if (~is_defect).any() else None,
        "intervals": intervals,
    }


# Points of a trade-off curve kept in the report (evenly thinned beyond this; the corners of the curve stay).
TRADEOFF_POINTS = 200


def tradeoff_curve(scores: np.ndarray, is_defect: np.ndarray) -> dict[str, list[float]] | None:
    """Defect recall against false-reject rate at every threshold (sklearn's ROC curve), compact for the report.

    None when the images are all good or all defective.
    """
    from sklearn.metrics import roc_curve

    is_defect = np.asarray(is_defect, dtype=bool)
    if is_defect.all() or not is_defect.any():
        return None
    fpr, tpr, thresholds = roc_curve(is_defect, scores, drop_intermediate=True)
    if len(fpr) > TRADEOFF_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, TRADEOFF_POINTS).astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    # roc_curve's first threshold is +inf (reject nothing): just above 1 says the same in JSON.
    thresholds = np.where(np.isfinite(thresholds), thresholds, np.nextafter(1.0, 2.0))
    return {
        "false_reject": [round(float(v), 5) for v in fpr],
        "defect_recall": [round(float(v), 5) for v in tpr],
        "threshold": [float(f"{v:.6g}") for v in thresholds],
    }


def agreement(logits: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and |logit difference| against reference logits of the same images."""
    diff = np.abs(logits.astype(np.float64) - reference.astype(np.float64))
    return {
        "top1_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
        "mean_abs_logit_diff": float(diff.mean()),
        "max_abs_logit_diff": float(diff.max()),
        "disagreements": int(np.sum(logits.argmax(1) != reference.argmax(1))),
    }


def disagreeing_images(
    logits: np.ndarray, reference: np.ndarray, paths: Sequence[str], labels: np.ndarray, classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Every image whose top-1 class differs from the reference's, with both predictions and the label."""
    pred, ref = logits.argmax(1).tolist(), reference.argmax(1).tolist()
    return [
        {"path": str(paths[i]), "label": classes[int(labels[i])], "prediction": classes[p], "fp32": classes[r]}
        for i, (p, r) in enumerate(zip(pred, ref, strict=True))
        if p != r
    ]


def slice_metrics(
    y_true: np.ndarray,
    logits: np.ndarray,
    slices: Sequence[str],
    classes: list[str],
    *,
    good_index: int | None,
    threshold: float | None,
    max_gap: float,
    min_images: int,
    groups: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of each slice, and a flag on a slice much worse than the rest.

    Rule: a slice is flagged when it has at least ``min_images`` test images and its balanced accuracy is more
    than ``max_gap`` below the balanced accuracy of all other test images pooled together.
    """
    names = np.asarray(slices)
    g = None if groups is None else np.asarray(groups)
    pred = logits.argmax(1)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names.tolist()) - {""}):
        inside = names == name
        part = None if g is None else g[inside]
        m = classification_metrics(y_true[inside], pred[inside], classes, groups=part)
        if good_index is not None and threshold is not None:
            scores = defect_scores(logits[inside], good_index)
            m["binary"] = binary_metrics(scores, y_true[inside] != good_index, threshold=threshold, groups=part)
        rest = classification_metrics(y_true[~inside], pred[~inside], classes) if (~inside).any() else None
        gap = None if rest is None else rest["balanced_accuracy"] - m["balanced_accuracy"]
        m["gap_to_rest"] = gap
        m["flagged"] = bool(gap is not None and inside.sum() >= min_images and gap > max_gap)
        out[name] = m
    return out
