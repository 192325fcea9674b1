"""A split's images as model inputs, preprocessed by the deploy-time code (the line runtime's)."""

from __future__ import annotations

import numpy as np

from edgetl.data.dataset import Dataset
from edgetl.runtime.preprocess import PreprocessSpec, decode_image, model_input, resized_uint8


def split_inputs(
    dataset: Dataset, spec: PreprocessSpec, split: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Deploy-time preprocessed images of one split: (inputs, class indices, file names)."""
    pixels, y, names = split_pixels(dataset, spec, split, limit)
    return model_input(pixels, spec), y, names


def split_pixels(
    dataset: Dataset, spec: PreprocessSpec, split: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Deploy-time resized uint8 pixels (N, H, W, C) of one split (``model_input`` makes any model's input of
    them): (pixels, class indices, file names)."""
    samples = dataset.split(split)[:limit]
    x = np.stack([resized_uint8(decode_image(s.path), spec) for s in samples])
    y = np.array([dataset.label_index(s) for s in samples])
    return x, y, [s.path.name for s in samples]
