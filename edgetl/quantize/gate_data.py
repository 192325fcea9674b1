"""The images a run's INT8 artifacts are gated on, and the FP32 model's logits on them.

The validation split; when it is too small to trust choices on its own (dataset.json's ``validation.adequate``),
also the training images outside the calibration set (the FP32 model was fitted on them, so their agreement with
FP32 is what counts there, not their accuracy), up to ``quantization.gate.max_images``. The test split is never
read: it is kept for the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.config import BuildConfig
from edgetl.quantize.calibration import CalibrationSet
from edgetl.quantize.gate import GateData
from edgetl.quantize.settings import GateSpec
from edgetl.run import RunDir


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
    samples = dataset.split("val")
    validation = dataset.info.get("validation")
    small = isinstance(validation, dict) and not validation.get("adequate", True)
    source = f"the validation split ({len(samples)} images)"
    if small:
        calibrated = {f["path"] for f in (calib.manifest.get("files", []) if calib else [])}
        extra = [s for s in dataset.split("train") if s.path.as_posix() not in calibrated]
        room = max(spec.max_images - len(samples), 0)
        extra = [extra[i] for i in np.unique(np.linspace(0, len(extra) - 1, min(room, len(extra))).astype(int))]
        samples = [*samples, *extra] if extra else samples
        source = (
            f"the validation split (too small on its own) and {len(extra)} training images outside the "
            f"calibration set ({len(samples)} images)"
        )
    samples = samples[: spec.max_images]
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
    )
