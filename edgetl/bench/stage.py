"""The bench stage: measure every compiled artifact of a run (each in its own process), score it on the test split
against the FP32 PyTorch model, and write report.json / .md / .html."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from edgetl.config import BuildConfig
from edgetl.data.dataset import Dataset
from edgetl.lock import writes_run
from edgetl.run import RunDir
from edgetl.targets.profiles import TargetProfile


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message)


def threshold_source(run: RunDir, dataset: Dataset) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The recipe search's out-of-fold logits on train+val, when the validation split is too small to tune a
    reject threshold on its own (dataset.json's ``validation``) and the search left them (train/oof.npz)."""
    validation = dataset.info.get("validation")
    oof_file = run.train / "oof.npz"
    if not isinstance(validation, dict) or validation.get("adequate", True) or not oof_file.is_file():
        return None
    with np.load(oof_file, allow_pickle=False) as data:
        logits, labels, paths = data["logits"], data["labels"], data["paths"]
    pool = {s.path.as_posix() for s in dataset.samples if s.split in ("train", "val")}
    if set(paths.tolist()) != pool:
        _log(f"{oof_file} does not match this run's train+val split; thresholds are tuned on the validation split")
        return None
    return logits, labels, f"out-of-fold predictions of the cross-validated recipe ({len(labels)} train+val images)"


@writes_run("bench")
def bench_stage(
    config: BuildConfig, run: RunDir, profiles: list[TargetProfile], *, timings: dict[str, float] | None = None
) -> dict[str, Any]:
    """Measure every compiled artifact (each in its own process); write report.json / .md / .html.

    Accuracy is on the test split against the FP32 PyTorch model; the reject threshold (the good class against the
    rest) is tuned on the validation split for each artifact and stored beside it (threshold.json).
    ``timings`` (seconds per earlier stage; default: those of the run's last report) are recorded in the
    report with this stage's own.
    """
    started = time.perf_counter()
    from edgetl.bench.accuracy import agreement, disagreeing_images, good_class_index
    from edgetl.bench.harness import accuracy_section, measure_artifacts, reference_logits, write_threshold
    from edgetl.bench.report import assemble_report
    from edgetl.custody import check_artifacts, read_meta, verified_split
    from edgetl.data.inputs import split_pixels
    from edgetl.files import read_json, require_writable
    from edgetl.preprocess import PreprocessSpec, normalize
    from edgetl.report import write_report
    from edgetl.targets import Artifact, get_target

    settings = config.bench
    threads = settings.threads or os.cpu_count() or 1
    meta = read_meta(run)
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    dataset = verified_split(run, "bench")
    pixels, inputs, labels = {}, {}, {}
    for split in ("val", "test"):
        pixels[split], labels[split], _ = split_pixels(dataset, spec, split)
        inputs[split] = normalize(pixels[split], spec)  # PyTorch's input; each artifact gets its own (worker)
    test_samples = dataset.split("test")
    paths = [str(s.path) for s in test_samples]
    slices = [s.slice for s in test_samples]
    classes = list(dataset.classes)
    train_counts = [sum(1 for s in dataset.split("train") if s.label == c) for c in classes]
    good = good_class_index(classes, good=settings.good_class, counts=train_counts)
    reference = reference_logits(
        run.train / "model.pt", inputs, run.root / "bench" / "reference_logits.npz", threads=threads
    )
    groups = [s.group for s in test_samples]
    tune_on = threshold_source(run, dataset)
    if tune_on is not None:
        _log(f"reject thresholds: tuned on the {tune_on[2]}")

    def section_of(logits: dict[str, np.ndarray]) -> dict[str, Any]:
        return accuracy_section(logits, labels, classes, slices, settings, good, groups=groups, tune_on=tune_on)

    ref_section = section_of(reference)
    _log(f"inputs and PyTorch FP32 reference logits ready in {time.perf_counter() - started:.1f} s")
    measurable = []
    for profile in profiles:
        if get_target(profile.backend).is_available():
            measurable.append(profile)
        else:
            where = "its bundle's host checks stand in" if profile.tensorrt else "measure it where it is installed"
            _log(f"bench {profile.name}: {profile.backend} cannot run here; {where}.")
    folders = [(p, precision, run.target(p.name, precision)) for p in measurable for precision in p.precisions]
    artifacts = [Artifact.read(folder) for _, _, folder in folders]
    check_artifacts(run, artifacts)
    require_writable(run.root, *(folder for _, _, folder in folders))
    measured = measure_artifacts(
        [folder for _, _, folder in folders],
        pixels,
        [s.path for s in test_samples],
        settings,
        threads=threads,
        workdir=run.root,
        log=_log,
    )
    results: list[dict[str, Any]] = []
    side_files = []  # written after the report, so a failed write never loses the measurements
    for (profile, precision, folder), artifact, (speed, logits) in zip(folders, artifacts, measured, strict=True):
        section = section_of(logits)
        if section["threshold"] is not None and good is not None:
            side_files.append((folder, section["threshold"]))
        agree = agreement(logits["test"], reference["test"])
        results.append(
            {
                "target": profile.name,
                "backend": profile.backend,
                "precision": precision,
                "path": str(artifact.model_path),
                "size_bytes": artifact.size_bytes,
                **section,
                **speed,
                "fp32_agreement": agree["top1_agreement"],
                "logits_vs_fp32": agree,
                "disagreements": disagreeing_images(logits["test"], reference["test"], paths, labels["test"], classes),
                "details": artifact.details,
            }
        )
        unreliable = " (unreliable: host busy)" if speed["host_check"]["busy"] else ""
        _log(
            f"bench {profile.name} {precision}: accuracy {section['metrics']['accuracy']:.4f}, "
            f"agreement {agree['top1_agreement']:.4f}, p50 {speed['latency_ms']['p50']:.2f} ms, "
            f"end to end p50 {speed['end_to_end_ms']['p50']:.2f} ms{unreliable}"
        )
    report = assemble_report(
        run,
        dataset=dataset,
        meta=meta,
        settings=settings,
        threads=threads,
        good_class=None if good is None else classes[good],
        reference=ref_section,
        results=results,
        benched=[p.name for p in profiles],
        timings=timings,
        bench_seconds=time.perf_counter() - started,
        acceptance=config.acceptance,
        log=_log,
    )
    write_report(run.root, report)
    for folder, threshold in side_files:
        write_threshold(folder, threshold, classes=classes, good_index=good)
    return dict(read_json(run.root / "report.json"))
