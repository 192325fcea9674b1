"""Fine-tuning: linear / partial / full strategies, a cached frozen prefix, early stopping on val."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgetl.augment import augment_batch
from edgetl.config import BuildConfig, ConfigError, TrainConfig
from edgetl.data.dataset import Dataset, Sample
from edgetl.files import atomic_path, read_json, sha256_bytes, sha256_file, write_json_atomic, write_text_atomic
from edgetl.models import ARCHS, Classifier, build_classifier, load_plain, resolve_weights, save_checkpoint
from edgetl.preprocess import PreprocessSpec, decode_image, normalize, resized_uint8, torch_normalize
from edgetl.versions import host_info, library_versions

# Below this many training images a new head on frozen features is the safer choice.
AUTO_LINEAR_BELOW = 150
RESUME_FILE = "resume.pt"
RESUME_FORMAT = "edgetl-resume-v1"


class ResumeError(ConfigError):
    """A resume checkpoint that does not belong to this run's config and data."""


@dataclass
class TrainResult:
    """What training produced."""

    checkpoint: Path
    meta: dict[str, Any]
    history: list[dict[str, float]]


def load_uint8(samples: list[Sample], spec: PreprocessSpec, *, threads: int = 4) -> np.ndarray:
    """Decode and resize images: uint8 (N, H, W, C), the exact deploy-time pixels before normalisation."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        arrays = list(pool.map(lambda s: resized_uint8(decode_image(s.path), spec), samples))
    return np.stack(arrays)


def resolve_strategy(config: TrainConfig, num_train: int, arch: str) -> tuple[str, int]:
    """Return (strategy, index of the first trained block); len(blocks) means the head only."""
    num_blocks = ARCHS[arch].num_blocks
    strategy = config.strategy
    if strategy == "auto":
        strategy = "linear" if num_train < AUTO_LINEAR_BELOW else "partial"
    if strategy == "linear":
        return strategy, num_blocks
    if strategy == "full":
        return strategy, 0
    trainable = config.trainable_blocks or ARCHS[arch].default_trainable_blocks
    return strategy, max(0, num_blocks - min(trainable, num_blocks))


class _Prefix(nn.Module):
    """blocks[:start] (+ pooling when every block is frozen), the part computed once per view."""

    def __init__(self, model: Classifier, start: int) -> None:
        super().__init__()
        self.blocks = model.blocks[:start]
        self.pool = start == len(model.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1) if self.pool else x


def resolve_device(requested: str) -> torch.device:
    """The torch device for ``train.device`` (auto, cpu or cuda).

    Raises:
        ConfigError: cuda was asked for and torch sees no CUDA GPU.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device is cuda but this torch ({torch.__version__}) sees no CUDA GPU; set train.device to cpu "
            "or auto, or install a CUDA build of torch on a machine with an NVIDIA driver."
        )
    return torch.device("cuda" if requested != "cpu" and torch.cuda.is_available() else "cpu")


