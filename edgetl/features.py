"""Pooled, L2-normalised backbone features of images: what grouping, the domain gap and drift compare.

Computed in ONNX Runtime from a frozen torchvision backbone (the whole feature extractor plus global average
pooling), in batches, from uint8 pixels resized by the given preprocessing spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgetl.preprocess import PreprocessSpec, normalize

Embedder = Callable[[Sequence[np.ndarray]], np.ndarray]


def embedder_from_model(model: object, spec: PreprocessSpec, *, batch: int = 32) -> Embedder:
    """A function mapping uint8 (H, W, C) images of ``spec``'s side to L2-normalised pooled features."""
    from edgetl.prefix import prefix_runner

    blocks = model.blocks  # type: ignore[attr-defined]
    run = prefix_runner(model, len(blocks), spec, "onnxruntime")  # type: ignore[arg-type]

    def embed(images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch):
            chunk = np.stack([_fit(im, spec) for im in images[start : start + batch]])
            out.append(run(normalize(chunk, spec)))
        features = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1), np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return np.asarray(features / np.maximum(norms, 1e-12), dtype=np.float32)

    return embed


def _fit(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) at any size -> (side, side, spec.channels) with Pillow's bilinear filter."""
    from PIL import Image

    array = image if image.ndim == 3 else image[:, :, None]
    if array.shape[2] != spec.channels:
        array = (
            np.repeat(array[:, :, :1], spec.channels, axis=2) if spec.channels == 3 else array.mean(2, keepdims=True)
        )
    side = spec.input_size
    if array.shape[:2] != (side, side):
        mode = "L" if array.shape[2] == 1 else "RGB"
        pil = Image.fromarray(array.astype(np.uint8).squeeze(2) if mode == "L" else array.astype(np.uint8), mode)
        array = np.asarray(pil.resize((side, side), Image.Resampling.BILINEAR))
        array = array[:, :, None] if array.ndim == 2 else array
    return array.astype(np.uint8)


def imagenet_embedder(*, side: int = 160) -> Embedder | None:
    """Features of torchvision's ImageNet MobileNetV2 (RGB input), or None when its weights are not here."""
    from edgetl.models import WeightsError, build_classifier, resolve_weights

    try:
        weights, _ = resolve_weights("mobilenet_v2")
    except WeightsError:
        return None
    model = build_classifier("mobilenet_v2", 2, weights_file=weights).eval()
    return embedder_from_model(model, PreprocessSpec.for_channels(3, input_size=side))
