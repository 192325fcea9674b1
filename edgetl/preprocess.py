"""The one preprocessing spec, build side: the numpy/Pillow code lives in :mod:`edgetl.runtime.preprocess` (the
line runtime imports no torch) and is re-exported here beside the torch and torchvision helpers of training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgetl.runtime.preprocess import (
    FORMATS_READ,
    GRAY_MEAN,
    GRAY_STD,
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecodeError,
    PreprocessSpec,
    canonical_image,
    decode_image,
    image_from_array,
    letterbox,
    model_input,
    normalize,
    preprocess_file,
    resized_uint8,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORMATS_READ",
    "GRAY_MEAN",
    "GRAY_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "ImageDecodeError",
    "PreprocessSpec",
    "canonical_image",
    "decode_image",
    "image_from_array",
    "letterbox",
    "model_input",
    "normalize",
    "preprocess_file",
    "resized_uint8",
    "torch_normalize",
    "torchvision_transform",
]


def torch_normalize(batch_nchw_uint8: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 NCHW torch tensor -> normalised float32, identical to :func:`normalize`."""
    import torch

    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (batch_nchw_uint8.to(torch.float32) / 255.0 - mean) / std


def torchvision_transform(spec: PreprocessSpec) -> Any:
    """The same preprocessing as a torchvision ``v2`` transform on a decoded PIL image."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Lambda(lambda im: im.convert("L" if spec.channels == 1 else "RGB")),
            v2.Lambda(lambda im: letterbox(im, spec.input_size))
            if spec.resize == "letterbox"
            else v2.Resize((spec.input_size, spec.input_size), interpolation=v2.InterpolationMode.BILINEAR),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=spec.mean, std=spec.std),
        ]
    )
