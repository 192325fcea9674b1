"""The images a run's INT8 artifacts are gated on, and the FP32 model's logits on them.

The validation split first, then training images outside the calibration set, up to
``quantization.gate.max_images``. The FP32 model was fitted on those training images, so what they measure is a
candidate's agreement with FP32 (and its drops against FP32's answers), not its accuracy; unseen by calibration,
they are as good a test of quantization as any. A candidate is screened on the validation split and read on the
rest only when it passes there (:func:`edgetl.quantize.gate.screened_gate`); when the validation split is too small
to trust choices on its own (dataset.json's ``validation.adequate``), every candidate is scored on all of them at
once. The test split is never read: it is kept for the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.config import BuildConfig
from edgetl.data.dataset import Dataset, Sample
from edgetl.quantize.calibration import CalibrationSet
from edgetl.quantize.gate import GateData
from edgetl.quantize.settings import GateSpec
from edgetl.run import RunDir


def gate_samples(dataset: Dataset, calibrated: set[str], max_images: int) -> tuple[list[Sample], int | None, str, str]:
    """(the gate's samples, how many of them screen a candidate or None, the samples in words, the screen in
    words): the validation split, then training images outside ``calibrated`` (paths) spread evenly over the
    split, at most ``max_images`` in all."""
    val = dataset.split("val")[:max_images]
    validation = dataset.info.get("validation")
    small = isinstance(validation, dict) and not validation.get("adequate", True)
    extra = [s for s in dataset.split("train") if s.path.as_posix() not in calibrated]
    room = max(max_images - len(val), 0)
    extra = [extra[i] for i in np.unique(np.linspace(0, len(extra) - 1, min(room, len(extra))).astype(int))]
    screen_source = f"the validation split ({len(val)} images)"
    if not extra:
        return val, None, screen_source, screen_source
    samples = [*val, *extra]
    outside = f"{len(extra)} training images outside the calibration set ({len(samples)} images)"
    if small or not val:
        return samples, None, f"the validation split (too small on its own) and {outside}", screen_source
    return samples, len(val), f"{screen_source}, then for a candidate that passes there also {outside}", screen_source


def gate_data_for_run(
    run: RunDir, config: BuildConfig, calib: CalibrationSet | None, onnx_path: Path, spec: GateSpec
) -> GateData:
    """Gate images of ``run`` (see the module docstring), preprocessed as at deploy time, with FP32 logits."""
    from edgetl.bench.accuracy import good_class_index
    from edgetl.custody import read_meta, verified_split
    from edgetl.quantize.evaluate import logits_of
    from edgetl.runtime.preprocess import PreprocessSpec, preprocess_file

    meta = read_meta(run)
    spec_pre = PreprocessSpec.model_validate(meta["preprocess"])
    dataset = verified_split(run, "compile")
    calibrated = {f["path"] for f in (calib.manifest.get("files", []) if calib else [])}
    samples, screen, source, screen_source = gate_samples(dataset, calibrated, spec.max_images)
    images = np.concatenate([preprocess_file(s.path, spec_pre) for s in samples]).astype(np.float32)
    labels = np.array([dataset.label_index(s) for s in samples])
    classes = list(dataset.classes)
    train_counts = [sum(1 for s in dataset.split("train") if s.label == c) for c in classes]
    good = good_class_index(classes, good=config.bench.good_class, counts=train_counts)
    return GateData(
        images=images,
        labels=labels,
        reference=logits_of(onnx_path, images),
        groups=[s.group or s.path.as_posix() for s in samples],
        good_index=good,
        max_false_reject=config.bench.max_false_reject,
        source=source,
        screen=screen,
        screen_source=screen_source,
    )
