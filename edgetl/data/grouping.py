"""Which images show the same physical part: groups that a split never cuts.

Sources, strongest first:

1. a manifest's ``group`` column (rows that fill it);
2. ``data.group_pattern``: a regular expression searched in each image's path relative to the data root, whose
   first capture group names the part (e.g. ``r"(SN\\d+)_"`` for a serial number in the file name);
3. automatic links between the remaining images (``data.grouping: auto``):
   - near-identical pixels: perceptual hashes at most ``data.near_duplicate_bits`` apart;
   - the same part under another exposure or gain, which a pixel hash misses: mutual nearest neighbours in the
     pooled, L2-normalised features of the pretrained MobileNetV2, kept only when the pair stands out from both
     images' background (their similarity to a stranger: the neighbour just past the largest group) by at least
     the margin by which re-exposed copies of this data set's own images stand out from theirs (its lower
     quartile). The margin is measured on the data, not a fixed cosine; where re-exposed copies hardly stand out
     (they close less than a quarter of the gap between a stranger and the image itself: every image looks alike
     to the network), the features cannot tell parts apart and add no link.

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
# Re-exposed copies must close at least this share of the stranger-to-self gap for feature links to count.
_MIN_STAND_OUT = 0.25


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


def mutual_neighbours(
    features: np.ndarray, *, k: int, background: int | None = None, block: int = 1024
) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    """Pairs (i, j, cosine), i < j, where each is among the other's ``k`` nearest neighbours, and every image's
    similarity to its ``background``-th nearest neighbour (default ``k``)."""
    n = len(features)
    if n < 2:
        return [], np.zeros(n, dtype=np.float32)
    k = min(k, n - 1)
    far = min(max(background or k, k), n - 1)
    top = np.zeros((n, k), dtype=np.int64)
    sims = np.zeros((n, k), dtype=np.float32)
    floor = np.zeros(n, dtype=np.float32)
    for start in range(0, n, block):
        s = features[start : start + block] @ features.T
        rows = np.arange(s.shape[0])
        s[rows, start + rows] = -np.inf
        order = np.argsort(-s, axis=1)[:, :far]
        idx = order[:, :k]
        top[start : start + block] = idx
        sims[start : start + block] = np.take_along_axis(s, idx, axis=1)
        floor[start : start + block] = np.take_along_axis(s, order[:, far - 1 : far], axis=1)[:, 0]
    neighbours = [set(row.tolist()) for row in top]
    pairs = []
    for i in range(n):
        for j, sim in zip(top[i].tolist(), sims[i].tolist(), strict=True):
            if i < j and i in neighbours[j]:
                pairs.append((i, j, float(sim)))
    return pairs, floor


def reexposed_similarity(embed: Callable[[list[np.ndarray]], np.ndarray], images: list[np.ndarray]) -> np.ndarray:
    """Cosine similarity of each image to gamma and gain variants of itself (``_VARIANTS``): (images, variants).

    ``images`` are uint8 pixels; the variants are what another exposure of the same part could look like.
    """
    originals, variants = [], []
    for image in images:
        x = image.astype(np.float32) / 255.0
        originals.append(image)
        for gamma, gain in _VARIANTS:
            variants.append(np.clip(255.0 * gain * x**gamma, 0, 255).round().astype(np.uint8))
    base = embed(originals)
    shifted = embed(variants).reshape(len(images), len(_VARIANTS), -1)
    return np.asarray(np.einsum("nd,nvd->nv", base, shifted))


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
    samples: Sequence[Sample], *, neighbours: int, background: int, threads: int = 4, seed: int = 0
) -> tuple[list[tuple[int, int, float]], dict[str, object]]:
    """Mutual nearest neighbours that stand out from their background as much as re-exposed copies do.

    ``background`` is the rank of the neighbour taken as a stranger (the largest group size plus one). Returns no
    pairs, and says why, when torchvision's MobileNetV2 weights are not here or the embedding cannot tell this
    data set's parts apart.
    """
    from edgetl.features import imagenet_embedder

    embed = imagenet_embedder(side=_EMBED_SIDE)
    if embed is None:
        return [], {"used": False, "reason": "MobileNetV2 ImageNet weights not found; grouped by pixel hash only"}
    thumbs = _thumbnails(samples, _EMBED_SIDE, threads)
    features = embed(thumbs)
    candidates, floor = mutual_neighbours(features, k=neighbours, background=background)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(thumbs), size=min(_CALIBRATION_IMAGES, len(thumbs)), replace=False))
    copies = reexposed_similarity(embed, [thumbs[i] for i in pick.tolist()]) - floor[pick][:, None]
    # How far a re-exposed copy stands out from a stranger, as a share of the gap between a stranger and the image
    # itself: near 0 when every image looks alike to the network (the features cannot tell parts apart).
    stand_out = float(np.median(copies) / max(float(np.median(1.0 - floor[pick])), 1e-6))
    margin = float(np.quantile(copies, 0.25))
    facts: dict[str, object] = {
        "model": "mobilenet_v2 ImageNet, pooled features, L2-normalised",
        "input_side": _EMBED_SIDE,
        "neighbours": neighbours,
        "background_rank": background,
        "reexposed_margin": round(margin, 4),
        "reexposed_stand_out": round(stand_out, 3),
        "mutual_pairs": len(candidates),
    }
    if stand_out < _MIN_STAND_OUT or margin <= 0:
        facts.update(
            used=False,
            pairs_linked=0,
            reason=f"re-exposed copies of these images are hardly closer to them than strangers are (they close "
            f"{100 * stand_out:.0f} % of the gap, {100 * _MIN_STAND_OUT:.0f} % needed), so pretrained features "
            "cannot tell parts apart here; grouped by pixel hash only (give a group column or data.group_pattern "
            "if several images show one part)",
        )
        return [], facts
    pairs = [(i, j, s) for i, j, s in candidates if s - max(floor[i], floor[j]) >= margin]
    facts.update(used=True, pairs_linked=len(pairs))
    return pairs, facts
