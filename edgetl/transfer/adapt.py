"""``edgetl adapt``: AdaBN (Li et al. 2016), a trained model re-normalised for a new station, as a new run.

Every batch-norm layer's running mean and variance are estimated again on unlabelled images of the new station:
their statistics are reset, the blocks run forward in train mode under ``no_grad`` and each layer keeps the
cumulative average over the batches (``momentum=None``). No weight, bias or head changes, and it happens before
export, which folds batch norm into the convolutions. The result is a new run (default ``<run>-adapted``) that is
exported, calibrated, compiled, bundled and benched like any other; the source run is never written.

The new run keeps the source's data split (so ``edgetl compare SOURCE ADAPTED`` shows what the old station loses)
and calibrates INT8 on the adaptation images, not on the training split: the deployed model sees the new station
through its new statistics, and that is the range its quantization must cover. ``adapt/report.json`` compares
before and after on labelled images of the new station (``--eval``, kept apart from the adaptation images; else the
adaptation images' own labels when they have some, which is transductive and said so), and the domain gap before
and after on the same images.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.data.dataset import DataError, Sample
from edgetl.files import read_json, sha256_file, write_json_atomic, write_text_atomic
from edgetl.lock import writes_run
from edgetl.paths import check_name, inside
from edgetl.run import RunDir

SOURCE_CHECKPOINT = "source_model.pt"
MIN_IMAGES = 8
LAYERS = ("all", "trained")
ADAPTED_PARITY_ATOL = 1e-3


def batchnorm_layers(model: Any) -> list[Any]:
    """Every batch-norm layer of ``model``."""
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adabn(
    model: Any, pixels: np.ndarray, spec: Any, *, from_block: int = 0, batch_size: int = 32, seed: int = 0
) -> dict[str, Any]:
    """Re-estimate the batch-norm running statistics of ``model`` (in place) on uint8 (N, H, W, C) images.

    Every layer of ``blocks[from_block:]`` (0: every layer of the model); earlier blocks run in eval mode with the
    statistics they have. Images go through the blocks in a seeded random order, so each batch mixes the set.
    Returns what was done.
    """
    import torch

    from edgetl.preprocess import normalize

    layers = [layer for block in model.blocks[from_block:] for layer in batchnorm_layers(block)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over every batch, not an exponential one
    order = np.random.default_rng(seed).permutation(len(pixels))
    batches = 0
    model.blocks.eval()
    for block in model.blocks[from_block:]:
        block.train()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = np.sort(order[start : start + batch_size])
                if len(chunk) < 2:  # batch norm in train mode needs two images
                    continue
                model.blocks(torch.from_numpy(normalize(pixels[chunk], spec)))
                batches += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return {
        "layers": len(layers),
        "from_block": from_block,
        "images": len(pixels),
        "batches": batches,
        "batch_size": batch_size,
    }


def source_model(run: RunDir, meta: dict[str, Any]) -> Any:
    """The model an adapted run was adapted from (checked against its recorded sha256), or None for other runs."""
    from edgetl.errors import IntegrityError, MissingInputError
    from edgetl.models import load_checkpoint

    adaptation = meta.get("adaptation")
    if not isinstance(adaptation, dict):
        return None
    path = inside(run.root, "adapt", SOURCE_CHECKPOINT)
    if not path.is_file():
        raise MissingInputError(f"{path} is missing: this adapted run lost the model it was adapted from.")
    if sha256_file(path) != adaptation.get("source_checkpoint_sha256"):
        raise IntegrityError(
            f"{path} differs from the sha256 recorded in {run.train / 'meta.json'}",
            hint=f"adapt again with 'edgetl adapt {adaptation.get('source_run')} --images ... --force'",
        )
    return load_checkpoint(path)[0]


def logits_of(model: Any, pixels: np.ndarray, spec: Any, *, batch_size: int = 64) -> np.ndarray:
    """FP32 PyTorch logits (eval mode) of uint8 (N, H, W, C) images."""
    import torch

    from edgetl.preprocess import normalize

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            out.append(model(torch.from_numpy(normalize(pixels[start : start + batch_size], spec))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def _labelled(samples: list[Sample], classes: list[str], source: Path) -> bool:
    labels = {s.label for s in samples}
    if labels == {""}:
        return False
    unknown = sorted(labels - set(classes))
    if unknown:
        raise DataError(
            f"{source}: labels {unknown} are not classes of the run ({', '.join(classes)}); rename them or drop "
            "those images."
        )
    return True


def before_after(
    before: Any,
    after: Any,
    samples: list[Sample],
    pixels: np.ndarray,
    spec: Any,
    classes: list[str],
) -> dict[str, Any]:
    """Accuracy and balanced accuracy (95 % intervals) before and after, the change with its interval, per slice."""
    from edgetl.bench.accuracy import agreement, classification_metrics
    from edgetl.bench.intervals import group_bootstrap_interval
    from edgetl.transfer.images import group_names

    y = np.array([classes.index(s.label) for s in samples])
    groups = group_names(samples)
    logits = {"before": logits_of(before, pixels, spec), "after": logits_of(after, pixels, spec)}
    pred = {k: v.argmax(1) for k, v in logits.items()}

    def bacc(p: np.ndarray, idx: np.ndarray) -> float:
        present = np.unique(y[idx])
        return float(np.mean([np.mean(p[idx][y[idx] == c] == c) for c in present]))

    def section(idx: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: classification_metrics(y[idx], pred[k][idx], classes, groups=groups[idx]) for k in ("before", "after")
        }
        out["change"] = {
            "accuracy": out["after"]["accuracy"] - out["before"]["accuracy"],
            "balanced_accuracy": out["after"]["balanced_accuracy"] - out["before"]["balanced_accuracy"],
            "balanced_accuracy_interval": group_bootstrap_interval(
                lambda i: bacc(pred["after"], idx[i]) - bacc(pred["before"], idx[i]), groups[idx]
            ),
            "agreement": agreement(logits["after"][idx], logits["before"][idx])["top1_agreement"],
        }
        return out

    everything = np.arange(len(samples))
    result = {"all": section(everything)}
    slices = sorted({s.slice for s in samples} - {""})
    for name in slices if len(slices) > 1 else []:
        result[f"slice {name}"] = section(np.array([i for i, s in enumerate(samples) if s.slice == name]))
    return result


def calibrate_on_images(run: RunDir, samples: list[Sample], pixels: np.ndarray, spec: Any, *, count: int, seed: int):
    """run/calibration/ from a random sample of the adaptation images (as :mod:`edgetl.quantize.calibration` reads)."""
    from edgetl.files import atomic_path
    from edgetl.preprocess import normalize
    from edgetl.quantize.calibration import MANIFEST, TENSORS, CalibrationSet

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(samples), min(count, len(samples)), replace=False))
    tensors = normalize(pixels[chosen], spec).astype(np.float32)
    run.calibration.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.calibration / TENSORS) as tmp, open(tmp, "wb") as handle:
        np.save(handle, tensors)
    manifest = {
        "count": len(chosen),
        "seed": seed,
        "split": "adaptation images (the new station, unlabelled)",
        "why": "the adapted model is deployed on the new station: INT8 ranges must cover its activations there",
        "counts_per_class": {"unlabelled": len(chosen)},
        "preprocess": spec.model_dump(mode="json"),
        "tensor_file": TENSORS,
        "tensor_sha256": sha256_file(run.calibration / TENSORS),
        "shape": list(tensors.shape),
        "files": [
            {"path": samples[int(i)].path.as_posix(), "sha256": sha256_file(samples[int(i)].path)} for i in chosen
        ],
    }
    write_json_atomic(run.calibration / MANIFEST, manifest)
    return CalibrationSet(tensors, manifest)


def _overlap(a: list[Sample], b: list[Sample]) -> int:
    hashes = {sha256_file(s.path) for s in a}
    return sum(1 for s in b if sha256_file(s.path) in hashes)


def adapt_run(
    source: Path,
    images: Path,
    *,
    name: str | None = None,
    eval_images: Path | None = None,
    force: bool = False,
    build: bool = True,
    layers: str = "all",
    batch_size: int = 32,
    max_gap_images: int | None = 1000,
    seed: int = 0,
    log: Any = print,
) -> dict[str, Any]:
    """Adapt the run at ``source`` to the unlabelled ``images``; write and (with ``build``) build the new run.

    ``layers``: ``all`` (AdaBN as published: every batch-norm layer) or ``trained`` (only the layers of the blocks
    the run trained, whose statistics came from its own images; frozen blocks keep ImageNet's). Returns
    adapt/report.json of the new run.

    Raises:
        ConfigError: the new run exists (without ``force``) or would be the source itself.
        DataError: too few images, or labels that are not the run's classes.
    """
    from edgetl.config import ConfigError
    from edgetl.custody import read_meta, verified_split
    from edgetl.run import open_run

    src, cfg = open_run(Path(source))
    new_name = check_name(name or f"{src.root.name}-adapted", what="run name")
    # Statistics re-estimated on a few images can make some layers' folded scales large, and float32 rounding with
    # them: the export's parity gate allows ADAPTED_PARITY_ATOL (top-1 must still agree on every image).
    export = cfg.export.model_copy(update={"parity_atol": max(cfg.export.parity_atol, ADAPTED_PARITY_ATOL)})
    config = cfg.model_copy(update={"name": new_name, "runs_dir": src.root.parent, "export": export})
    if config.run_dir.resolve() == src.root.resolve():
        raise ConfigError(f"--name {new_name} is the source run itself; AdaBN writes a new run, pick another name.")
    if layers not in LAYERS:
        raise ConfigError(f"--layers {layers!r}: pick one of {', '.join(LAYERS)}.")
    if RunDir(config.run_dir).config.exists() and not force:
        raise ConfigError(f"{config.run_dir} already holds a run; pass --force to replace it, or --name another.")
    meta = read_meta(src)
    from_block = 0 if layers == "all" else int(meta["trained_from_block"])
    if from_block >= int(meta["num_blocks"]):
        raise ConfigError(
            f"{src.root} trained no backbone block (strategy {meta.get('strategy')}): --layers trained has no "
            "batch-norm layer to re-estimate; use --layers all."
        )
    dataset = verified_split(src, "adapt")
    return _adapt_into(
        config,
        src.root,
        meta,
        dataset,
        images,
        eval_images=eval_images,
        force=force,
        build=build,
        from_block=from_block,
        batch_size=batch_size,
        max_gap_images=max_gap_images,
        seed=seed,
        log=log,
    )


@writes_run("adapt")
def _adapt_into(
    config: Any,
    source_root: Path,
    meta: dict[str, Any],
    dataset: Any,
    images: Path,
    *,
    eval_images: Path | None,
    force: bool,
    build: bool,
    from_block: int,
    batch_size: int,
    max_gap_images: int | None,
    seed: int,
    log: Any,
) -> dict[str, Any]:
    from edgetl.models import load_checkpoint, save_checkpoint
    from edgetl.preprocess import PreprocessSpec
    from edgetl.run import init_run
    from edgetl.transfer.images import load_pixels, read_images

    t0 = time.perf_counter()
    src = RunDir(source_root)  # a path, not a RunDir, in the arguments: the lock is the new run's
    classes = list(meta["classes"])
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    source_model_, _ = load_checkpoint(src.train / "model.pt")
    adapt_samples = read_images(images, classes=classes)
    if len(adapt_samples) < MIN_IMAGES:
        raise DataError(
            f"{images}: {len(adapt_samples)} images; AdaBN needs at least {MIN_IMAGES} (hundreds are better)."
        )
    adapt_pixels = load_pixels(adapt_samples, spec)
    adapted = copy.deepcopy(source_model_)
    done = adabn(adapted, adapt_pixels, spec, from_block=from_block, batch_size=batch_size, seed=seed)
    log(
        f"AdaBN: {done['layers']} batch-norm layers re-estimated on {done['images']} images ({done['batches']} batches)"
    )

    if eval_images is not None:
        eval_samples = read_images(eval_images, classes=classes)
        if not _labelled(eval_samples, classes, eval_images):
            raise DataError(f"{eval_images} has no labels; --eval needs labelled images (a manifest or class folders).")
        evaluation = f"{eval_images} (labelled, kept apart from the adaptation images)"
        shared = _overlap(adapt_samples, eval_samples)
        eval_pixels = load_pixels(eval_samples, spec)
    elif _labelled(adapt_samples, classes, images):
        eval_samples, eval_pixels, shared = adapt_samples, adapt_pixels, len(adapt_samples)
        evaluation = f"{images} itself: transductive (their statistics adapted the model; their labels were not used)"
    else:
        eval_samples, eval_pixels, shared, evaluation = [], adapt_pixels[:0], 0, "none: no labelled image given"

    run = init_run(config, force=force)
    with_source = inside(run.root, "adapt", SOURCE_CHECKPOINT)
    with_source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.train / "model.pt", with_source)
    run.data.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.data.iterdir()):
        if item.is_file():
            shutil.copyfile(item, run.data / item.name)
    run.train.mkdir(parents=True, exist_ok=True)
    for extra in ("history.csv", "curves.png"):
        if (src.train / extra).is_file():
            shutil.copyfile(src.train / extra, run.train / extra)
    adaptation = {
        "method": "AdaBN (Li et al. 2016): batch-norm running statistics re-estimated, cumulative average"
        + ("" if not from_block else f", in the trained blocks {from_block}+ only"),
        "source_run": str(src.root),
        "source_checkpoint_sha256": sha256_file(src.train / "model.pt"),
        "images_source": str(images),
        "image_sha256": sorted(sha256_file(s.path) for s in adapt_samples),
        **done,
        "seed": seed,
    }
    new_meta = {k: v for k, v in meta.items() if k not in ("checkpoint_sha256", "timings")}
    new_meta["adaptation"] = adaptation
    save_checkpoint(run.train / "model.pt", adapted, new_meta)
    new_meta["checkpoint_sha256"] = sha256_file(run.train / "model.pt")
    new_meta["timings"] = meta.get("timings", {})
    write_json_atomic(run.train / "meta.json", new_meta)

    report: dict[str, Any] = {
        "run": run.root.name,
        "source_run": str(src.root),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "adaptation": {k: v for k, v in adaptation.items() if k != "image_sha256"},
        "evaluation": evaluation,
        "eval_images_also_adapted_on": shared,
        "calibration": "a random sample of the adaptation images (the new station through its new statistics)",
    }
    if eval_samples:
        report["accuracy"] = before_after(source_model_, adapted, eval_samples, eval_pixels, spec, classes)
        a = report["accuracy"]["all"]
        log(
            f"new station ({len(eval_samples)} labelled images): balanced accuracy "
            f"{a['before']['balanced_accuracy']:.3f} before, {a['after']['balanced_accuracy']:.3f} after"
        )
    report["gap"] = _gap_before_after(
        source_model_, adapted, spec, dataset, eval_samples or adapt_samples,
        eval_pixels if eval_samples else adapt_pixels, max_gap_images=max_gap_images, seed=seed, log=log,
    )  # fmt: skip
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(inside(run.root, "adapt", "report.json"), report)
    from edgetl.transfer.section import adapt_markdown

    write_text_atomic(inside(run.root, "adapt", "report.md"), "\n".join(adapt_markdown(report)) + "\n")
    if build:
        _build_adapted(config, run, adapt_samples, adapt_pixels, spec, log=log)
    return report


def _gap_before_after(
    before: Any,
    after: Any,
    spec: Any,
    dataset: Any,
    samples: list[Sample],
    pixels: np.ndarray,
    *,
    max_gap_images: int | None,
    seed: int,
    log: Any,
) -> dict[str, Any]:
    """The gap of the new station's images from the training images, through the model before and after."""
    from edgetl.transfer.gap import gap_between
    from edgetl.transfer.images import embed, load_pixels, subsample_groups

    reference = subsample_groups(dataset.split("train"), max_gap_images, seed=seed)
    keep = subsample_groups(samples, max_gap_images, seed=seed)
    positions = {id(s): i for i, s in enumerate(samples)}
    new_pixels = pixels[[positions[id(s)] for s in keep]]
    ref_emb = embed(before, spec, load_pixels(reference, spec))
    out = {}
    for when, model in (("before", before), ("after", after)):
        figures = gap_between(ref_emb, embed(model, spec, new_pixels), reference, keep, slice_by="none", seed=seed)
        out[when] = figures["all"]
        log(f"gap {when} adaptation: {out[when]['verdict']}")
    out["note"] = (
        "reference: the source's train split through the source model; new: the same new-station images through the "
        "model before and after AdaBN (each station through the statistics it is served with)"
    )
    return out


def _build_adapted(config: Any, run: RunDir, samples: list[Sample], pixels: np.ndarray, spec: Any, *, log: Any) -> None:
    """Export, calibrate on the adaptation images, compile, bundle and bench the adapted run."""
    from edgetl.pipeline import stage_bench, stage_bundle, stage_compile, stage_export
    from edgetl.targets.profiles import resolve_profile

    profiles = [resolve_profile(t) for t in config.targets]
    stage_export(config, run)
    if any("int8" in p.precisions for p in profiles):
        calibrate_on_images(run, samples, pixels, spec, count=config.calibration.samples, seed=config.calibration.seed)
    for profile in profiles:
        stage_compile(config, run, profile)
    for profile in profiles:
        if profile.tensorrt is not None:
            stage_bundle(config, run, profile)
    stage_bench(config, run, profiles)
    log(f"adapted run built: {run.root / 'report.md'}")


def read_adapt_report(run: RunDir) -> dict[str, Any] | None:
    """adapt/report.json of an adapted run, or None."""
    path = run.root / "adapt" / "report.json"
    return read_json(path) if path.is_file() else None
