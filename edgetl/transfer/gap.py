"""``edgetl gap``: how far new images are from what a run was trained on, seen through the run's own backbone.

Both sets are embedded by the run's checkpoint (its blocks + global average pooling, L2-normalised, in ONNX
Runtime, preprocessed by the run's spec); :mod:`edgetl.transfer.twosample` gives the figures and the verdict.
An adapted run (``edgetl adapt``) embeds the reference through the model it was adapted from, and the new images
through the adapted one: each station through the batch-norm statistics it is served with. The result goes to the
console and to ``runs/<name>/gap/<label>.json``; nothing is written outside the run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.data.dataset import Sample
from edgetl.files import write_json_atomic
from edgetl.lock import writes_run
from edgetl.paths import check_name, inside
from edgetl.run import RunDir

SLICE_BY = ("slice", "label", "none")
DEFAULT_MAX_IMAGES = 1000


def models_of(run: RunDir) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(the run's model, the model that embeds its reference, the preprocessing spec, meta)."""
    from edgetl.custody import check_checkpoint, read_meta
    from edgetl.models import load_checkpoint
    from edgetl.preprocess import PreprocessSpec
    from edgetl.transfer.adapt import source_model

    check_checkpoint(run)
    meta = read_meta(run)
    model, _ = load_checkpoint(run.train / "model.pt")
    reference = source_model(run, meta) or model
    return model, reference, PreprocessSpec.model_validate(meta["preprocess"]), meta


def default_label(images: Path) -> str:
    """A file-name-safe label from the new images' folder or manifest name."""
    stem = Path(images).stem if Path(images).suffix else Path(images).name
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip(".-") or "new"
    return check_name(safe, what="gap label")


def _scopes(reference: list[Sample], new: list[Sample], slice_by: str) -> list[tuple[str, list[int], list[int]]]:
    """(name, reference indices, new indices) of every comparison: all images, then each slice or class."""
    scopes = [("all", list(range(len(reference))), list(range(len(new))))]
    if slice_by == "slice" and len({s.slice for s in new}) > 1:
        for name in sorted({s.slice for s in new}):
            scopes.append(
                (f"slice {name or '(none)'}", scopes[0][1], [i for i, s in enumerate(new) if s.slice == name])
            )
    elif slice_by == "label" and any(s.label for s in new):
        for name in sorted({s.label for s in new}):
            ref = [i for i, s in enumerate(reference) if s.label == name]
            scopes.append((f"class {name or '(none)'}", ref, [i for i, s in enumerate(new) if s.label == name]))
    return scopes


def gap_between(
    reference_embeddings: np.ndarray,
    new_embeddings: np.ndarray,
    reference: list[Sample],
    new: list[Sample],
    *,
    slice_by: str = "slice",
    permutations: int = 1000,
    seed: int = 0,
    log: Any = None,
) -> dict[str, Any]:
    """Every figure, overall and per slice (or class), of embedded new images against embedded reference ones."""
    from edgetl.transfer.images import group_names
    from edgetl.transfer.twosample import compare

    ref_groups, new_groups = group_names(reference), group_names(new)
    out: dict[str, Any] = {}
    for name, ri, ni in _scopes(reference, new, slice_by):
        if len(ri) < 4 or len(ni) < 4:
            out[name] = {"images": [len(ri), len(ni)], "verdict": None, "note": "fewer than 4 images on one side"}
            continue
        out[name] = compare(
            reference_embeddings[ri],
            new_embeddings[ni],
            groups_x=ref_groups[ri],
            groups_y=new_groups[ni],
            permutations=permutations,
            seed=seed,
        )
        if log is not None:
            log(f"gap {name}: {summary_line(out[name])}")
    return out


def summary_line(figures: dict[str, Any]) -> str:
    """'large shift: MMD² 0.12 (p 0.001), Frechet 3.1 [2.8, 3.5] (floor 0.4, 48 dims), AUC 0.99 [0.98, 1.00]'."""
    if figures.get("verdict") is None:
        return figures.get("note", "not measured")
    m, f, c = figures["mmd"], figures["frechet"], figures["c2st"]
    floor = f.get("reference_split_half")
    interval = f.get("interval") or [float("nan")] * 2
    auc = "-" if c.get("auc") is None else f"{c['auc']:.3f} [{c['interval'][0]:.3f}, {c['interval'][1]:.3f}]"
    return (
        f"{figures['verdict']}: MMD² {m['mmd2']:.4f} (p {m['p_value']:.3f}), Frechet {f['distance']:.3f} "
        f"[{interval[0]:.3f}, {interval[1]:.3f}] ({f['dim']} dims; reference split-half "
        f"{'-' if floor is None else f'{floor:.3f}'}), classifier AUC {auc}"
    )


