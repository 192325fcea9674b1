"""How far two sets of embeddings are apart, with the uncertainty of each figure and a verdict in plain words.

Three figures, each answering the question differently:

- **kernel MMD²** (unbiased, RBF kernel with the median-heuristic bandwidth on the pooled sets), with a permutation
  p-value (scipy's ``permutation_test``) that moves whole groups, so several shots of one part count once;
- **Frechet distance** between Gaussians fitted to a PCA-reduced embedding: a few hundred images make the full
  covariance of 1280 features singular, so the PCA is fitted on the reference and keeps at most a tenth as many
  dimensions as the smaller set has images (and at most 64); with a group-bootstrap interval and the distance between
  two random halves of the reference as its floor at this sample size;
- **classifier two-sample test**: the cross-validated ROC-AUC (group k-fold) of a logistic regression on the top 64
  principal components (fitted within each fold) telling new images from reference ones, with a group-bootstrap
  interval; 0.5 means indistinguishable.

The verdict (:data:`RULE`): ``no measurable shift`` when the MMD p-value is at least 0.05; ``large shift`` when it
is below and the classifier's AUC interval starts at 0.8 or more; ``shift`` otherwise.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgetl.bench.intervals import group_bootstrap_interval
from edgetl.runtime.drift import (
    ALPHA,
    LARGE_SHIFT,
    NO_SHIFT,
    SHIFT,
    median_bandwidth,
    mmd2_from_kernel,
    rbf,
    squared_distances,
)

LARGE_AUC = 0.8
MAX_FRECHET_DIM = 64
RULE = (
    f"{NO_SHIFT}: MMD permutation p >= {ALPHA}; {LARGE_SHIFT}: p < {ALPHA} and the classifier two-sample ROC-AUC's "
    f"95 % interval starts at {LARGE_AUC} or more; {SHIFT}: otherwise"
)


def _codes(groups: Any, n: int, prefix: str) -> np.ndarray:
    """Group names made distinct per side (a name on both sides is two groups)."""
    names = np.arange(n).astype(str) if groups is None else np.asarray(groups, dtype=str)
    return np.char.add(prefix, names)


def _members(codes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    unique, inverse = np.unique(codes, return_inverse=True)
    return unique, [np.flatnonzero(inverse == g) for g in range(len(unique))]


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups_x: Any = None,
    groups_y: Any = None,
    permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Unbiased RBF MMD² of x against y and its permutation p-value (whole groups move)."""
    from scipy.stats import permutation_test

    pooled = np.concatenate([x, y])
    bandwidth = median_bandwidth(pooled, seed=seed)
    kernel = rbf(squared_distances(pooled, pooled), bandwidth)
    codes = np.concatenate([_codes(groups_x, len(x), "x:"), _codes(groups_y, len(y), "y:")])
    unique, group_of = np.unique(codes, return_inverse=True)
    side = np.char.startswith(unique, "y:").astype(int)

    def statistic(gx: np.ndarray, gy: np.ndarray) -> float:
        return float(mmd2_from_kernel(kernel, np.isin(group_of, gx)))

    index = np.arange(len(unique))
    result = permutation_test(
        (index[side == 0], index[side == 1]),
        statistic,
        permutation_type="independent",
        vectorized=False,
        n_resamples=permutations,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    null = np.asarray(result.null_distribution)
    return {
        "mmd2": float(result.statistic),
        "p_value": float(result.pvalue),
        "null_95th": float(np.percentile(null, 95)),
        "bandwidth": bandwidth,
        "permutations": permutations,
        "groups": [int((side == 0).sum()), int((side == 1).sum())],
    }


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.linalg import sqrtm

    mu = a.mean(0) - b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on nearly singular products; the real part is the answer
        root = sqrtm(ca @ cb)
    return float(mu @ mu + np.trace(ca) + np.trace(cb) - 2.0 * np.real(np.trace(root)))


def frechet_dimension(n_reference: int, n_new: int) -> int:
    """The PCA dimension: a tenth of the smaller set's images, between 2 and :data:`MAX_FRECHET_DIM`."""
    return int(max(2, min(MAX_FRECHET_DIM, min(n_reference, n_new) // 10)))


def frechet_pca(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups_x: Any = None,
    groups_y: Any = None,
    dim: int | None = None,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Frechet distance of y from x in a PCA of x, its group-bootstrap interval and the split-half floor of x."""
    from sklearn.decomposition import PCA

    d = min(dim or frechet_dimension(len(x), len(y)), len(x) - 1, x.shape[1])
    pca = PCA(n_components=d, random_state=seed).fit(x)
    px, py = pca.transform(x), pca.transform(y)
    distance = _frechet(px, py)
    cx, cy = _codes(groups_x, len(x), "x:"), _codes(groups_y, len(y), "y:")
    # The plug-in distance is biased upwards, and more so on a bootstrap resample: the basic bootstrap corrects
    # the interval for that shift (clipped at 0).
    interval = group_bootstrap_interval(
        lambda i, j: _frechet(px[i], py[j]), cx, cy, resamples=resamples, seed=seed, method="basic"
    )
    if interval is not None:
        interval = [max(0.0, interval[0]), interval[1]]
    return {
        "distance": distance,
        "interval": interval,
        "dim": int(d),
        "explained_variance": float(pca.explained_variance_ratio_.sum()),
        "reference_split_half": _split_half(x, cx, d, seed),
    }


def _split_half(x: np.ndarray, codes: np.ndarray, dim: int, seed: int) -> float | None:
    """The same distance between two random halves of the reference (by group), the PCA fitted on the first:
    what sampling alone gives at half this size (an upper floor)."""
    from sklearn.decomposition import PCA

    _, members = _members(codes)
    if len(members) < 8:
        return None
    order = np.random.default_rng(seed).permutation(len(members))
    a = x[np.concatenate([members[g] for g in order[: len(order) // 2]])]
    b = x[np.concatenate([members[g] for g in order[len(order) // 2 :]])]
    d = min(dim, len(a) - 1, len(b) - 1)
    pca = PCA(n_components=d, random_state=seed).fit(a)
    return _frechet(pca.transform(a), pca.transform(b))


def classifier_two_sample(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups_x: Any = None,
    groups_y: Any = None,
    folds: int = 5,
    resamples: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated ROC-AUC of a logistic regression telling y (1) from x (0), with a group-bootstrap interval."""
    from scipy.stats import rankdata
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z = np.concatenate([x, y])
    target = np.concatenate([np.zeros(len(x), int), np.ones(len(y), int)])
    cx, cy = _codes(groups_x, len(x), "x:"), _codes(groups_y, len(y), "y:")
    codes = np.concatenate([cx, cy])
    k = int(min(folds, len(np.unique(cx)), len(np.unique(cy))))
    if k < 2:
        return {"auc": None, "interval": None, "folds": k, "note": "fewer than 2 groups on one side"}
    dims = int(min(MAX_FRECHET_DIM, z.shape[1], len(z) * (k - 1) // k - 1))
    model = make_pipeline(
        StandardScaler(), PCA(n_components=dims, random_state=seed), LogisticRegression(max_iter=2000)
    )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_predict(model, z, target, groups=codes, cv=splitter, method="predict_proba")[:, 1]
    sx, sy = scores[: len(x)], scores[len(x) :]

    def auc(i: np.ndarray, j: np.ndarray) -> float:
        # ROC-AUC as the Mann-Whitney U of the scores (ties count half), without sklearn's per-call checks.
        ranks = rankdata(np.r_[sx[i], sy[j]])
        return float((ranks[len(i) :].sum() - len(j) * (len(j) + 1) / 2) / (len(i) * len(j)))

    return {
        "auc": auc(np.arange(len(x)), np.arange(len(y))),
        "interval": group_bootstrap_interval(auc, cx, cy, resamples=resamples, seed=seed),
        "folds": k,
        "model": f"standardised features, PCA to {dims} dimensions, logistic regression; out-of-fold probabilities",
    }


def verdict(mmd: dict[str, Any], c2st: dict[str, Any]) -> str:
    """The words of :data:`RULE`."""
    if mmd["p_value"] >= ALPHA:
        return NO_SHIFT
    interval = c2st.get("interval")
    return LARGE_SHIFT if interval is not None and interval[0] >= LARGE_AUC else SHIFT


def compare(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups_x: Any = None,
    groups_y: Any = None,
    permutations: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every figure of y against the reference x, and the verdict."""
    kwargs = {"groups_x": groups_x, "groups_y": groups_y, "seed": seed}
    mmd = mmd_test(x, y, permutations=permutations, **kwargs)
    c2st = classifier_two_sample(x, y, **kwargs)
    return {
        "images": [len(x), len(y)],
        "mmd": mmd,
        "frechet": frechet_pca(x, y, **kwargs),
        "c2st": c2st,
        "verdict": verdict(mmd, c2st),
    }
