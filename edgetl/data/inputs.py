"""A split's images as model inputs, preprocessed by the deploy-time code."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgetl.data.dataset import Dataset


def split_inputs(
    dataset: Dataset, spec: Any, split: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Deploy-time preprocessed images of one split: (inputs, class indices, file names)."""
    from edgetl.preprocess import preprocess_file

    samples = dataset.split(split)[:limit]
    x = np.concatenate([preprocess_file(s.path, spec) for s in samples])
    y = np.array([dataset.label_index(s) for s in samples])
    return x, y, [s.path.name for s in samples]
