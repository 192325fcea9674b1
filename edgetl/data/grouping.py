"""Which images show the same physical part: groups that a split never cuts.

Sources, strongest first:

1. a manifest's ``group`` column (rows that fill it);
2. ``data.group_pattern``: a regular expression searched in each image's path relative to the data root, whose
   first capture group names the part (e.g. ``r"(SN\\d+)_"`` for a serial number in the file name);
3. automatic links between the remaining images (``data.grouping: auto``):
   - near-identical pixels: perceptual hashes at most ``data.near_duplicate_bits`` apart;
   - the same part under another exposure or gain, which a pixel hash misses: mutual nearest neighbours in the
     pooled, L2-normalised features of the pretrained MobileNetV2, kept only when the pair is at least as similar
     as the data set's own images are to re-exposed copies of themselves (a threshold measured on this data, not
     a fixed cosine).

Automatic links join groups in order of strength and never grow a group past ``data.max_group_size``; they may
attach an image to a named group but never merge two named groups (that pair is counted as a conflict instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.data.dataset import DataError, Sample

# Re-exposed copies used to measure how similar one part's shots are: (gamma, gain) pairs.
_VARIANTS = ((0.5, 1.0), (2.0, 1.0), (1.0, 0.55), (1.0, 1.5), (0.75, 1.3), (1.4, 0.7), (1.6, 1.4), (0.6, 0.6))
_CALIBRATION_IMAGES = 96
_EMBED_SIDE = 160


@dataclass
class GroupingResult:
    """Group name per sample and what was linked."""

    groups: list[str]
    stats: dict[str, object] = field(default_factory=dict)


class _Groups:
    """Union-find over sample indices; a root remembers its size and whether a user named it."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n
        self.named = [False] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int, *, cap: int | None) -> str:
        """Join the groups of i and j; returns 'joined', 'same', 'conflict' or 'capped'."""
        a, b = self.find(i), self.find(j)
        if a == b:
            return "same"
        if self.named[a] and self.named[b]:
            return "conflict"
        if cap is not None and not (self.named[a] or self.named[b]) and self.size[a] + self.size[b] > cap:
            return "capped"
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        self.named[a] = self.named[a] or self.named[b]
        return "joined"


def pattern_groups(samples: Sequence[Sample], root: Path, pattern: str) -> list[str]:
    """The part name of each sample from ``pattern``'s first capture group.

    Raises:
        DataError: the pattern is not a valid regular expression, has no capture group, or misses images.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"data.group_pattern {pattern!r} is not a valid regular expression ({exc}).") from exc
    if regex.groups < 1:
        raise DataError(
            f"data.group_pattern {pattern!r} has no capture group; put the part's name in parentheses, "
            r"e.g. '(SN\d+)_'."
        )
    names, missed = [], []
    for s in samples:
        try:
            rel = Path(s.path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            rel = Path(s.path).as_posix()
        match = regex.search(rel)
        if match is None or not match.group(1):
            missed.append(rel)
            names.append("")
        else:
            names.append(match.group(1))
    if missed:
        listing = "\n".join(f"  {m}" for m in missed[:10])
        more = f"\n  ... and {len(missed) - 10} more" if len(missed) > 10 else ""
        raise DataError(
            f"data.group_pattern {pattern!r} finds no part name in {len(missed)} of {len(samples)} image paths:\n"
            f"{listing}{more}\nFix the pattern, or give these images a group in a manifest."
        )
    return names


def mutual_neighbours(features: np.ndarray, *, k: int, block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with i < j where each is among the other's ``k`` nearest neighbours."""
    n = len(features)
    if n < 2:
        return []
    k = min(k, n - 1)
    top = np.zeros((n, k), dtype=np.int64)
    sims = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, block):
        s = features[start : start + block] @ features.T
        rows = np.arange(s.shape[0])
        s[rows, start + rows] = -np.inf
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top[start : start + block] = idx
        sims[start : start + block] = np.take_along_axis(s, idx, axis=1)
    neighbours = [set(row.tolist()) for row in top]
    pairs = []
    for i in range(n):
        for j, sim in zip(top[i].tolist(), sims[i].tolist(), strict=True):
            if i < j and i in neighbours[j]:
                pairs.append((i, j, float(sim)))
    return pairs


