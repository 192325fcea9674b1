"""``edgetl study transfer``: ImageNet-pretrained against random initialisation, on the run's own data.

Learning curves: each arm trains on 10 / 25 / 50 / 100 % of the run's training groups (whole groups, drawn per
class, nested: a seed's 10 % is inside its 25 %), 3 seeds each, picks its epoch on the run's validation split and
is scored once on its test split (the same images for every fit), with 95 % intervals (a bootstrap over test
groups). Wall time is recorded epoch by epoch, so the time each arm needs to reach a score is measured too.

- **pretrained**: the run's recipe (``meta.json`` "recipe": trained blocks, resize, class weighting, learning rate,
  augmentation strength, schedule); its frozen blocks are computed once for the whole study (that time is added to
  every pretrained fit, as a developer pays it once per run);
- **scratch**: the same backbone, randomly initialised, with its own recipe: every block trained at one learning
  rate (``scratch_lr``, 3e-3 by default against the recipe's head rate and 0.3x for the blocks), no layer decay,
  ``scratch_epochs`` epochs (16) without early stopping (a net from scratch plateaus at one class for several
  epochs before it learns; the best validation epoch is kept); the same augmentation, class weighting and batch
  size.

Both arms use one input side: the recipe's on a GPU; on a CPU at most 128 px (``input_size``), which keeps the
default study near an hour on 2 cores for a run of about 700 training images (scratch training is the cost).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgetl.data.dataset import Sample
from edgetl.files import atomic_path, read_json, sha256_bytes, write_json_atomic, write_text_atomic
from edgetl.lock import writes_run
from edgetl.paths import inside
from edgetl.run import RunDir

ARMS = ("pretrained", "scratch")
CPU_SIDE = 128
STUDY_FORMAT = "edgetl-study-transfer-v1"


@dataclass(frozen=True)
class StudySettings:
    """What a study trains; ``None`` fields are resolved from the run and the device."""

    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    seeds: int = 3
    input_size: int | None = None
    epochs: int | None = None
    scratch_epochs: int = 16
    scratch_patience: int | None = None  # None: the whole schedule (scratch plateaus before it learns)
    scratch_lr: float = 3e-3
    device: str = "cpu"
    threads: int | None = None


def nested_fractions(
    samples: list[Sample], classes: list[str], fractions: tuple[float, ...], *, seed: int
) -> dict[float, np.ndarray]:
    """Indices into ``samples`` of each fraction of the groups, drawn per class (a group's majority label), nested."""
    names = [s.group or f"image-{i}" for i, s in enumerate(samples)]
    by_group: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_group.setdefault(name, []).append(i)
    labels: dict[str, str] = {}
    for name, members in by_group.items():
        counts: dict[str, int] = {}
        for i in members:
            counts[samples[i].label] = counts.get(samples[i].label, 0) + 1
        labels[name] = max(sorted(counts), key=lambda c: counts[c])
    rng = np.random.default_rng(seed)
    orders = {c: [g for g in sorted(by_group) if labels[g] == c] for c in classes}
    orders = {c: [groups[int(i)] for i in rng.permutation(len(groups))] for c, groups in orders.items()}
    out = {}
    for fraction in sorted(fractions):
        chosen = []
        for groups in orders.values():
            if groups:
                chosen += groups[: max(1, int(np.ceil(fraction * len(groups))))]
        out[fraction] = np.sort(np.array([i for g in chosen for i in by_group[g]], dtype=int))
    return out


def fit_key(arm: str, settings: StudySettings, meta: dict[str, Any], side: int) -> str:
    """What decides one arm's fits (a finished fit with the same key is reused)."""
    own = {"epochs": settings.epochs} if arm == "pretrained" else {
        "scratch_epochs": settings.scratch_epochs, "scratch_patience": settings.scratch_patience,
        "scratch_lr": settings.scratch_lr}  # fmt: skip
    payload = {"arm": arm, **own, "side": side, "device": settings.device, "checkpoint": meta.get("checkpoint_sha256"),
               "dataset": meta.get("dataset_hash"), "recipe": meta.get("recipe")}  # fmt: skip
    return sha256_bytes(json.dumps(payload, sort_keys=True, default=str).encode("utf-8"))


def resolve_side(settings: StudySettings, recipe: dict[str, Any], device: Any) -> int:
    """The input side both arms use (see the module docstring)."""
    if settings.input_size is not None:
        return int(settings.input_size)
    side = int(recipe.get("input_size", 224))
    return side if device.type == "cuda" else min(side, CPU_SIDE)


@writes_run("study")
def run_study(run: RunDir, settings: StudySettings, *, log: Any = print, resume: bool = True) -> dict[str, Any]:
    """Run the study; write study/transfer.{json,csv,png,md}. Finished fits of the same settings are reused.

    Returns what transfer.json holds.
    """
    import torch

    from edgetl.custody import read_meta, verified_split
    from edgetl.fit import InputCache
    from edgetl.run import open_run
    from edgetl.train import resolve_device

    _, config = open_run(run.root)
    meta = read_meta(run)
    dataset = verified_split(run, "study")
    recipe = dict(meta.get("recipe") or {})
    if not recipe:
        raise _no_recipe(run)
    device = resolve_device(settings.device)
    threads = settings.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    side = resolve_side(settings, recipe, device)
    classes = list(dataset.classes)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    y = {name: np.array([classes.index(s.label) for s in part]) for name, part in
         (("train", train), ("val", val), ("test", test))}  # fmt: skip
    tc = config.train
    gray = meta["preprocess"]["channels"] == 1
    pretrained_factory = _pretrained_factory(config, meta, len(classes), gray)
    start = int(meta["num_blocks"]) - int(recipe.get("trainable_blocks", 0))
    resize = str(recipe.get("resize", "stretch"))
    strength = float(recipe.get("augment_strength", 1.0))
    backend = "torch" if device.type == "cuda" else tc.cache_backend
    common = {"channels": 1 if gray else 3, "pretrained": pretrained_factory, "cache_start": start,
              "augment": tc.augment, "backend": backend, "device": device, "seed": tc.seed,
              "threads": threads * 2}  # fmt: skip
    train_inputs = InputCache(train, views=tc.views, **common)
    eval_inputs = InputCache(val + test, views=1, **common)
    spec = train_inputs.spec(side, resize)
    keys = {arm: fit_key(arm, settings, meta, side) for arm in ARMS}
    partial_path = inside(run.root, "study", "transfer.partial.json")
    done: dict[str, Any] = {}
    if resume and partial_path.is_file():
        saved = read_json(partial_path)
        fits_saved = saved.get("fits", {}) if isinstance(saved, dict) else {}
        done = {
            k: v for k, v in fits_saved.items() if isinstance(v, dict) and v.get("key") == keys.get(str(v.get("arm")))
        }
        if done:
            log(f"reusing {len(done)} finished fits from {partial_path}")
    t_cache = time.perf_counter()
    cached = {
        "pretrained": (train_inputs.views(size=side, resize=resize, strength=strength, start=start),
                       eval_inputs.views(size=side, resize=resize, strength=strength, start=start)),
    }  # fmt: skip
    cache_seconds = time.perf_counter() - t_cache
    cached["scratch"] = (train_inputs.views(size=side, resize=resize, strength=strength, start=0),
                         eval_inputs.views(size=side, resize=resize, strength=strength, start=0))  # fmt: skip
    log(f"study inputs ready at {side} px (frozen blocks 0-{start - 1} cached in {cache_seconds:.0f} s)")
    fits = []
    total = len(settings.fractions) * settings.seeds * len(ARMS)
    for seed in range(settings.seeds):
        subsets = nested_fractions(train, classes, settings.fractions, seed=seed)
        for fraction in sorted(settings.fractions):
            for arm in ARMS:
                name = f"{arm}-{fraction:g}-{seed}"
                if name not in done:
                    done[name] = _one_fit(
                        arm,
                        fraction=fraction,
                        seed=seed,
                        index=subsets[fraction],
                        cached=cached[arm],
                        y=y,
                        n_val=len(val),
                        tc=tc,
                        recipe=recipe,
                        settings=settings,
                        start=start if arm == "pretrained" else 0,
                        spec=spec,
                        new_model=(
                            pretrained_factory
                            if arm == "pretrained"
                            else _random_factory(meta, len(classes), gray, seed)
                        ),
                        device=device,
                        cache_seconds=cache_seconds if arm == "pretrained" else 0.0,
                    )
                    done[name]["key"] = keys[arm]
                    write_json_atomic(partial_path, {"format": STUDY_FORMAT, "fits": done})
                fit_row = done[name]
                fits.append(fit_row)
                log(
                    f"[{len(fits)}/{total}] {arm} {fraction:.0%} seed {seed}: {fit_row['train_images']} images, "
                    f"test balanced accuracy {fit_row['test_balanced_accuracy']:.3f} (epoch {fit_row['best_epoch']}, "
                    f"{fit_row['seconds_to_best']:.0f} s to it, {fit_row['seconds']:.0f} s in all)"
                )
    groups = np.array([s.group or f"image-{i}" for i, s in enumerate(test)])
    result = summarise(fits, y["test"], groups, settings=settings, side=side)
    result.update(
        {
            "format": STUDY_FORMAT,
            "run": run.root.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "device": str(device),
            "threads": threads,
            "input_size": side,
            "settings": asdict(settings),
            "recipes": _recipes(recipe, settings, tc),
            "cache_seconds": round(cache_seconds, 1),
            "test_images": len(test),
            "test_groups": len(set(groups.tolist())),
            "run_model": (meta.get("val_metrics") or {}),
        }
    )
    _write_outputs(run, result, fits)
    partial_path.unlink(missing_ok=True)
    return result


def _no_recipe(run: RunDir) -> Exception:
    from edgetl.errors import InvalidFileError

    return InvalidFileError(
        f"{run.train / 'meta.json'} records no recipe; the study trains the pretrained arm with it",
        hint=f"train the run again with 'edgetl train {run.root}'",
    )


def _pretrained_factory(config: Any, meta: dict[str, Any], num_classes: int, gray: bool) -> Any:
    """A function returning a fresh classifier whose backbone holds the ImageNet weights (read once)."""
    import copy

    from edgetl.models import build_classifier, resolve_weights

    mc = config.model
    weights, _ = resolve_weights(mc.arch, path=mc.weights, sha256=mc.weights_sha256, allow_download=mc.allow_download)
    first = build_classifier(mc.arch, num_classes, gray=gray, dropout=meta.get("dropout", mc.dropout),
                             weights_file=weights)  # fmt: skip
    backbone = copy.deepcopy(first.blocks.state_dict())

    def new() -> Any:
        model = build_classifier(mc.arch, num_classes, gray=gray, dropout=meta.get("dropout", mc.dropout))
        model.blocks.load_state_dict(backbone)
        return model

    return new


def _random_factory(meta: dict[str, Any], num_classes: int, gray: bool, seed: int) -> Any:
    def new() -> Any:
        import torch

        from edgetl.models import build_classifier

        torch.manual_seed(seed)  # the random initialisation is part of the seed
        return build_classifier(meta["arch"], num_classes, gray=gray, dropout=meta.get("dropout", 0.2))

    return new


def _recipes(recipe: dict[str, Any], settings: StudySettings, tc: Any) -> dict[str, str]:
    blocks = int(recipe.get("trainable_blocks", 0))
    return {
        "pretrained": (
            f"the run's recipe: {blocks} trained blocks + head on ImageNet weights, lr {recipe.get('lr')} (blocks "
            f"x{tc.backbone_lr_scale}), class weighting {recipe.get('class_weighting')}, augmentation x"
            f"{recipe.get('augment_strength')}, "
            + (f"{settings.epochs} epochs" if settings.epochs else
               f"{recipe.get('stop_epoch') or recipe.get('epochs')} epochs"
               + (" (fixed)" if recipe.get("stop_epoch") else f", best validation epoch, patience {tc.patience}"))
        ),
        "scratch": (
            f"random initialisation, every block trained at lr {settings.scratch_lr} (no layer decay), "
            f"{settings.scratch_epochs} epochs, best validation epoch"
            + (f", patience {settings.scratch_patience}" if settings.scratch_patience else " (no early stop)")
            + "; the "
            f"same augmentation, class weighting ({recipe.get('class_weighting')}) and batch size ({tc.batch_size})"
        ),
    }  # fmt: skip


def _one_fit(
    arm: str,
    *,
    fraction: float,
    seed: int,
    index: np.ndarray,
    cached: tuple[Any, Any],
    y: dict[str, np.ndarray],
    n_val: int,
    tc: Any,
    recipe: dict[str, Any],
    settings: StudySettings,
    start: int,
    spec: Any,
    new_model: Any,
    device: Any,
    cache_seconds: float,
) -> dict[str, Any]:
    """Train one arm on one subset; its test predictions, chosen epoch and the time to it."""
    from edgetl.fit import fit, predict

    train_views, eval_views = cached
    val_x = eval_views.subset(np.arange(n_val)).base()
    test_x = eval_views.subset(np.arange(n_val, eval_views.count)).base()
    strength = float(recipe.get("augment_strength", 1.0))
    stop_at = None
    if arm == "pretrained":
        config = tc.model_copy(update={"epochs": settings.epochs or int(recipe.get("epochs") or tc.epochs)})
        lr = float(recipe.get("lr", tc.lr))
        stop_at = None if settings.epochs else recipe.get("stop_epoch")
    else:
        config = tc.model_copy(
            update={
                "epochs": settings.scratch_epochs,
                "patience": settings.scratch_patience or settings.scratch_epochs,
                "backbone_lr_scale": 1.0,
                "layer_decay": 1.0,
            }
        )
        lr = settings.scratch_lr
    model = new_model()
    t0 = time.perf_counter()
    result = fit(
        model,
        train_views.subset(index),
        y["train"][index],
        config=config,
        lr=lr,
        class_weighting=str(recipe.get("class_weighting", tc.class_weighting)),
        augment=tc.augment.scaled(strength),
        spec=spec,
        rng=np.random.default_rng([tc.seed, seed, int(fraction * 1000)]),
        device=device,
        evaluate=(val_x, y["val"]),
        stop_at=stop_at,
    )
    seconds = time.perf_counter() - t0
    model.load_state_dict(result.best_state)
    pred = predict(model, start, test_x, spec=spec).argmax(1).numpy()
    elapsed = np.cumsum([row["seconds"] for row in result.history]) + cache_seconds
    present = np.unique(y["test"])
    bacc = float(np.mean([np.mean(pred[y["test"] == c] == c) for c in present]))
    return {
        "arm": arm,
        "fraction": fraction,
        "seed": seed,
        "train_images": len(index),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "seconds": round(seconds + cache_seconds, 2),
        "seconds_to_best": round(float(elapsed[result.best_epoch - 1]), 2),
        "val_curve": [round(float(r.get("val_balanced_accuracy", 0.0)), 4) for r in result.history],
        "elapsed": [round(float(e), 2) for e in elapsed],
        "test_balanced_accuracy": bacc,
        "test_accuracy": float(np.mean(pred == y["test"])),
        "test_pred": pred.astype(int).tolist(),
    }


def _bacc(y: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> float:
    yy, pp = y[idx], pred[idx]
    return float(np.mean([np.mean(pp[yy == c] == c) for c in np.unique(yy)]))


def summarise(
    fits: list[dict[str, Any]], y_test: np.ndarray, groups: np.ndarray, *, settings: StudySettings, side: int
) -> dict[str, Any]:
    """Per fraction and arm: the seed-mean test balanced accuracy with its interval, the difference, the times;
    then the three claims as measured."""
    from edgetl.bench.intervals import group_bootstrap_interval

    rows = []
    preds: dict[tuple[str, float], list[np.ndarray]] = {}
    for f in fits:
        preds.setdefault((f["arm"], f["fraction"]), []).append(np.asarray(f["test_pred"]))

    def mean_bacc(arm: str, fraction: float, idx: np.ndarray) -> float:
        return float(np.mean([_bacc(y_test, p, idx) for p in preds[(arm, fraction)]]))

    everything = np.arange(len(y_test))
    for fraction in sorted({f["fraction"] for f in fits}):
        row: dict[str, Any] = {"fraction": fraction}
        for arm in ARMS:
            mine = [f for f in fits if f["arm"] == arm and f["fraction"] == fraction]
            if not mine:
                continue
            scores = [f["test_balanced_accuracy"] for f in mine]
            row[arm] = {
                "balanced_accuracy": mean_bacc(arm, fraction, everything),
                "interval": group_bootstrap_interval(
                    lambda i, a=arm, fr=fraction: mean_bacc(a, fr, i), groups, resamples=500
                ),
                "seed_range": [min(scores), max(scores)],
                "seeds": len(mine),
                "train_images": int(np.mean([f["train_images"] for f in mine])),
                "seconds": float(np.mean([f["seconds"] for f in mine])),
                "seconds_to_best": float(np.mean([f["seconds_to_best"] for f in mine])),
            }
        if all(arm in row for arm in ARMS):
            row["difference"] = row["pretrained"]["balanced_accuracy"] - row["scratch"]["balanced_accuracy"]
            row["difference_interval"] = group_bootstrap_interval(
                lambda i, fr=fraction: mean_bacc("pretrained", fr, i) - mean_bacc("scratch", fr, i),
                groups,
                resamples=500,
            )
        rows.append(row)
    return {"rows": rows, "claims": claims(rows, fits),
            "fits": [{k: v for k, v in f.items() if k not in ("test_pred", "key")} for f in fits]}  # fmt: skip


def _time_to(fits: list[dict[str, Any]], target: float) -> float | None:
    """Mean over seeds of the wall time at which the validation curve first reaches ``target`` (None: never)."""
    times = []
    for f in fits:
        reached = [t for v, t in zip(f["val_curve"], f["elapsed"], strict=True) if v >= target]
        if not reached:
            return None
        times.append(reached[0])
    return float(np.mean(times)) if times else None


def claims(rows: list[dict[str, Any]], fits: list[dict[str, Any]]) -> dict[str, str]:
    """The three transfer-learning claims, restated as measured."""
    full = next((r for r in rows if r["fraction"] == max(r["fraction"] for r in rows)), None)
    out: dict[str, str] = {}
    if full is None or not all(a in full for a in ARMS):
        return {"note": "both arms at the largest fraction are needed"}
    top = full["fraction"]
    pre = [f for f in fits if f["arm"] == "pretrained" and f["fraction"] == top]
    scr = [f for f in fits if f["arm"] == "scratch" and f["fraction"] == top]
    target = float(np.mean([max(f["val_curve"]) for f in scr]))
    t_pre, t_scr = _time_to(pre, target), _time_to(scr, target)
    if t_pre is None:
        out["development_time"] = (
            f"'cuts development time by 40 %': not so here: at {top:.0%} of the data the pretrained arm never reached "
            f"the scratch arm's best validation balanced accuracy ({target:.3f})."
        )
    elif t_scr is not None:
        saving = 1 - t_pre / t_scr
        out["development_time"] = (
            f"'cuts development time by 40 %': measured {saving:.0%} less compute time to reach the scratch arm's best "
            f"validation balanced accuracy ({target:.3f}) at {top:.0%} of the data: {t_pre:.0f} s pretrained (frozen "
            f"blocks cache included) against {t_scr:.0f} s from scratch (seed means; training compute only, not "
            "engineering time)."
        )
    diffs = [r for r in rows if "difference" in r]
    parts = []
    for r in diffs:
        s = r["scratch"]["balanced_accuracy"]
        iv = r.get("difference_interval") or [float("nan")] * 2
        parts.append(
            f"{r['fraction']:.0%}: {100 * r['difference']:+.1f} points [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}] "
            f"({100 * r['difference'] / s:+.0f} % relative)"
        )
    out["performance"] = (
        "'+15-20 % performance': pretrained minus scratch test balanced accuracy, by share of the training groups: "
        + "; ".join(parts)
        + "."
    )
    bespoke = full["scratch"]["balanced_accuracy"]
    ratios = [(r["fraction"], r["pretrained"]["balanced_accuracy"] / bespoke) for r in rows if "pretrained" in r]
    reach = {level: next((fr for fr, q in ratios if q >= level), None) for level in (0.85, 0.95)}
    out["fraction_of_data"] = (
        "'85-95 % of a bespoke model with a fraction of the data': against the scratch model on all the training "
        f"groups ({bespoke:.3f}), the pretrained arm reaches "
        + ", ".join(f"{q:.0%} with {fr:.0%}" for fr, q in ratios)
        + "; 85 % first at "
        + (f"{reach[0.85]:.0%}" if reach[0.85] is not None else "no fraction")
        + " and 95 % first at "
        + (f"{reach[0.95]:.0%}" if reach[0.95] is not None else "no fraction")
        + " of the data."
    )
    return out


def _write_outputs(run: RunDir, result: dict[str, Any], fits: list[dict[str, Any]]) -> None:
    from edgetl.transfer.section import study_markdown

    folder = inside(run.root, "study")
    write_json_atomic(folder / "transfer.json", result)
    buffer = io.StringIO()
    columns = ["arm", "fraction", "seed", "train_images", "best_epoch", "epochs_run", "seconds", "seconds_to_best",
               "test_balanced_accuracy", "test_accuracy"]  # fmt: skip
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(fits)
    write_text_atomic(folder / "transfer.csv", buffer.getvalue())
    _plot(folder / "transfer.png", result)
    write_text_atomic(folder / "transfer.md", "\n".join(study_markdown(result)) + "\n")


def _plot(path: Any, result: dict[str, Any]) -> None:
    fig = study_figure(result)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def study_figure(result: dict[str, Any]) -> Any:
    """Learning curves of both arms with their intervals, and validation score against wall time (a Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    curve, timing = fig.subplots(1, 2)
    colours = {"pretrained": "tab:blue", "scratch": "tab:orange"}
    for arm in ARMS:
        rows = [r for r in result["rows"] if arm in r]
        x = [100 * r["fraction"] for r in rows]
        mean = [r[arm]["balanced_accuracy"] for r in rows]
        low = [(r[arm]["interval"] or [m, m])[0] for r, m in zip(rows, mean, strict=True)]
        high = [(r[arm]["interval"] or [m, m])[1] for r, m in zip(rows, mean, strict=True)]
        curve.plot(x, mean, "o-", color=colours[arm], label=f"{arm} (mean of seeds)")
        curve.fill_between(x, low, high, color=colours[arm], alpha=0.2, label=f"{arm} 95 % interval")
        for f in result["fits"]:
            if f["arm"] == arm:
                curve.plot(100 * f["fraction"], f["test_balanced_accuracy"], ".", color=colours[arm], alpha=0.5)
        top = max(r["fraction"] for r in result["rows"])
        for f in result["fits"]:
            if f["arm"] == arm and f["fraction"] == top:
                timing.plot(f["elapsed"], f["val_curve"], "-", color=colours[arm], alpha=0.7,
                            label=arm if f["seed"] == 0 else None)  # fmt: skip
    curve.set(xscale="log", xlabel="share of the training groups (%)", ylabel="test balanced accuracy",
              title=f"learning curves ({result['input_size']} px)")  # fmt: skip
    curve.set_xticks([100 * f for f in sorted({r["fraction"] for r in result["rows"]})])
    curve.set_xticklabels([f"{100 * f:g}" for f in sorted({r["fraction"] for r in result["rows"]})])
    curve.legend(fontsize=8)
    timing.set(xlabel="wall time (s; pretrained includes the frozen-block cache)",
               ylabel="validation balanced accuracy", title="all training groups: score against time")  # fmt: skip
    timing.legend(fontsize=8)
    fig.tight_layout()
    return fig


def read_study(run: RunDir) -> dict[str, Any] | None:
    """study/transfer.json of a run, or None."""
    path = run.root / "study" / "transfer.json"
    return read_json(path) if path.is_file() else None
