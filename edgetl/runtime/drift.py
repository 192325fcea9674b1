"""Drift on the line: a window of production embeddings scored against the reference statistics of a bundle.

Pure numpy (no torch, sklearn or scipy), so it runs inside the lean line runtime. The embeddings are the model's
pooled, L2-normalised backbone features (what :mod:`edgetl.features` computes); the reference is a random sample of
them from the images the model was validated on, plus an RBF bandwidth (the median heuristic) and a typicality floor,
written at build time (:func:`reference_from_embeddings`, :mod:`edgetl.transfer.reference`).

A window gets two figures and the verdict words that ``edgetl gap`` uses:

- the unbiased kernel MMD² between the window and the reference sample, with a permutation p-value;
- the share of window images that are atypical: their mean kernel similarity to the reference sample is below the
  1st percentile of the reference images' own (leave-one-out), about 1 % when nothing moved.

Rule: ``no measurable shift`` when the MMD p-value is at least :data:`ALPHA`; else ``large shift`` when at least
:data:`LARGE_ATYPICAL` of the window is atypical; else ``shift``. The kernel math here is also what ``edgetl gap``
computes its MMD with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

NO_SHIFT = "no measurable shift"
SHIFT = "shift"
LARGE_SHIFT = "large shift"
VERDICTS = (NO_SHIFT, SHIFT, LARGE_SHIFT)
ALPHA = 0.05  # an MMD p-value below this is a shift
LARGE_ATYPICAL = 0.5  # on the line: at least half the window below the reference's 1st typicality percentile
TYPICAL_PERCENTILE = 1.0
REFERENCE_FORMAT = "edgetl-drift-reference-v1"


def squared_distances(a: np.ndarray, b: np.ndarray, *, dtype: type = np.float64) -> np.ndarray:
    """Pairwise squared Euclidean distances (clipped at 0) between the rows of ``a`` and ``b``."""
    a, b = np.asarray(a, dtype), np.asarray(b, dtype)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0).astype(np.float64)


def median_bandwidth(z: np.ndarray, *, max_points: int = 1000, seed: int = 0) -> float:
    """The median heuristic: the median distance between distinct rows of ``z`` (a random subset of them)."""
    z = np.asarray(z)
    if len(z) > max_points:
        z = z[np.random.default_rng(seed).choice(len(z), max_points, replace=False)]
    sq = squared_distances(z, z)[np.triu_indices(len(z), k=1)]
    positive = sq[sq > 0]
    return float(np.sqrt(np.median(positive))) if len(positive) else 1.0


def rbf(sq: np.ndarray, bandwidth: float) -> np.ndarray:
    """The RBF kernel ``exp(-d² / (2 bandwidth²))`` of squared distances."""
    return np.exp(-np.asarray(sq) / (2.0 * bandwidth * bandwidth))


def mmd2_from_kernel(kernel: np.ndarray, in_x: np.ndarray) -> np.ndarray:
    """Unbiased MMD² between the rows marked in ``in_x`` and the others, from the pooled kernel matrix.

    ``in_x`` is a boolean mask (n,) or one mask per column (n, p): then p statistics come out at the cost of one
    matrix product (how the permutations are computed). The kernel's diagonal must be 1 (an RBF kernel).
    """
    s = np.asarray(in_x, np.float64)
    single = s.ndim == 1
    s = s[:, None] if single else s
    rows = kernel.sum(1)
    total = float(rows.sum())
    ks = kernel @ s
    m = s.sum(0)
    n = len(kernel) - m
    xx = (s * ks).sum(0)
    xy = rows @ s - xx
    yy = total - 2.0 * (rows @ s) + xx
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (xx - m) / (m * (m - 1)) + (yy - n) / (n * (n - 1)) - 2.0 * xy / (m * n)
    return np.asarray(value[0] if single else value)


@dataclass(frozen=True)
class DriftReference:
    """What a bundle carries to score drift: reference embeddings, the bandwidth, the typicality floor."""

    sample: np.ndarray
    bandwidth: float
    typical_floor: float
    info: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def sample_kernel(self) -> np.ndarray:
        """The kernel matrix of the sample, computed once per loaded reference."""
        kernel = rbf(squared_distances(self.sample, self.sample, dtype=np.float32), self.bandwidth)
        np.fill_diagonal(kernel, 1.0)  # exactly: the unbiased MMD removes a diagonal of ones
        return kernel

    def save(self, path: Path) -> None:
        """Write an ``.npz`` (no pickles: loads with ``allow_pickle=False``)."""
        with open(path, "wb") as handle:
            np.savez(
                handle,
                format=np.array(REFERENCE_FORMAT),
                sample=self.sample.astype(np.float32),
                bandwidth=np.array(self.bandwidth),
                typical_floor=np.array(self.typical_floor),
                info=np.array(json.dumps(self.info, sort_keys=True)),
            )

    @classmethod
    def load(cls, path: Path) -> DriftReference:
        """Read a reference written by :meth:`save`.

        Raises:
            ValueError: the file is not an edgetl drift reference.
        """
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data.files or str(data["format"]) != REFERENCE_FORMAT:
                raise ValueError(f"{path} is not an edgetl drift reference ({REFERENCE_FORMAT})")
            return cls(
                sample=np.asarray(data["sample"], np.float32),
                bandwidth=float(data["bandwidth"]),
                typical_floor=float(data["typical_floor"]),
                info=json.loads(str(data["info"])),
            )


@dataclass(frozen=True)
class DriftScore:
    """One window's figures and verdict."""

    images: int
    mmd2: float
    p_value: float
    atypical_share: float
    verdict: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "mmd2": self.mmd2,
            "p_value": self.p_value,
            "atypical_share": self.atypical_share,
            "verdict": self.verdict,
            "seconds": self.seconds,
            "rule": RULE,
        }


