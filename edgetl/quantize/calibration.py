"""Calibration set: a stratified sample of the training split, preprocessed exactly as at deploy time.

The images are stored as the model's uint8 pixels (resized, channels converted; N, H, W, C), a quarter of the
bytes of float32 tensors, and normalised by the same code as at deploy time when the set is loaded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.data.dataset import Dataset
from edgetl.errors import IntegrityError, MissingInputError
from edgetl.files import atomic_path, read_json, sha256_file, write_json_atomic
from edgetl.preprocess import PreprocessSpec, decode_image, normalize, resized_uint8

TENSORS = "calib.npy"
MANIFEST = "manifest.json"
# What calib.npy holds: the model's pixels before normalisation (runs made before this held float32 NCHW tensors).
PIXELS = "uint8 NHWC pixels, normalised on load"


@dataclass
class CalibrationSet:
    """Preprocessed calibration inputs (N, C, H, W) float32 and their manifest; ``folder``: where they are kept
    (histogram calibration keeps its counts there), None for a set made in memory."""

    tensors: np.ndarray
    manifest: dict[str, Any]
    folder: Path | None = None

    def __len__(self) -> int:
        return len(self.tensors)

    def batches(self) -> list[np.ndarray]:
        """One (1, C, H, W) array per image: the shape of a batch-1 model's input."""
        return [self.tensors[i : i + 1] for i in range(len(self.tensors))]


def ranges_file(folder: Path, method: str) -> Path:
    """The activation-range cache of one calibration method in ``folder`` (onnxruntime's calibration cache)."""
    return folder / f"{method}.json"


# With a validation split too small to gate INT8 on its own, the gate also reads the training images outside the
# calibration set: the calibration then takes at most half of the training split (and at least this many images).
_GATE_SHARE_FLOOR = 32


def calibration_count(dataset: Dataset, samples: int) -> int:
    """How many training images calibrate: ``samples`` (all if fewer), or at most half the training split when
    dataset.json says the validation split is too small to trust on its own, so the INT8 gate keeps the rest."""
    train = sum(1 for s in dataset.samples if s.split == "train")
    validation = dataset.info.get("validation")
    if isinstance(validation, dict) and not validation.get("adequate", True):
        return min(samples, train, max(train // 2, _GATE_SHARE_FLOOR))
    return min(samples, train)


def select_calibration(dataset: Dataset, samples: int, seed: int) -> list[int]:
    """Indices (into dataset.samples) of a stratified sample of :func:`calibration_count` training images."""
    train = [i for i, s in enumerate(dataset.samples) if s.split == "train"]
    samples = calibration_count(dataset, samples)
    if samples >= len(train):
        return train
    from sklearn.model_selection import train_test_split

    labels = [dataset.samples[i].label for i in train]
    try:
        chosen, _ = train_test_split(train, train_size=samples, stratify=labels, random_state=seed)
    except ValueError:  # a class with a single training image cannot be stratified: a plain random sample
        chosen, _ = train_test_split(train, train_size=samples, random_state=seed)
    return sorted(int(i) for i in chosen)


def build_calibration(
    dataset: Dataset, spec: PreprocessSpec, out_dir: Path, *, samples: int = 300, seed: int = 0
) -> CalibrationSet:
    """Write out_dir/calib.npy (uint8 pixels) and out_dir/manifest.json (source hashes, counts per class).

    ``samples``: the most images; fewer when the validation split is small (:func:`calibration_count`).
    """
    indices = select_calibration(dataset, samples, seed)
    chosen = [dataset.samples[i] for i in indices]
    pixels = np.stack([resized_uint8(decode_image(s.path), spec) for s in chosen])
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / TENSORS) as tmp, open(tmp, "wb") as handle:
        np.save(handle, pixels)
    tensors = normalize(pixels, spec)
    manifest = {
        "count": len(chosen),
        "requested": samples,
        "seed": seed,
        "split": "train",
        "counts_per_class": dict(Counter(s.label for s in chosen)),
        "preprocess": spec.model_dump(mode="json"),
        "tensor_file": TENSORS,
        "tensor_sha256": sha256_file(out_dir / TENSORS),
        "stored": PIXELS,
        "shape": list(tensors.shape),
        "files": [{"path": s.path.as_posix(), "label": s.label, "sha256": s.sha256} for s in chosen],
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    return CalibrationSet(tensors, manifest, out_dir)


def load_calibration(out_dir: Path) -> CalibrationSet:
    """Read a calibration folder back, checking the pixel file against its manifest; returns normalised tensors."""
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        raise MissingInputError(f"{manifest_path} is missing; run 'edgetl calibrate' (or 'edgetl build') first.")
    manifest = read_json(manifest_path)
    tensor_path = out_dir / manifest["tensor_file"]
    if not tensor_path.is_file():
        raise MissingInputError(
            f"{tensor_path} is missing ('edgetl clean' removes it: it can be rebuilt); "
            f"run 'edgetl calibrate {out_dir.parent}' to write it again."
        )
    if sha256_file(tensor_path) != manifest["tensor_sha256"]:
        raise IntegrityError(f"{tensor_path} does not match {manifest_path}; re-run 'edgetl calibrate'.")
    stored = np.load(tensor_path, allow_pickle=False)
    if stored.dtype == np.uint8:
        stored = normalize(stored, PreprocessSpec.model_validate(manifest["preprocess"]))
    return CalibrationSet(np.ascontiguousarray(stored, dtype=np.float32), manifest, out_dir)


class Feeds:
    """A CalibrationDataReader over a list of input feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._items = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)
