"""95 % intervals for every headline figure, honest about images that come in groups.

- Proportions (accuracy, per-class recall, defect recall, false-reject rate): the Wilson score interval. When
  the images come from groups (several shots of one part), shots of one part are not independent draws, so the
  count is first divided by the design effect of the groups (Kish), estimated from the spread of the group
  totals: ``n_eff = n / deff``. One image per group gives ``deff = 1``, the textbook Wilson interval.
- Balanced accuracy: a percentile bootstrap that resamples whole groups (a fixed seed, so a report is
  reproducible).
- Any other statistic of one or more samples (a two-sample distance, a ROC-AUC, a difference of scores):
  :func:`group_bootstrap_interval`, scipy's percentile bootstrap over whole groups of each sample.

Every interval is ``[low, high]`` with ``low <= point <= high``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000
_SEED = 20240601


def wilson(successes: float, n: float, *, z: float = Z95) -> list[float]:
    """Wilson score interval of ``successes`` out of ``n`` (both may be effective, non-integer counts)."""
    if n <= 0:
        return [0.0, 1.0]
    p = min(max(successes / n, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def _group_codes(groups: Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return np.asarray(codes)


def design_effect(hits: np.ndarray, groups: Sequence[str] | np.ndarray | None) -> float:
    """How much grouping inflates the variance of the share of ``hits`` (>= 1).

    Ratio-estimator variance of the group totals against the binomial variance. Where every image agrees
    (share 0 or 1) the spread says nothing, and the mean group size is used: the worst case, one shot per part.
    """
    hits = np.asarray(hits, dtype=np.float64)
    n = len(hits)
    if n == 0:
        return 1.0
    codes = _group_codes(groups, n)
    sizes = np.bincount(codes).astype(np.float64)
    g = len(sizes)
    if g == n:
        return 1.0
    p = hits.mean()
    if p <= 0.0 or p >= 1.0 or g < 2:
        return float(n / g)
    totals = np.bincount(codes, weights=hits)
    var_cluster = g / (g - 1) * np.sum((totals - p * sizes) ** 2) / n**2
    var_binomial = p * (1 - p) / n
    return float(min(max(var_cluster / var_binomial, 1.0), sizes.max()))


def proportion_interval(
    hits: np.ndarray, groups: Sequence[str] | np.ndarray | None = None, *, z: float = Z95
) -> list[float]:
    """95 % interval (``z``: another width) of the share of true values in ``hits``: Wilson on the effective
    count."""
    hits = np.asarray(hits, dtype=bool)
    n = len(hits)
    if n == 0:
        return [0.0, 1.0]
    n_eff = n / design_effect(hits, groups)
    return wilson(float(hits.mean()) * n_eff, n_eff, z=z)


def balanced_accuracy_interval(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = _SEED,
) -> list[float]:
    """Percentile bootstrap over groups of the balanced accuracy (mean recall of the classes present)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if n == 0:
        return [0.0, 1.0]
    codes = _group_codes(groups, n)
    classes = np.unique(y_true)
    onehot = (y_true[:, None] == classes[None, :]).astype(np.float64)
    num_groups = int(codes.max()) + 1
    totals = np.zeros((num_groups, len(classes)))
    correct = np.zeros((num_groups, len(classes)))
    np.add.at(totals, codes, onehot)
    np.add.at(correct, codes, onehot * (y_true == y_pred)[:, None])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_groups, np.full(num_groups, 1.0 / num_groups), size=resamples).astype(np.float64)
    denom = counts @ totals
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(denom > 0, (counts @ correct) / np.where(denom > 0, denom, 1.0), np.nan)
    values = np.nanmean(recall, axis=1)
    low, high = np.nanpercentile(values, [2.5, 97.5])
    hits = [y_pred[y_true == c] == c for c in classes]
    point = float(np.mean([h.mean() for h in hits]))
    low, high = min(low, point), max(high, point)
    if any(h.all() or not h.any() for h in hits):
        # A class recalled perfectly (or never) has no spread to resample: the percentile bootstrap would claim
        # certainty. Widen to the mean of the classes' Wilson bounds (grouped), a conservative envelope.
        bounds = np.array([proportion_interval(h, None if groups is None else np.asarray(groups)[y_true == c])
                           for h, c in zip(hits, classes, strict=True)])  # fmt: skip
        low, high = min(low, float(bounds[:, 0].mean())), max(high, float(bounds[:, 1].mean()))
    return [float(low), float(high)]


def independent_groups(groups: Sequence[str] | np.ndarray | None, n: int) -> int:
    """Number of distinct groups among ``n`` images (``n`` without groups)."""
    return len(np.unique(_group_codes(groups, n))) if n else 0


def overlaps(a: Sequence[float], point_a: float, b: Sequence[float], point_b: float) -> bool:
    """True when each point estimate lies inside the other's interval: a change that is not a change."""
    return bool(a[0] <= point_b <= a[1] and b[0] <= point_a <= b[1])


def group_bootstrap_interval(
    statistic: Callable[..., float],
    *groups: Sequence[str] | np.ndarray,
    resamples: int = 1000,
    seed: int = _SEED,
    method: str = "percentile",
) -> list[float] | None:
    """Bootstrap interval of ``statistic`` that resamples whole groups, each sample independently.

    ``groups[k]`` names the group of every item of sample k. ``statistic`` receives one index array per sample:
    the items of the drawn groups (an item appears as often as its group was drawn). The interval is widened to
    hold the statistic of the full samples. ``method`` is scipy's: ``percentile``, or ``basic`` for a statistic
    that a resample biases (a distance between sets). None when a sample has fewer than two groups.
    """
    from scipy.stats import bootstrap

    members = []
    for names in groups:
        codes = _group_codes(names, len(names))
        members.append([np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1 if len(codes) else 0)])
    if any(len(m) < 2 for m in members):
        return None

    def on_groups(*drawn: np.ndarray) -> float:
        return float(statistic(*(np.concatenate([m[int(g)] for g in d]) for m, d in zip(members, drawn, strict=True))))

    point = float(statistic(*(np.arange(len(names)) for names in groups)))
    result = bootstrap(
        tuple(np.arange(len(m)) for m in members),
        on_groups,
        n_resamples=resamples,
        vectorized=False,
        paired=False,
        method=method,
        rng=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):  # scipy gives NaN when every resample agrees
        low = high = point
    return [min(low, point), max(high, point)]


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    resamples: int = 1000,
    seed: int = _SEED,
) -> list[float]:
    """Percentile bootstrap over groups of ``statistic(indices)``, a figure of the images at ``indices``
    (repeats allowed): paired, when the statistic compares two models on the same images."""
    if n == 0:
        return [0.0, 0.0]
    codes = _group_codes(groups, n)
    members = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    values = []
    for counts in rng.multinomial(len(sizes), np.full(len(sizes), 1.0 / len(sizes)), size=resamples):
        picked = np.repeat(np.arange(len(sizes)), counts)
        indices = np.concatenate([members[starts[g] : starts[g] + sizes[g]] for g in picked])
        values.append(statistic(indices))
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    point = statistic(np.arange(n))
    if not len(finite):
        return [float(point), float(point)]
    low, high = np.percentile(finite, [2.5, 97.5])
    return [float(min(low, point)), float(max(high, point))]