def prefix_runner(
    model: Classifier,
    start: int,
    spec: PreprocessSpec,
    backend: str,
    *,
    int8_calibration: np.ndarray | None = None,
    device: torch.device | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A function computing the frozen prefix on normalised NCHW batches with the chosen runtime.

    With ``int8_calibration`` (normalised NCHW images) the prefix is first quantized to INT8 QDQ
    (onnxruntime only), as the deployed INT8 model computes it. ``device`` is where the torch backend runs.
    """
    prefix = _Prefix(model, start).eval()
    if backend == "torch":
        target = device or torch.device("cpu")
        prefix = prefix.to(target)

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return prefix(torch.from_numpy(x).to(target)).cpu().numpy()

        return run_torch
    if next(prefix.parameters()).is_cuda:
        prefix = copy.deepcopy(prefix).cpu()  # the runtimes export from a CPU copy
    from edgetl.export import export_module

    example = torch.zeros(1, spec.channels, spec.input_size, spec.input_size)
    # Both runtimes read the whole model when the session is made, so the file can go right after.
    with tempfile.TemporaryDirectory(prefix="edgetl-prefix-") as folder:
        onnx_path = Path(folder) / "prefix.onnx"
        export_module(prefix, example, onnx_path, opset=17, dynamic_batch=True, output_name="features")
        if backend == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            return lambda x: np.asarray(compiled(x)[0])
        import onnxruntime as ort

        if int8_calibration is not None:
            from edgetl.calibration import CalibrationSet
            from edgetl.targets.onnxruntime import quantize_qdq

            quantized = Path(folder) / "prefix-int8.onnx"
            quantize_qdq(onnx_path, quantized, CalibrationSet(int8_calibration, {}), reduce_range=True)
            onnx_path = quantized
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return lambda x: np.asarray(session.run(None, {"input": x})[0])


def _batched(
    run: Callable[[np.ndarray], np.ndarray], x_uint8: np.ndarray, spec: PreprocessSpec, batch: int = 32
) -> np.ndarray:
    return np.concatenate([run(normalize(x_uint8[i : i + batch], spec)) for i in range(0, len(x_uint8), batch)])


def _class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = 1.0 / np.maximum(counts, 1.0) ** (0.5 if mode == "sqrt" else 1.0)
    return torch.tensor(weights * num_classes / weights.sum(), dtype=torch.float32)


def _param_groups(model: Classifier, start: int, config: TrainConfig) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": config.lr}]
    trained = list(range(start, len(model.blocks)))
    for rank, index in enumerate(reversed(trained)):
        scale = config.backbone_lr_scale * (config.layer_decay**rank if start == 0 else 1.0)
        groups.append({"params": list(model.blocks[index].parameters()), "lr": config.lr * scale})
    return groups


def _evaluate(
    model: Classifier, start: int, x: torch.Tensor, y: np.ndarray, loss_fn: nn.Module, batch: int = 64
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = torch.cat([model.forward_from(x[i : i + batch].to(device), start) for i in range(0, len(x), batch)])
        loss = float(loss_fn(logits, torch.from_numpy(y).to(device)).item())
    pred = logits.argmax(1).cpu().numpy()
    return {
        "loss": loss,
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
    }


def _to_input(x: np.ndarray | torch.Tensor, start: int) -> torch.Tensor:
    tensor = torch.as_tensor(x)
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.ndim == 4 and start > 0 else tensor


def training_fingerprint(config: BuildConfig, dataset: Dataset) -> str:
    """sha256 of what decides the trained weights: data, model and train config, and the dataset hash."""
    parts = {k: config.model_dump(mode="json")[k] for k in ("data", "model", "train")}
    parts["dataset_hash"] = dataset.info.get("hash")
    return sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode("utf-8"))


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    """Write the end-of-epoch state atomically (plain types and tensors: loads with weights_only=True)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": RESUME_FORMAT, **state}, handle)


def _load_resume(path: Path, fingerprint: str) -> dict[str, Any]:
    state = load_plain(
        path,
        refused=lambda why: ResumeError(
            f"{path} is refused: not a resume checkpoint that loads with weights_only=True ({why}); "
            "delete it and train without --resume."
        ),
    )
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ResumeError(f"{path} is not an edgetl resume checkpoint; delete it and train without --resume.")
    if state.get("fingerprint") != fingerprint:
        raise ResumeError(
            f"{path} was written for another config or data set (data, model or train changed since); "
            "train without --resume, or restore the config it was made with."
        )
    return state


def train_model(
    config: BuildConfig, dataset: Dataset, out_dir: Path, *, progress: bool = True, resume: bool = False
) -> TrainResult:
    """Fine-tune the configured backbone on the train split, select on val, write out_dir/*.

    Writes ``model.pt`` (weights + meta), ``meta.json``, ``history.csv`` and ``curves.png``; after every epoch
    ``resume.pt`` (model, optimiser, scheduler and random states), removed once training is done. With
    ``resume`` an interrupted run continues after its last finished epoch and ends as the uninterrupted run
    would (same seed, same machine); a finished run with the same fingerprint is returned as it is.

    Raises:
        ResumeError: ``resume.pt`` belongs to another config or data set.
    """
    fingerprint = training_fingerprint(config, dataset)
    resume_path = out_dir / RESUME_FILE
    if resume and not resume_path.is_file() and (out_dir / "model.pt").is_file() and (out_dir / "meta.json").is_file():
        finished = read_json(out_dir / "meta.json")
        if finished.get("fingerprint") == fingerprint:
            return TrainResult(out_dir / "model.pt", finished, [])
    saved = _load_resume(resume_path, fingerprint) if resume and resume_path.is_file() else None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    tc, mc = config.train, config.model
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    threads = tc.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = resolve_device(tc.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.cuda.manual_seed_all(tc.seed)
    spec = PreprocessSpec.for_channels(1 if mc.gray else 3, input_size=mc.input_size)
    weights_path, weights_sha = (None, None)
    if mc.pretrained:
        weights_path, weights_sha = resolve_weights(
            mc.arch, path=mc.weights, sha256=mc.weights_sha256, allow_download=mc.allow_download
        )
    model = build_classifier(mc.arch, len(dataset.classes), gray=mc.gray, dropout=mc.dropout, weights_file=weights_path)
    train_s, val_s = dataset.split("train"), dataset.split("val")
    y_train = np.array([dataset.label_index(s) for s in train_s])
    y_val = np.array([dataset.label_index(s) for s in val_s])
    strategy, start = resolve_strategy(tc, len(train_s), mc.arch)
    cached = start > 0
    loss_fn = nn.CrossEntropyLoss(
        weight=_class_weights(y_train, len(dataset.classes), tc.class_weighting),
        label_smoothing=tc.label_smoothing,
    ).to(device)
    model = model.to(device)
    # On a GPU the frozen blocks run there too (torch); the CPU runtimes are the fast path on a CPU.
    cache_backend = "torch" if device.type == "cuda" and not tc.int8_views else tc.cache_backend
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    timings: dict[str, float] = {}
    with Progress(*columns, disable=not progress, transient=False) as bar:
        t0 = time.perf_counter()
        images_train = load_uint8(train_s, spec, threads=threads * 2)
        images_val = load_uint8(val_s, spec, threads=threads * 2)
        timings["decode_s"] = time.perf_counter() - t0
        for p in model.parameters():
            p.requires_grad_(False)
        for block in model.blocks[start:]:
            for p in block.parameters():
                p.requires_grad_(True)
        for p in model.head.parameters():
            p.requires_grad_(True)
        if cached:
            t0 = time.perf_counter()
            run = prefix_runner(model, start, spec, cache_backend, device=device)
            views = []
            task = bar.add_task(
                f"caching frozen blocks 0-{start - 1} ({cache_backend}, {device.type})",
                total=tc.views + 1 + tc.int8_views,
            )
            x_val = torch.from_numpy(_batched(run, images_val, spec))
            bar.advance(task)
            chw = torch.from_numpy(images_train).permute(0, 3, 1, 2)

            def cache_views(runner: Callable[[np.ndarray], np.ndarray], count: int) -> None:
                # The first view is the image as deployed, the others random augmentations.
                for v in range(count):
                    view = chw if v == 0 else augment_batch(chw, tc.augment, rng)
                    views.append(_batched(runner, view.permute(0, 2, 3, 1).numpy(), spec))
                    bar.advance(task)

            cache_views(run, tc.views)
            if tc.int8_views:
                sample = rng.choice(len(images_train), size=min(300, len(images_train)), replace=False)
                calibration = normalize(images_train[np.sort(sample)], spec)
                cache_views(
                    prefix_runner(model, start, spec, "onnxruntime", int8_calibration=calibration), tc.int8_views
                )
            timings["cache_s"] = time.perf_counter() - t0
            x_val = _to_input(x_val, start)
        else:
            x_val = torch_normalize(torch.from_numpy(images_val).permute(0, 3, 1, 2), spec)
            chw = torch.from_numpy(images_train).permute(0, 3, 1, 2)

        def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            order = rng.permutation(len(train_s))
            choice = rng.integers(len(views), size=len(train_s)) if cached else None
            for i in range(0, len(order), tc.batch_size):
                idx = order[i : i + tc.batch_size]
                if len(idx) < 2:
                    continue
                if cached:
                    assert choice is not None
                    x = torch.from_numpy(np.stack([views[choice[j]][j] for j in idx]))
                else:
                    x = torch_normalize(augment_batch(chw[torch.from_numpy(idx)], tc.augment, rng), spec)
                yield _to_input(x, start).to(device, non_blocking=True), torch.from_numpy(y_train[idx]).to(device)

        steps = max(1, math.floor(len(train_s) / tc.batch_size))
        optimizer = torch.optim.AdamW(_param_groups(model, start, tc), weight_decay=tc.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=tc.epochs * (steps + 1),
            pct_start=0.15,
        )
        model = model.to(memory_format=torch.channels_last)
        history: list[dict[str, float]] = []
        best: tuple[float, float] = (-1.0, -math.inf)
        best_state: dict[str, torch.Tensor] = {}
        best_epoch, stale, first_epoch = 0, 0, 1
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            rng.bit_generator.state = saved["numpy_rng"]
            torch.set_rng_state(saved["torch_rng"])
            if device.type == "cuda" and "cuda_rng" in saved:
                torch.cuda.set_rng_state(saved["cuda_rng"])
            history, best, best_state = list(saved["history"]), tuple(saved["best"]), saved["best_state"]
            best_epoch, stale, first_epoch = saved["best_epoch"], saved["stale"], saved["epoch"] + 1
            if progress:
                bar.console.print(f"resuming after epoch {saved['epoch']} from {resume_path}")
        task = bar.add_task(
            f"training ({strategy}, blocks {start}-{len(model.blocks) - 1} + head)",
            total=tc.epochs,
            completed=first_epoch - 1,
        )
        t_train = time.perf_counter()
        for epoch in range(first_epoch, tc.epochs + 1):
            if stale >= tc.patience:
                break
            t0 = time.perf_counter()
            model.train()
            for block in model.blocks[:start]:
                block.eval()
            total, correct, loss_sum = 0, 0, 0.0
            for x, y in epoch_batches():
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
            val = _evaluate(model, start, x_val, y_val, loss_fn)
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / max(total, 1),
                "train_accuracy": correct / max(total, 1),
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "val_balanced_accuracy": val["balanced_accuracy"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            score = (val["balanced_accuracy"], -val["loss"])
            if score > best:
                best, best_epoch, stale = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            bar.update(task, advance=1, description=f"training ({strategy}) val bacc {val['balanced_accuracy']:.3f}")
            if progress and not bar.console.is_terminal:
                bar.console.print(
                    f"epoch {epoch}/{tc.epochs}: train loss {row['train_loss']:.4f}, val acc {val['accuracy']:.4f}, "
                    f"val bacc {val['balanced_accuracy']:.4f} ({row['seconds']:.1f} s)"
                )
            _save_resume(
                resume_path,
                {
                    "fingerprint": fingerprint,
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
                },
            )
            if stale >= tc.patience:
                break
        timings["train_s"] = time.perf_counter() - t_train
    model.load_state_dict(best_state)
    model = model.cpu().to(memory_format=torch.contiguous_format)
    model.eval()
    best_row = history[best_epoch - 1]
    meta = {
        "arch": mc.arch,
        "classes": dataset.classes,
        "preprocess": spec.model_dump(mode="json"),
        "dropout": mc.dropout,
        "strategy": strategy,
        "trained_from_block": start,
        "device": device.type if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
        "num_blocks": len(model.blocks),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_metrics": {k: best_row[k] for k in ("val_accuracy", "val_balanced_accuracy", "val_loss")},
        "pretrained_weights_sha256": weights_sha,
        "dataset_hash": dataset.info.get("hash"),
        "seeds": {"data": config.data.seed, "train": tc.seed},
        "fingerprint": fingerprint,
        "config": config.model_dump(mode="json"),
        "versions": library_versions(),
        "host": host_info(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # Timings stay out of the checkpoint, so the same seed and data give a byte-identical model.pt.
    save_checkpoint(out_dir / "model.pt", model, meta)
    meta["timings"] = timings
    meta["checkpoint_sha256"] = sha256_file(out_dir / "model.pt")  # checked by later stages (edgetl/custody.py)
    write_json_atomic(out_dir / "meta.json", meta)
    _write_history(out_dir, history)
    resume_path.unlink(missing_ok=True)
    return TrainResult(out_dir / "model.pt", meta, history)


def _write_history(out_dir: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(out_dir / "history.csv", buffer.getvalue())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], label="train accuracy")
    ax_acc.plot(epochs, [r["val_accuracy"] for r in history], label="val accuracy")
    ax_acc.plot(epochs, [r["val_balanced_accuracy"] for r in history], label="val balanced accuracy")
    ax_acc.set(title="accuracy", xlabel="epoch")
    ax_acc.legend()
    fig.tight_layout()
    with atomic_path(out_dir / "curves.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
