"""The training loop shared by the final fit and every cross-validation fold of the recipe search.

The frozen blocks of a pretrained backbone never change, so their output is computed once per augmented view of
each image (``Views``) and reused by every epoch, fold and trial; a trial that freezes more blocks derives its
inputs from the cache by running the extra frozen blocks once (``deeper``). Strategy ``full`` (no frozen block)
augments the uint8 images on the fly instead.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgetl.augment import augment_batch
from edgetl.config import AugmentConfig, TrainConfig
from edgetl.models import Classifier
from edgetl.preprocess import PreprocessSpec, normalize, torch_normalize


@dataclass
class Views:
    """Network inputs of N images: ``data[v][i]`` is view v of image i after ``blocks[:start]``.

    View 0 is the image as deployed; the others are random augmentations. With ``start == 0`` the views are the
    uint8 (N, C, H, W) images themselves and augmentation happens per batch.
    """

    start: int
    data: list[torch.Tensor]
    pooled: bool = False
    index: np.ndarray | None = None  # the images of data this view set stands for (a fold); None: all

    @property
    def count(self) -> int:
        return len(self.data[0]) if self.index is None else len(self.index)

    def subset(self, index: np.ndarray) -> Views:
        """The same views restricted to ``index`` (no copy)."""
        base = np.arange(len(self.data[0])) if self.index is None else self.index
        return Views(start=self.start, data=self.data, pooled=self.pooled, index=base[np.asarray(index)])

    def base(self) -> torch.Tensor:
        """View 0 (the image as deployed) of the images this set stands for."""
        return self.data[0] if self.index is None else self.data[0][torch.from_numpy(self.index)]


def _batched(
    run: Callable[[np.ndarray], np.ndarray], x_uint8: np.ndarray, spec: PreprocessSpec, batch: int = 32
) -> np.ndarray:
    return np.concatenate([run(normalize(x_uint8[i : i + batch], spec)) for i in range(0, len(x_uint8), batch)])


def cache_views(
    run: Callable[[np.ndarray], np.ndarray] | None,
    start: int,
    images: np.ndarray,
    spec: PreprocessSpec,
    *,
    views: int,
    augment: AugmentConfig,
    rng: np.random.Generator,
    extra: list[Callable[[np.ndarray], np.ndarray]] | None = None,
    advance: Callable[[], None] | None = None,
) -> Views:
    """Views of uint8 (N, H, W, C) ``images`` through the frozen prefix ``run`` (None: start 0, raw images).

    ``extra`` runners add one more augmented view each (e.g. an INT8 copy of the prefix).
    """
    chw = torch.from_numpy(images).permute(0, 3, 1, 2)
    if run is None:
        return Views(start=0, data=[chw])
    data = []
    for v, runner in enumerate([run] * views + list(extra or [])):
        view = chw if v == 0 else augment_batch(chw, augment, rng)
        data.append(torch.from_numpy(_batched(runner, view.permute(0, 2, 3, 1).numpy(), spec)))
        if advance is not None:
            advance()
    return Views(start=start, data=data, pooled=data[0].ndim == 2)


def deeper(model: Classifier, views: Views, start: int, *, batch: int = 64) -> Views:
    """The same views after the frozen blocks ``views.start .. start - 1`` (and pooling when every block is)."""
    if start == views.start:
        return views
    if start < views.start or views.start == 0:
        raise ValueError(f"cannot derive block {start} inputs from a cache at block {views.start}")
    device = next(model.parameters()).device
    blocks = model.blocks[views.start : start].eval()
    pool = start == len(model.blocks)
    out = []
    with torch.inference_mode():
        for tensor in views.data:
            parts = []
            for i in range(0, len(tensor), batch):
                x = blocks(tensor[i : i + batch].to(device))
                parts.append((torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1) if pool else x).cpu())
            out.append(torch.cat(parts))
    return Views(start=start, data=out, pooled=pool, index=views.index)


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """Loss weights against imbalance: None, 1/sqrt(freq) or 1/freq, normalised to mean 1."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = 1.0 / np.maximum(counts, 1.0) ** (0.5 if mode == "sqrt" else 1.0)
    return torch.tensor(weights * num_classes / weights.sum(), dtype=torch.float32)