def same_part_threshold(
    embed: Callable[[list[np.ndarray]], np.ndarray], images: list[np.ndarray], *, quantile: float = 0.05
) -> float:
    """Cosine similarity that re-exposed copies of this data set's images reach (a low quantile of them).

    ``images`` are uint8 (H, W) grey pixels; each gets gamma and gain variants (``_VARIANTS``), and the similarity
    of every variant to its original is measured with ``embed``.
    """
    originals, variants = [], []
    for image in images:
        x = image.astype(np.float32) / 255.0
        originals.append(image)
        for gamma, gain in _VARIANTS:
            variants.append(np.clip(255.0 * gain * x**gamma, 0, 255).round().astype(np.uint8))
    base = embed(originals)
    shifted = embed(variants).reshape(len(images), len(_VARIANTS), -1)
    cos = np.einsum("nd,nvd->nv", base, shifted)
    return float(np.quantile(cos, quantile))


def group_samples(
    samples: Sequence[Sample],
    *,
    named: Sequence[str],
    hash_pairs: Sequence[tuple[int, int, int]],
    embedding_pairs: Sequence[tuple[int, int, float]],
    max_group_size: int,
) -> GroupingResult:
    """Union the named groups, then the hash links, then the embedding links (strongest first, capped)."""
    n = len(samples)
    forest = _Groups(n)
    first_of: dict[str, int] = {}
    for i, name in enumerate(named):
        if name:
            forest.named[i] = True
            if name in first_of:
                forest.join(first_of[name], i, cap=None)
            else:
                first_of[name] = i
    outcome: dict[str, dict[str, int]] = {}
    linked = np.zeros(n, dtype=bool)
    for kind, pairs in (
        ("hash", sorted(hash_pairs, key=lambda p: p[2])),
        ("embedding", sorted(embedding_pairs, key=lambda p: -p[2])),
    ):
        counts = {"joined": 0, "same": 0, "conflict": 0, "capped": 0}
        for i, j, _ in pairs:
            result = forest.join(i, j, cap=max_group_size)
            counts[result] += 1
            if result == "joined":
                linked[i] = linked[j] = True
        outcome[kind] = counts
    roots = [forest.find(i) for i in range(n)]
    root_name: dict[int, str] = {}
    for i, name in enumerate(named):
        if name:
            root_name.setdefault(roots[i], name)
    auto_ids: dict[int, str] = {}
    groups = [root_name.get(r) or auto_ids.setdefault(r, f"auto-{len(auto_ids) + 1:05d}") for r in roots]
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    return GroupingResult(
        groups=groups,
        stats={
            "groups": len(sizes),
            "largest_group": int(sizes.max()) if len(sizes) else 0,
            "images_in_shared_groups": int(sizes[sizes > 1].sum()),
            "named_images": int(sum(1 for x in named if x)),
            "auto_linked_images": int(linked.sum()),
            "links": outcome,
            "max_group_size": max_group_size,
        },
    )


def _thumbnails(samples: Sequence[Sample], side: int, threads: int) -> list[np.ndarray]:
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from edgetl.preprocess import decode_image

    def load(s: Sample) -> np.ndarray:
        image = decode_image(s.path).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(load, samples))


def embedding_links(
    samples: Sequence[Sample], *, neighbours: int, threads: int = 4, seed: int = 0
) -> tuple[list[tuple[int, int, float]], dict[str, object]]:
    """Mutual-nearest-neighbour pairs at least as similar as re-exposed copies of one image, and the facts.

    Returns no pairs (and says why) when torchvision's MobileNetV2 weights are not on this machine.
    """
    from edgetl.features import imagenet_embedder

    embed = imagenet_embedder(side=_EMBED_SIDE)
    if embed is None:
        return [], {"used": False, "reason": "MobileNetV2 ImageNet weights not found; grouped by pixel hash only"}
    thumbs = _thumbnails(samples, _EMBED_SIDE, threads)
    features = embed(thumbs)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(thumbs), size=min(_CALIBRATION_IMAGES, len(thumbs)), replace=False)
    threshold = same_part_threshold(embed, [thumbs[i] for i in sorted(pick.tolist())])
    candidates = mutual_neighbours(features, k=neighbours)
    pairs = [p for p in candidates if p[2] >= threshold]
    return pairs, {
        "used": True,
        "model": "mobilenet_v2 ImageNet, pooled features, L2-normalised",
        "input_side": _EMBED_SIDE,
        "neighbours": neighbours,
        "same_part_threshold": round(threshold, 4),
        "mutual_pairs": len(candidates),
        "pairs_above_threshold": len(pairs),
    }
