"""The drift reference a bundle carries: embeddings of the images the model was validated on, for the line.

For a run: its train and validation images through its own model. For an adapted run: the adaptation images (the
new station) through the adapted model, the domain it is deployed on. The embedding is the one
:func:`edgetl.features.embedder_from_model` computes (the FP32 backbone's pooled, L2-normalised features), which is
what the line must compute to score a window (:func:`edgetl.runtime.drift.score_window`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.errors import IntegrityError
from edgetl.files import atomic_path, sha256_file
from edgetl.lock import writes_run
from edgetl.paths import inside
from edgetl.run import RunDir
from edgetl.runtime.drift import DriftReference, reference_from_embeddings

DEFAULT_FILE = ("drift", "reference.npz")
EMBEDDER_FILE = ("drift", "embedder.onnx")


def drift_reference(run: RunDir, *, sample_size: int = 256, seed: int = 0) -> DriftReference:
    """Compute the drift reference of a run (nothing is written).

    Raises:
        IntegrityError: an adapted run's adaptation images changed since it was adapted.
    """
    from edgetl.custody import verified_split
    from edgetl.transfer.gap import models_of
    from edgetl.transfer.images import embed, load_pixels, read_images, subsample_groups

    model, _, spec, meta = models_of(run)
    adaptation = meta.get("adaptation")
    if isinstance(adaptation, dict):
        source = Path(adaptation["images_source"])
        samples = read_images(source, classes=meta["classes"])
        if sorted(sha256_file(s.path) for s in samples) != adaptation.get("image_sha256"):
            raise IntegrityError(
                f"the adaptation images {source} changed since {run.root} was adapted on them",
                hint="restore them, or adapt again with 'edgetl adapt ... --force'",
            )
        what = f"the adaptation images {source} through the adapted model"
    else:
        dataset = verified_split(run, "drift reference")
        samples = dataset.split("train") + dataset.split("val")
        what = "the train and validation splits through the run's model"
    samples = subsample_groups(samples, 4 * sample_size, seed=seed)
    embeddings = embed(model, spec, load_pixels(samples, spec))
    info: dict[str, Any] = {
        "run": run.root.name,
        "images": what,
        "embedded": len(samples),
        "checkpoint_sha256": meta.get("checkpoint_sha256"),
        "embedding": "pooled, L2-normalised backbone features of the FP32 model (edgetl.features)",
        "preprocess": meta["preprocess"],
    }
    return reference_from_embeddings(embeddings, sample_size=sample_size, seed=seed, info=info)


@writes_run("drift reference")
def write_drift_reference(run: RunDir, *, sample_size: int = 256, seed: int = 0) -> Path:
    """Write runs/<name>/drift/reference.npz and the embedder that computes its embeddings on the line
    (drift/embedder.onnx: the FP32 backbone with its pooling); returns the reference's path (a bundle copies both).
    """
    from edgetl.prefix import export_prefix
    from edgetl.transfer.gap import models_of

    reference = drift_reference(run, sample_size=sample_size, seed=seed)
    model, _, spec, _ = models_of(run)
    path = inside(run.root, *DEFAULT_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(inside(run.root, *EMBEDDER_FILE)) as tmp:
        export_prefix(model, len(model.blocks), spec, tmp)
    with atomic_path(path) as tmp:
        reference.save(tmp)
    return path


def drift_files(run: RunDir) -> tuple[Path, Path, dict[str, Any]] | None:
    """(reference, embedder, reference info) of the run's current model, written first when missing or made for
    another checkpoint; None when the run has too few images for a reference (fewer than 10)."""
    from edgetl.custody import read_meta

    path, embedder = inside(run.root, *DEFAULT_FILE), inside(run.root, *EMBEDDER_FILE)
    checkpoint = read_meta(run).get("checkpoint_sha256")
    current = None
    if path.is_file() and embedder.is_file():
        try:
            current = DriftReference.load(path)
        except (ValueError, OSError):
            current = None
    if current is None or current.info.get("checkpoint_sha256") != checkpoint:
        try:
            write_drift_reference(run)
        except ValueError as exc:  # too few embeddings
            if "at least 10" not in str(exc):
                raise
            return None
        current = DriftReference.load(path)
    return path, embedder, current.info