RULE = (
    f"{NO_SHIFT}: MMD permutation p >= {ALPHA}; {LARGE_SHIFT}: p < {ALPHA} and at least {LARGE_ATYPICAL:.0%} of the "
    f"window below the reference's {TYPICAL_PERCENTILE:g}st typicality percentile; {SHIFT}: otherwise"
)


def reference_from_embeddings(
    embeddings: np.ndarray, *, sample_size: int = 256, seed: int = 0, info: dict[str, Any] | None = None
) -> DriftReference:
    """Reference statistics from the embeddings of the images the model was validated on.

    Keeps a random ``sample_size`` of them; the bandwidth is the median heuristic on that sample and the floor the
    1st percentile of each sample image's mean similarity to the others (leave-one-out).
    """
    z = np.asarray(embeddings, np.float32)
    if len(z) < 10:
        raise ValueError(f"a drift reference needs at least 10 embeddings, got {len(z)}")
    rng = np.random.default_rng(seed)
    sample = z[np.sort(rng.choice(len(z), min(sample_size, len(z)), replace=False))]
    bandwidth = median_bandwidth(sample, seed=seed)
    kernel = rbf(squared_distances(sample, sample), bandwidth)
    loo = (kernel.sum(1) - 1.0) / (len(sample) - 1)
    floor = float(np.percentile(loo, TYPICAL_PERCENTILE))
    return DriftReference(sample=sample, bandwidth=bandwidth, typical_floor=floor, info=dict(info or {}))


def score_window(
    reference: DriftReference, window: np.ndarray, *, permutations: int = 200, seed: int = 0
) -> DriftScore:
    """Score a window of production embeddings (n, d) against the reference; see the module rule."""
    t0 = time.perf_counter()
    w = np.asarray(window, np.float32)
    if w.ndim != 2 or w.shape[1] != reference.sample.shape[1]:
        raise ValueError(f"window must be (n, {reference.sample.shape[1]}) embeddings, got {w.shape}")
    if len(w) < 2:
        raise ValueError("a drift window needs at least 2 images")
    m = len(reference.sample)
    cross = rbf(squared_distances(w, reference.sample, dtype=np.float32), reference.bandwidth)
    inner = rbf(squared_distances(w, w, dtype=np.float32), reference.bandwidth)
    np.fill_diagonal(inner, 1.0)
    kernel = np.block([[reference.sample_kernel, cross.T], [cross, inner]])
    in_window = np.zeros(len(kernel), bool)
    in_window[m:] = True
    observed = float(mmd2_from_kernel(kernel, in_window))
    rng = np.random.default_rng(seed)
    masks = np.zeros((len(kernel), permutations), bool)
    for p in range(permutations):
        masks[rng.permutation(len(kernel))[: len(w)], p] = True
    null = mmd2_from_kernel(kernel, masks)  # one matrix product for every permutation
    p_value = float((1 + np.sum(null >= observed)) / (1 + permutations))
    typicality = cross.mean(1)
    atypical = float(np.mean(typicality < reference.typical_floor))
    verdict = NO_SHIFT if p_value >= ALPHA else LARGE_SHIFT if atypical >= LARGE_ATYPICAL else SHIFT
    return DriftScore(
        images=len(w),
        mmd2=observed,
        p_value=p_value,
        atypical_share=atypical,
        verdict=verdict,
        seconds=time.perf_counter() - t0,
    )
