"""The images of a new station (a folder or a manifest), a run's own images, and their embeddings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.data.dataset import DataError, Sample, read_manifest
from edgetl.preprocess import IMAGE_EXTENSIONS, ImageDecodeError, PreprocessSpec, decode_image, resized_uint8

_LISTED = 10


def read_images(source: Path, *, classes: list[str] | None = None) -> list[Sample]:
    """Samples of a CSV manifest (its labels, groups and slices), or of a folder.

    A folder whose sub-folders are all named after ``classes`` is an ImageFolder (labelled); any other folder is
    read recursively as unlabelled images (label ``""``).

    Raises:
        DataError: the source does not exist or holds no image.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_manifest(source)
    if not source.is_dir():
        raise DataError(
            f"{source} is neither a folder of images nor a CSV manifest (path,label[,group][,slice]); pass one."
        )
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{source} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    subfolders = {p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")}
    labelled = bool(classes) and bool(subfolders) and subfolders <= set(classes or [])
    return [Sample(path=f, label=f.relative_to(source).parts[0] if labelled else "") for f in files]


def load_pixels(samples: list[Sample], spec: PreprocessSpec, *, threads: int = 4) -> np.ndarray:
    """Decode and resize by the spec: uint8 (N, H, W, C), as deployed.

    Raises:
        DataError: some files cannot be decoded (each listed with its reason).
    """

    def one(sample: Sample) -> np.ndarray | str:
        try:
            return resized_uint8(decode_image(sample.path), spec)
        except ImageDecodeError as exc:
            return f"{sample.path}: {exc}"

    with ThreadPoolExecutor(max_workers=threads) as pool:
        out = list(pool.map(one, samples))
    bad = [o for o in out if isinstance(o, str)]
    if bad:
        more = f"\n  ... and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
        raise DataError(f"{len(bad)} images cannot be used:\n  " + "\n  ".join(bad[:_LISTED]) + more)
    if not out:
        return np.zeros((0, spec.input_size, spec.input_size, spec.channels), np.uint8)
    return np.stack([o for o in out if not isinstance(o, str)])


def embed(model: Any, spec: PreprocessSpec, pixels: np.ndarray) -> np.ndarray:
    """Pooled, L2-normalised features of ``model``'s backbone (its blocks + global average pooling), in ONNX
    Runtime, of uint8 images already at the spec's side."""
    from edgetl.features import embedder_from_model

    return embedder_from_model(model, spec)(list(pixels))


def subsample_groups(samples: list[Sample], limit: int | None, *, seed: int = 0) -> list[Sample]:
    """At most ``limit`` samples, drawn as whole groups in a seeded random order (all of them when fewer)."""
    if limit is None or len(samples) <= limit:
        return list(samples)
    names = [s.group or f"image-{i}" for i, s in enumerate(samples)]
    unique = sorted(set(names))
    order = np.random.default_rng(seed).permutation(len(unique))
    chosen: set[str] = set()
    count = 0
    sizes = {g: names.count(g) for g in unique}
    for g in order:
        name = unique[int(g)]
        if count + sizes[name] > limit and count:
            continue
        chosen.add(name)
        count += sizes[name]
        if count >= limit:
            break
    return [s for s, name in zip(samples, names, strict=True) if name in chosen]


def group_names(samples: list[Sample]) -> np.ndarray:
    """The group of each sample (its own path when it has none)."""
    return np.array([s.group or f"image:{s.path}" for s in samples], dtype=str)