def param_groups(model: Classifier, start: int, config: TrainConfig, lr: float) -> list[dict[str, Any]]:
    """The head at ``lr``; trained blocks at ``lr * backbone_lr_scale``, decaying towards the input for 'full'."""
    groups: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": lr}]
    for rank, index in enumerate(reversed(range(start, len(model.blocks)))):
        scale = config.backbone_lr_scale * (config.layer_decay**rank if start == 0 else 1.0)
        groups.append({"params": list(model.blocks[index].parameters()), "lr": lr * scale})
    return groups


def set_trainable(model: Classifier, start: int) -> None:
    """Gradients for blocks[start:] and the head only."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in [*model.blocks[start:], model.head]:
        for p in module.parameters():
            p.requires_grad_(True)


def _to_input(x: torch.Tensor, start: int) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 and start > 0 else x


def predict(
    model: Classifier, start: int, x: torch.Tensor, *, spec: PreprocessSpec | None = None, batch: int = 64
) -> torch.Tensor:
    """Logits of ``x`` (cached inputs at ``start``; uint8 images when ``start == 0``), eval mode."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            if start == 0:
                assert spec is not None
                chunk = torch_normalize(chunk, spec)
            out.append(model.forward_from(_to_input(chunk, start).to(device), start).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, model.head.out_features))


@dataclass
class FitResult:
    """Per-epoch history, the chosen epoch and its weights, and (optionally) held-out logits per epoch."""

    history: list[dict[str, float]]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    eval_logits: list[np.ndarray] = field(default_factory=list)
    stopped: str = "epochs"


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    classes = np.unique(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in classes])) if len(classes) else 0.0


