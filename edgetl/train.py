"""Fine-tuning: the recipe (searched or given), its final fit on the train split, the checkpoint and its meta."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgetl.config import BuildConfig, ConfigError, TrainConfig
from edgetl.data.dataset import Dataset, Sample
from edgetl.files import atomic_path, read_json, sha256_bytes, sha256_file, write_json_atomic, write_text_atomic
from edgetl.fit import InputCache, fit
from edgetl.models import ARCHS, Classifier, build_classifier, load_plain, resolve_weights, save_checkpoint
from edgetl.preprocess import PreprocessSpec
from edgetl.search import Recipe, run_search, search_space
from edgetl.versions import host_info, library_versions

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


def resolve_strategy(config: TrainConfig, arch: str) -> tuple[str, int]:
    """(strategy, index of the first trained block) of a given strategy; len(blocks) means the head only.

    ``auto`` (the recipe search) resolves to the default it starts from: partial with the arch's blocks.
    """
    num_blocks = ARCHS[arch].num_blocks
    strategy = "partial" if config.strategy == "auto" else config.strategy
    if strategy == "linear":
        return strategy, num_blocks
    if strategy == "full":
        return strategy, 0
    trainable = config.trainable_blocks or ARCHS[arch].default_trainable_blocks
    return strategy, max(0, num_blocks - min(trainable, num_blocks))


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


def _image_facts(dataset: Dataset) -> dict[str, Any]:
    facts = dataset.info.get("images", {})
    return facts if isinstance(facts, dict) else {}


def _validation_adequate(dataset: Dataset) -> bool:
    validation = dataset.info.get("validation")
    return not isinstance(validation, dict) or bool(validation.get("adequate", True))


def resolve_gray(setting: bool | str, dataset: Dataset) -> tuple[bool, str]:
    """(one input channel?, why): ``auto`` is one channel exactly when every training image is greyscale."""
    if setting != "auto":
        return bool(setting), "model.gray set in the config"
    gray = _image_facts(dataset).get("gray_train")
    train = len(dataset.split("train"))
    if gray is None:
        return False, "model.gray auto: the data set records no colour facts (re-run the data stage); RGB"
    if gray == train:
        return True, f"model.gray auto: all {train} training images are greyscale, so one input channel"
    return False, f"model.gray auto: {train - gray} of {train} training images have colour, so three channels"


def resolve_resize(setting: str, dataset: Dataset) -> str:
    """stretch or letterbox; ``auto`` (without a search) keeps the aspect ratio of images that are not square."""
    if setting != "auto":
        return setting
    aspect = _image_facts(dataset).get("median_aspect", 1.0)
    return "letterbox" if float(aspect) > 1.05 else "stretch"


def _pretrained_factory(
    config: BuildConfig, num_classes: int, gray: bool
) -> tuple[Callable[[], Classifier], str | None]:
    """A function returning a fresh classifier with the pretrained backbone (weights read once), and their sha256."""
    mc = config.model
    weights_path, weights_sha = None, None
    if mc.pretrained:
        weights_path, weights_sha = resolve_weights(
            mc.arch, path=mc.weights, sha256=mc.weights_sha256, allow_download=mc.allow_download
        )
    first = build_classifier(mc.arch, num_classes, gray=gray, dropout=mc.dropout, weights_file=weights_path)
    backbone = copy.deepcopy(first.blocks.state_dict())

    def new() -> Classifier:
        model = build_classifier(mc.arch, num_classes, gray=gray, dropout=mc.dropout)
        model.blocks.load_state_dict(backbone)
        return model

    return new, weights_sha


def train_model(
    config: BuildConfig, dataset: Dataset, out_dir: Path, *, progress: bool = True, resume: bool = False
) -> TrainResult:
    """Choose the recipe (searched on train+val when ``train.strategy`` is auto), fit it on train, write out_dir/*.

    Writes ``model.pt`` (weights + meta), ``meta.json``, ``history.csv``, ``curves.png``; with a search also
    ``search.json`` (every trial), ``oof.npz`` (the winner's out-of-fold logits on train+val) and ``recipe.yaml``
    (a config that reruns the winner without a search). After every epoch of the final fit ``resume.pt``
    (model, optimiser, scheduler and random states), removed once training is done. With ``resume`` an
    interrupted run continues after its last finished epoch (a finished search is kept) and ends as the
    uninterrupted run would; a finished run with the same fingerprint is returned as it is.

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
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    tc, mc = config.train, config.model
    torch.manual_seed(tc.seed)
    threads = tc.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = resolve_device(tc.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.cuda.manual_seed_all(tc.seed)
    console = Console(stderr=True, quiet=not progress)
    gray, gray_reason = resolve_gray(mc.gray, dataset)
    if mc.gray == "auto":
        console.print(gray_reason)
    new_model, weights_sha = _pretrained_factory(config, len(dataset.classes), gray)
    train_s, val_s = dataset.split("train"), dataset.split("val")
    pool = train_s + val_s
    y_pool = np.array([dataset.label_index(s) for s in pool])
    y_train, y_val = y_pool[: len(train_s)], y_pool[len(train_s) :]
    num_blocks = ARCHS[mc.arch].num_blocks
    # On a GPU the frozen blocks run there too (torch); the CPU runtimes are the fast path on a CPU.
    backend = "torch" if device.type == "cuda" and not tc.int8_views else tc.cache_backend
    timings: dict[str, float] = {}
    search_record: dict[str, Any] | None = None

    def inputs_for(cache_start: int) -> InputCache:
        return InputCache(
            pool,
            channels=1 if gray else 3,
            pretrained=new_model,
            cache_start=cache_start,
            views=tc.views,
            augment=tc.augment,
            backend=backend,
            device=device,
            seed=tc.seed,
            threads=threads * 2,
            int8_views=tc.int8_views,
            on_cache=lambda name, s: console.print(f"cached frozen blocks ({name}) in {s:.0f} s"),
        )

    t0 = time.perf_counter()
    stop_epoch: int | None
    if tc.strategy == "auto":
        search_record, inputs = _search_or_reuse(
            config, dataset, out_dir, fingerprint, pool, y_pool, inputs_for, new_model, device, console, resume
        )
        recipe = Recipe(**search_record["recipe"])
        strategy, start = recipe.strategy(mc.arch), recipe.start(mc.arch)
        size, resize, weighting = recipe.input_size, recipe.resize, recipe.class_weighting
        lr, strength = recipe.lr, recipe.augment_strength
        # A validation split that can choose the epoch does (over train.epochs); a small one cannot, and the refit
        # repeats the cross-validated schedule up to its peak.
        small_val = not _validation_adequate(dataset)
        stop_epoch = int(search_record["best_epoch"]) if small_val else None
        if small_val:
            tc = tc.model_copy(update={"epochs": tc.search.epochs})
        timings["search_s"] = float(search_record["seconds"])
    else:
        strategy, start = resolve_strategy(tc, mc.arch)
        size = 224 if mc.input_size == "auto" else int(mc.input_size)
        resize = resolve_resize(config.preprocess.resize, dataset)
        weighting, lr, strength, stop_epoch = tc.class_weighting, tc.lr, tc.augment_strength, tc.stop_epoch
        inputs = inputs_for(start)
    spec = PreprocessSpec.for_channels(1 if gray else 3, input_size=size, resize=resize)  # type: ignore[arg-type]
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=False, console=console) as bar:
        t1 = time.perf_counter()
        views = inputs.views(size=size, resize=resize, strength=strength, start=start)
        timings["final_inputs_s"] = time.perf_counter() - t1
        train_views = views.subset(np.arange(len(train_s)))
        held = views.subset(np.arange(len(train_s), len(pool))).base() if val_s else None
        task = bar.add_task(
            f"training ({strategy}, blocks {start}-{num_blocks - 1} + head)",
            total=stop_epoch or tc.epochs,
            completed=0 if saved is None else saved["epoch"],
        )
        if saved is not None:
            bar.console.print(f"resuming after epoch {saved['epoch']} from {resume_path}")

        def on_epoch(row: dict[str, float]) -> None:
            bar.update(
                task, advance=1, description=f"training ({strategy}) val bacc {row.get('val_balanced_accuracy', 0):.3f}"
            )
            if progress and not bar.console.is_terminal:
                bar.console.print(
                    f"epoch {int(row['epoch'])}/{stop_epoch or tc.epochs}: train loss {row['train_loss']:.4f}, "
                    f"val acc {row.get('val_accuracy', 0):.4f}, val bacc {row.get('val_balanced_accuracy', 0):.4f} "
                    f"({row['seconds']:.1f} s)"
                )

        t_train = time.perf_counter()
        model = new_model()
        result = fit(
            model,
            train_views,
            y_train,
            config=tc,
            lr=lr,
            class_weighting=weighting,
            augment=tc.augment.scaled(strength),
            spec=spec,
            rng=np.random.default_rng(tc.seed),
            device=device,
            evaluate=None if held is None else (held, y_val),
            stop_at=stop_epoch,
            on_epoch=on_epoch,
            resume=saved,
            checkpoint=lambda state: _save_resume(resume_path, {"fingerprint": fingerprint, **state}),
        )
        timings["train_s"] = time.perf_counter() - t_train
    timings["decode_and_cache_s"] = round(sum(inputs.cache_seconds.values()), 1)
    timings["total_s"] = time.perf_counter() - t0
    model.load_state_dict(result.best_state)
    model = model.cpu().to(memory_format=torch.contiguous_format)
    model.eval()
    history = result.history
    best_row = history[result.best_epoch - 1]
    meta = {
        "arch": mc.arch,
        "classes": dataset.classes,
        "preprocess": spec.model_dump(mode="json"),
        "dropout": mc.dropout,
        "strategy": strategy,
        "trained_from_block": start,
        "device": device.type if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
        "num_blocks": num_blocks,
        "best_epoch": result.best_epoch,
        "epochs_run": len(history),
        "stopped": result.stopped,
        "val_metrics": {k: best_row.get(k) for k in ("val_accuracy", "val_balanced_accuracy", "val_loss")},
        "recipe": {
            "source": _recipe_source(search_record),
            "strategy": strategy,
            "trainable_blocks": num_blocks - start,
            "input_size": size,
            "resize": resize,
            "gray": gray,
            "gray_reason": gray_reason,
            "class_weighting": weighting,
            "lr": lr,
            "augment_strength": strength,
            "epochs": tc.epochs,
            "stop_epoch": stop_epoch,
        },
        "pretrained_weights_sha256": weights_sha,
        "dataset_hash": dataset.info.get("hash"),
        "seeds": {"data": config.data.seed, "train": tc.seed},
        "fingerprint": fingerprint,
        "config": config.model_dump(mode="json"),
        "versions": library_versions(),
        "host": host_info(),
    }
    if search_record is not None:
        meta["search"] = {k: v for k, v in search_record.items() if k not in ("fingerprint",)}
    out_dir.mkdir(parents=True, exist_ok=True)
    # Timings stay out of the checkpoint, so the same seed and data give a byte-identical model.pt.
    save_checkpoint(out_dir / "model.pt", model, meta)
    meta["timings"] = {k: round(v, 1) for k, v in timings.items()}
    meta["checkpoint_sha256"] = sha256_file(out_dir / "model.pt")  # checked by later stages (edgetl/custody.py)
    write_json_atomic(out_dir / "meta.json", meta)
    _write_history(out_dir, history)
    resume_path.unlink(missing_ok=True)
    return TrainResult(out_dir / "model.pt", meta, history)


def _search_or_reuse(
    config: BuildConfig,
    dataset: Dataset,
    out_dir: Path,
    fingerprint: str,
    pool: list[Sample],
    y_pool: np.ndarray,
    inputs_for: Callable[[int], InputCache],
    new_model: Callable[[], Classifier],
    device: torch.device,
    console: Any,
    resume: bool,
) -> tuple[dict[str, Any], InputCache]:
    """Run the recipe search (or, with ``resume``, reuse a finished one); write search.json, oof.npz, recipe.yaml."""
    from edgetl.config import dump_config, set_dotted

    tc, mc = config.train, config.model
    arch = ARCHS[mc.arch]
    images = _image_facts(dataset)
    side = float(images.get("median_short_side", 224))
    space = search_space(
        tc,
        mc.arch,
        median_side=side,
        square=float(images.get("median_aspect", 1.0)) <= 1.05,
        gpu=device.type == "cuda",
    )
    if mc.input_size != "auto":
        space.input_sizes = [int(mc.input_size)]
        space.default = Recipe(**{**space.default.__dict__, "input_size": int(mc.input_size)})
    if config.preprocess.resize != "auto":
        space.resize = [config.preprocess.resize]
        space.default = Recipe(**{**space.default.__dict__, "resize": config.preprocess.resize})
    partial = [d for d in space.depths if 0 < d < arch.num_blocks]
    cache_start = arch.num_blocks - max(partial) if partial else arch.num_blocks
    inputs = inputs_for(cache_start)
    search_file = out_dir / "search.json"
    if resume and search_file.is_file():
        record = read_json(search_file)
        if record.get("fingerprint") == fingerprint:
            console.print(f"reusing the finished recipe search in {search_file}")
            return record, inputs
    groups = np.array([s.group or f"image-{i}" for i, s in enumerate(pool)])
    console.print(
        f"recipe search: {tc.search.folds}-fold group cross-validation on train+val ({len(pool)} images, "
        f"{len(set(groups.tolist()))} groups), budget {tc.budget_minutes:g} min"
    )
    result = run_search(
        arch=mc.arch,
        config=tc,
        space=space,
        inputs=inputs,
        y=y_pool,
        groups=groups,
        new_model=lambda _size: new_model(),
        device=device,
        study_name=tc.search.study_name or config.name,
        log=console.print,
        may_skip=_validation_adequate(dataset),
    )
    record = {
        "fingerprint": fingerprint,
        "recipe": result.recipe.__dict__,
        "best_epoch": result.best_epoch,
        "cv_balanced_accuracy": result.score,
        "cv_interval": result.interval,
        "folds": result.folds,
        "budget_minutes": tc.budget_minutes,
        "seconds": result.seconds,
        "space": {k: v for k, v in space.__dict__.items() if k != "default"},
        "trials": result.trials,
        "notes": result.notes,
        "oof": "oof.npz" if result.oof_logits is not None else None,
        "skipped": result.skipped,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if result.oof_logits is not None:
        with atomic_path(out_dir / "oof.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                logits=result.oof_logits,
                labels=y_pool,
                paths=np.array([s.path.as_posix() for s in pool]),
            )
    small_val = not _validation_adequate(dataset)
    overrides = result.recipe.overrides(mc.arch, stop_epoch=result.best_epoch if small_val else None)
    if small_val:
        overrides["train.epochs"] = tc.search.epochs
    raw = set_dotted(config.model_dump(mode="json"), overrides)
    raw["model"]["gray"] = resolve_gray(mc.gray, dataset)[0]
    from edgetl.config import build_config_from_dict

    chosen = (
        "The default recipe (no search ran: the budget could not pay for two trials)"
        if result.skipped
        else "The recipe the search chose (cross-validated on train+val)"
    )
    write_text_atomic(
        out_dir / "recipe.yaml",
        f"# {chosen}; rerun it without a search:\n#   edgetl build --config recipe.yaml\n"
        + dump_config(build_config_from_dict(raw, source="recipe")),
    )
    write_json_atomic(search_file, record)
    if result.score is None or result.interval is None:  # skipped: the build already said why
        return record, inputs
    console.print(
        f"recipe: {result.trials[[t['trial'] for t in result.trials].index(_best_trial(result))]['description']}, "
        f"CV balanced accuracy {result.score:.3f} [{result.interval[0]:.3f}, {result.interval[1]:.3f}], "
        f"refit stops at epoch {result.best_epoch}"
    )
    return record, inputs


def _recipe_source(search_record: dict[str, Any] | None) -> str:
    if search_record is None:
        return "config"
    return "default (search skipped)" if search_record.get("skipped") else "search"


def _best_trial(result: Any) -> int:
    for row in result.trials:
        if row["recipe"] == result.recipe.__dict__ and row["state"] == "complete":
            return int(row["trial"])
    return int(result.trials[0]["trial"])


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