@writes_run("gap")
def run_gap(
    run: RunDir,
    images: Path,
    *,
    reference: Path | None = None,
    label: str | None = None,
    slice_by: str = "slice",
    max_images: int | None = DEFAULT_MAX_IMAGES,
    permutations: int = 1000,
    seed: int = 0,
    log: Any = None,
) -> dict[str, Any]:
    """Measure the gap between a run's training images (or ``reference``) and ``images``; write gap/<label>.json.

    ``max_images`` caps each side (whole groups, seeded). Returns what the file holds.

    Raises:
        ConfigError: ``slice_by`` is not one of :data:`SLICE_BY`.
    """
    from edgetl.config import ConfigError
    from edgetl.custody import verified_split
    from edgetl.transfer.images import embed, load_pixels, read_images, subsample_groups
    from edgetl.transfer.twosample import RULE

    if slice_by not in SLICE_BY:
        raise ConfigError(f"--slice-by {slice_by!r}: pick one of {', '.join(SLICE_BY)}.")
    name = check_name(label, what="gap label") if label else default_label(images)
    t0 = time.perf_counter()
    model, ref_model, spec, meta = models_of(run)
    if reference is None:
        ref_samples = verified_split(run, "gap").split("train")
        ref_source = f"the train split of {run.root}"
    else:
        ref_samples = read_images(reference, classes=meta["classes"])
        ref_source = str(reference)
    ref_samples = subsample_groups(ref_samples, max_images, seed=seed)
    new_samples = subsample_groups(read_images(images, classes=meta["classes"]), max_images, seed=seed)
    ref_emb = embed(ref_model if reference is None else model, spec, load_pixels(ref_samples, spec))
    new_emb = embed(model, spec, load_pixels(new_samples, spec))
    figures = gap_between(
        ref_emb, new_emb, ref_samples, new_samples, slice_by=slice_by, permutations=permutations, seed=seed, log=log
    )
    result = {
        "run": run.root.name,
        "label": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "embedding": (
            f"pooled, L2-normalised features of the run's backbone ({meta['arch']}, {len(model.blocks)} blocks + "
            f"global average pooling), ONNX Runtime, {spec.input_size} px {spec.resize}, {spec.channels} channel(s)"
        ),
        "adapted": "adaptation" in meta and reference is None,
        "reference": {"source": ref_source, "images": len(ref_samples), "groups": _groups(ref_samples)},
        "new": {"source": str(images), "images": len(new_samples), "groups": _groups(new_samples)},
        "max_images": max_images,
        "rule": RULE,
        "slice_by": slice_by,
        "scopes": figures,
        "verdict": figures["all"].get("verdict"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json_atomic(inside(run.root, "gap", f"{name}.json"), result)
    return result


def _groups(samples: list[Sample]) -> int:
    from edgetl.transfer.images import group_names

    return len(set(group_names(samples).tolist()))


def print_gap(result: dict[str, Any]) -> None:
    """The figures as a table, then the rule."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gap {result['label']}: {result['new']['source']} against {result['reference']['source']}")
    for column in ("scope", "images (ref / new)", "MMD² (p)", "Frechet [95 %] (split-half floor, dims)",
                   "classifier AUC [95 %]", "verdict"):  # fmt: skip
        table.add_column(column)
    for scope, f in result["scopes"].items():
        if f.get("verdict") is None:
            table.add_row(scope, f"{f['images'][0]} / {f['images'][1]}", "-", "-", "-", f.get("note", "-"))
            continue
        m, fr, c = f["mmd"], f["frechet"], f["c2st"]
        iv = fr.get("interval")
        floor = fr.get("reference_split_half")
        table.add_row(
            scope,
            f"{f['images'][0]} / {f['images'][1]}",
            f"{m['mmd2']:.4f} ({m['p_value']:.3f})",
            f"{fr['distance']:.3f}"
            + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")
            + f" ({'-' if floor is None else f'{floor:.3f}'}, {fr['dim']})",
            "-" if c.get("auc") is None else f"{c['auc']:.3f} [{c['interval'][0]:.3f}, {c['interval'][1]:.3f}]",
            f["verdict"],
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    console.print(f"rule: {result['rule']}")
    console.print(f"embedding: {result['embedding']}")