def fit(
    model: Classifier,
    train: Views,
    y_train: np.ndarray,
    *,
    config: TrainConfig,
    lr: float,
    class_weighting: str,
    augment: AugmentConfig,
    spec: PreprocessSpec,
    rng: np.random.Generator,
    device: torch.device,
    evaluate: tuple[torch.Tensor, np.ndarray] | None = None,
    stop_at: int | None = None,
    keep_eval_logits: bool = False,
    deadline: float | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    resume: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train blocks[train.start:] and the head for up to ``config.epochs`` epochs (one-cycle schedule).

    Each epoch draws one random view per image. With ``evaluate`` (held-out inputs at the same block, labels)
    the best epoch by balanced accuracy (then loss) is kept and training stops after ``config.patience`` epochs
    without improvement. ``stop_at`` ends after that epoch and keeps it (the refit of a cross-validated recipe).
    ``deadline`` (a ``time.perf_counter()`` value) raises ``TimeoutError`` between epochs once passed.
    ``resume``/``checkpoint`` carry the loop's state across an interruption.
    """
    start = train.start
    num_classes = model.head.out_features
    set_trainable(model, start)
    model.to(device)
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(y_train, num_classes, class_weighting), label_smoothing=config.label_smoothing
    ).to(device)
    n = train.count
    steps = max(1, math.floor(n / config.batch_size))
    optimizer = torch.optim.AdamW(param_groups(model, start, config, lr), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=config.epochs * (steps + 1),
        pct_start=0.15,
    )
    model.to(memory_format=torch.channels_last)
    last = min(config.epochs, stop_at) if stop_at is not None else config.epochs
    history: list[dict[str, float]] = []
    eval_logits: list[np.ndarray] = []
    best: tuple[float, float] = (-1.0, -math.inf)
    best_state: dict[str, torch.Tensor] = {}
    best_epoch, stale, first = 0, 0, 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        rng.bit_generator.state = resume["numpy_rng"]
        torch.set_rng_state(resume["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in resume:
            torch.cuda.set_rng_state(resume["cuda_rng"])
        history, best, best_state = list(resume["history"]), tuple(resume["best"]), resume["best_state"]
        best_epoch, stale, first = resume["best_epoch"], resume["stale"], resume["epoch"] + 1

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(n)
        choice = rng.integers(len(train.data), size=n)
        where = np.arange(n) if train.index is None else train.index
        for i in range(0, n, config.batch_size):
            idx = order[i : i + config.batch_size]
            if len(idx) < 2:
                continue
            if start == 0:
                x = torch_normalize(augment_batch(train.data[0][torch.from_numpy(where[idx])], augment, rng), spec)
            else:
                x = torch.stack([train.data[choice[j]][where[j]] for j in idx])
            yield _to_input(x, start).to(device, non_blocking=True), torch.from_numpy(y_train[idx]).to(device)

    stopped = "epochs" if stop_at is None else "fixed epochs"
    for epoch in range(first, last + 1):
        if deadline is not None and time.perf_counter() > deadline:
            raise TimeoutError("the time budget ran out")
        t0 = time.perf_counter()
        model.train()
        for block in model.blocks[:start]:
            block.eval()
        total, correct, loss_sum = 0, 0, 0.0
        for x, y in batches():
            optimizer.zero_grad(set_to_none=True)
            logits = model.forward_from(x, start)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            if scheduler.last_epoch + 1 < scheduler.total_steps:
                scheduler.step()
            loss_sum += float(loss.item()) * len(y)
            correct += int((logits.argmax(1) == y).sum().item())
            total += len(y)
        row: dict[str, float] = {
            "epoch": epoch,
            "train_loss": loss_sum / max(total, 1),
            "train_accuracy": correct / max(total, 1),
        }
        if evaluate is not None:
            x_eval, y_eval = evaluate
            held = predict(model, start, x_eval, spec=spec)
            pred = held.argmax(1).numpy()
            row["val_loss"] = float(
                nn.functional.cross_entropy(
                    held, torch.from_numpy(y_eval), weight=loss_fn.weight.cpu() if loss_fn.weight is not None else None
                ).item()
            )
            row["val_accuracy"] = float((pred == y_eval).mean())
            row["val_balanced_accuracy"] = _balanced_accuracy(y_eval, pred)
            if keep_eval_logits:
                eval_logits.append(held.numpy())
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        score = (row.get("val_balanced_accuracy", 0.0), -row.get("val_loss", 0.0))
        if stop_at is not None or evaluate is None:
            best_epoch, best_state = epoch, {}
        elif score > best:
            best, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint is not None:
            checkpoint(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "best": best,
                    "best_state": best_state,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    **({"cuda_rng": torch.cuda.get_rng_state()} if device.type == "cuda" else {}),
                }
            )
        if stop_at is None and evaluate is not None and stale >= config.patience:
            stopped = f"no better held-out score for {config.patience} epochs"
            break
    if not best_state:
        best_state = copy.deepcopy(model.state_dict())
    return FitResult(history, best_epoch, best_state, eval_logits, stopped)


def seconds_per_image(
    new_model: Callable[[], Classifier],
    train: Views,
    y_train: np.ndarray,
    *,
    config: TrainConfig,
    spec: PreprocessSpec,
    augment: AugmentConfig,
    device: torch.device,
    images: int = 96,
) -> float:
    """Wall seconds one image costs an epoch of :func:`fit` (forward, backward, step) on this host, timed on a warm
    second pass over ``images`` of ``train`` by a model from ``new_model`` (thrown away after). torch's random state
    is put back, so what trains next does not depend on whether this ran."""
    index = np.arange(min(images, train.count))
    one_epoch = config.model_copy(update={"epochs": 1})
    seconds = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = new_model()
        for attempt in range(2):  # the first pass pays for allocation and kernel selection
            t0 = time.perf_counter()
            fit(
                model,
                train.subset(index),
                y_train[index],
                config=one_epoch,
                lr=config.lr,
                class_weighting="none",
                augment=augment,
                spec=spec,
                rng=np.random.default_rng(attempt),
                device=device,
            )
            seconds = time.perf_counter() - t0
    return seconds / max(1, len(index))


class InputCache:
    """Decoded pixels and frozen-prefix views of one list of samples, built on demand and kept for reuse.

    Keys are (input side, resize rule, augmentation strength, first trained block). Views for a block at or
    after ``cache_start`` are derived from the one cache at ``cache_start`` by running the extra frozen blocks;
    block 0 (strategy full) keeps the uint8 images.
    """

    def __init__(
        self,
        samples: list[Any],
        *,
        channels: int,
        pretrained: Callable[[], Classifier],
        cache_start: int,
        views: int,
        augment: AugmentConfig,
        backend: str,
        device: torch.device,
        seed: int,
        threads: int,
        int8_views: int = 0,
        on_cache: Callable[[str, float], None] | None = None,
    ) -> None:
        self.samples = samples
        self.channels = channels
        self.pretrained = pretrained
        self.cache_start = cache_start
        self.num_views = views
        self.augment = augment
        self.backend = backend
        self.device = device
        self.seed = seed
        self.threads = threads
        self.int8_views = int8_views
        self.on_cache = on_cache
        self._pixels: dict[tuple[int, str], np.ndarray] = {}
        self._views: dict[tuple[int, str, float, int], Views] = {}
        self._frozen = pretrained().eval()
        self.cache_seconds: dict[str, float] = {}

    def spec(self, size: int, resize: str) -> PreprocessSpec:
        return PreprocessSpec.for_channels(self.channels, input_size=size, resize=resize)  # type: ignore[arg-type]

    def pixels(self, size: int, resize: str) -> np.ndarray:
        """uint8 (N, H, W, C) images as deployed (decoded and resized by the spec)."""
        key = (size, resize)
        if key not in self._pixels:
            from edgetl.prefix import load_uint8

            self._pixels[key] = load_uint8(self.samples, self.spec(size, resize), threads=self.threads)
        return self._pixels[key]

    def has(self, size: int, resize: str, strength: float) -> bool:
        """True when the cache at ``cache_start`` for these settings is built."""
        return (size, resize, strength, self.cache_start) in self._views

    def views(self, *, size: int, resize: str, strength: float, start: int) -> Views:
        """Views of every sample with blocks[:start] applied (start 0: the uint8 images)."""
        key = (size, resize, strength, start)
        if key in self._views:
            return self._views[key]
        if start == 0:
            chw = torch.from_numpy(self.pixels(size, resize)).permute(0, 3, 1, 2)
            return Views(start=0, data=[chw])
        base_start = self.cache_start if start >= self.cache_start else start
        base_key = (size, resize, strength, base_start)
        if base_key not in self._views:
            self._views[base_key] = self._build(size, resize, strength, base_start)
        if start == base_start:
            return self._views[base_key]
        derived = [k for k in self._views if k[3] != self.cache_start]
        for old in derived[:-1]:  # keep one derived set besides the bases: they can be large
            del self._views[old]
        self._views[key] = deeper(self._frozen.to(self.device), self._views[base_key], start)
        return self._views[key]

    def _build(self, size: int, resize: str, strength: float, start: int) -> Views:
        from edgetl.prefix import prefix_runner

        t0 = time.perf_counter()
        spec = self.spec(size, resize)
        images = self.pixels(size, resize)
        run = prefix_runner(self._frozen, start, spec, self.backend, device=self.device)
        extra = []
        if self.int8_views:
            rng = np.random.default_rng(self.seed)
            pick = np.sort(rng.choice(len(images), size=min(300, len(images)), replace=False))
            int8 = prefix_runner(
                self._frozen, start, spec, "onnxruntime", int8_calibration=normalize(images[pick], spec)
            )
            extra = [int8] * self.int8_views
        rng = np.random.default_rng([self.seed, size, int(strength * 1000), start])
        views = cache_views(
            run, start, images, spec, views=self.num_views, augment=self.augment.scaled(strength), rng=rng, extra=extra
        )
        name = f"{size} px {resize}, strength {strength:g}, blocks 0-{start - 1}"
        self.cache_seconds[name] = time.perf_counter() - t0
        if self.on_cache is not None:
            self.on_cache(name, self.cache_seconds[name])
        return views
