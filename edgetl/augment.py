"""Inspection-safe augmentation of uint8 CHW tensors.

Geometric: dihedral turns and flips, a small affine. Photometric, as stations differ: exposure (brightness), contrast,
gamma, focus (Gaussian blur on a third of the views) and sensor noise. Each is switched off by its config value.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from edgetl.config import AugmentConfig


def augment_image(image: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Return one random augmented copy of a uint8 (C, H, W) tensor."""
    out = image
    if config.rot90:
        out = torch.rot90(out, int(rng.integers(4)), dims=(1, 2))
    if config.hflip and rng.random() < 0.5:
        out = torch.flip(out, dims=(2,))
    if config.vflip and rng.random() < 0.5:
        out = torch.flip(out, dims=(1,))
    if config.degrees or config.translate or config.scale:
        side = out.shape[-1]
        shift = [round(rng.uniform(-config.translate, config.translate) * side) for _ in range(2)]
        out = F.affine(
            out,
            angle=float(rng.uniform(-config.degrees, config.degrees)),
            translate=shift,
            scale=float(rng.uniform(1 - config.scale, 1 + config.scale)),
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
        )
    if config.brightness:
        out = F.adjust_brightness(out, float(rng.uniform(1 - config.brightness, 1 + config.brightness)))
    if config.contrast:
        out = F.adjust_contrast(out, float(rng.uniform(1 - config.contrast, 1 + config.contrast)))
    if config.gamma:
        out = F.adjust_gamma(out, float(np.exp(rng.uniform(-1, 1) * np.log1p(config.gamma))))
    if config.blur and rng.random() < 1 / 3:
        sigma = float(rng.uniform(0.1, config.blur))
        out = F.gaussian_blur(out, kernel_size=2 * int(np.ceil(3 * sigma)) + 1, sigma=sigma)
    if config.noise:
        std = float(rng.uniform(0, config.noise)) * 255.0
        noise = torch.from_numpy(rng.normal(0.0, std, size=tuple(out.shape)).astype(np.float32))
        out = (out.to(torch.float32) + noise).round().clamp(0, 255).to(torch.uint8)
    return out


def augment_batch(images: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Augment each image of a uint8 (N, C, H, W) batch with its own random parameters."""
    return torch.stack([augment_image(img, config, rng) for img in images])
