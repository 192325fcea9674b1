"""`edgetl build` is this chain of stages; each reads and writes the run folder and can run alone."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.config import BuildConfig, ConfigError
from edgetl.custody import check_artifacts, check_inputs, read_meta, verified_split
from edgetl.data.dataset import Dataset, prepare_dataset
from edgetl.errors import EdgetlError, MissingInputError
from edgetl.files import atomic_dir, read_json, require_writable, sha256_file
from edgetl.lock import writes_run
from edgetl.run import RunDir, init_run, write_run_config
from edgetl.targets.profiles import TargetProfile, resolve_profile


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message)


@writes_run("data split")
def stage_data(config: BuildConfig, run: RunDir) -> Dataset:
    """Read, check and split the data into run/data/."""
    return prepare_dataset(
        config.data, run.data, good_class=config.bench.good_class, max_false_reject=config.bench.max_false_reject
    )


@writes_run("train")
def stage_train(config: BuildConfig, run: RunDir, *, progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """Fine-tune (with ``resume``: continue from run/train/resume.pt); returns the checkpoint meta."""
    from edgetl.train import train_model

    result = train_model(config, verified_split(run, "train"), run.train, progress=progress, resume=resume)
    return result.meta


def export_opset(config: BuildConfig) -> int:
    """The configured opset, or the lowest one among the targets' profiles."""
    if config.export.opset is not None:
        return config.export.opset
    return min(resolve_profile(t).opset for t in config.targets)


def _split_inputs(
    dataset: Dataset, spec: Any, split: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Deploy-time preprocessed images of one split: (inputs, class indices, file names)."""
    from edgetl.preprocess import preprocess_file

    samples = dataset.split(split)[:limit]
    x = np.concatenate([preprocess_file(s.path, spec) for s in samples])
    y = np.array([dataset.label_index(s) for s in samples])
    return x, y, [s.path.name for s in samples]


@writes_run("export")
def stage_export(config: BuildConfig, run: RunDir) -> dict[str, Any]:
    """Export the checkpoint to run/export/model.onnx with a parity report."""
    from edgetl.export import export_run
    from edgetl.models import load_checkpoint
    from edgetl.preprocess import PreprocessSpec

    checkpoint = run.train / "model.pt"
    model, meta = load_checkpoint(checkpoint)
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    inputs, _, names = _split_inputs(verified_split(run, "export"), spec, "val", config.export.parity_images)
    return export_run(
        model,
        meta,
        run.export,
        inputs,
        opset=export_opset(config),
        dynamic_batch=config.export.dynamic_batch,
        slim=config.export.slim,
        atol=config.export.parity_atol,
        checkpoint_sha256=sha256_file(checkpoint),
        names=names,
    )


@writes_run("calibrate")
def stage_calibrate(config: BuildConfig, run: RunDir) -> Any:
    """Write the calibration set into run/calibration/."""
    from edgetl.calibration import build_calibration
    from edgetl.preprocess import PreprocessSpec

    meta = read_meta(run)
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    c = config.calibration
    return build_calibration(verified_split(run, "calibrate"), spec, run.calibration, samples=c.samples, seed=c.seed)


def with_calibration_overrides(profile: TargetProfile, config: BuildConfig) -> TargetProfile:
    """The profile with the build's calibration.method / fp32_blocks / bias_correction in its quantization settings."""
    c = config.calibration
    wanted = {"method": c.method, "fp32_blocks": c.fp32_blocks, "bias_correction": c.bias_correction}
    update = {key: value for key, value in wanted.items() if value is not None}
    if not update:
        return profile
    return profile.model_copy(update={"quantization": profile.quantization.model_copy(update=update)})


@writes_run("compile")
def stage_compile(config: BuildConfig, run: RunDir, profile: TargetProfile) -> list[Any]:
    """Compile every precision of a profile into run/targets/<profile>/<precision>/ (atomically)."""
    from edgetl.calibration import load_calibration
    from edgetl.targets import get_target

    target = get_target(profile.backend)
    if not target.compiles_without_backend:
        target.require()
    onnx_path = run.export / "model.onnx"
    if not onnx_path.is_file():
        raise MissingInputError(f"{onnx_path} is missing; run 'edgetl export {run.root}' first.")
    check_inputs(run, "compile")
    meta = read_meta(run)
    calib = load_calibration(run.calibration) if "int8" in profile.precisions else None
    profile = with_calibration_overrides(profile, config)
    artifacts = []
    for precision in profile.precisions:
        t0 = time.perf_counter()
        with atomic_dir(run.target(profile.name, precision)) as tmp:
            artifact = target.compile(
                onnx_path,
                profile,
                tmp,
                calib,
                precision=precision,
            )
            artifact.classes = list(meta["classes"])
            artifact.preprocess = meta["preprocess"]
            artifact.source_onnx_sha256 = sha256_file(onnx_path)
            artifact.details["compile_seconds"] = round(time.perf_counter() - t0, 2)
            artifact.write(tmp)
        _log(f"compiled {profile.name} {precision} in {time.perf_counter() - t0:.1f} s")
        artifacts.append(run.target(profile.name, precision))
    return artifacts


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
def stage_bench(
    config: BuildConfig, run: RunDir, profiles: list[TargetProfile], *, timings: dict[str, float] | None = None
) -> dict[str, Any]:
    """Measure every compiled artifact (each in its own process); write report.json / .md / .html.

    Accuracy is on the test split against the FP32 PyTorch model; the reject threshold of a two-class model is
    tuned on the validation split for each artifact and stored beside it (threshold.json).
    ``timings`` (seconds per earlier stage; default: those of the run's last report) are recorded in the
    report with this stage's own.
    """
    started = time.perf_counter()
    from edgetl.bench.accuracy import agreement, disagreeing_images, good_class_index
    from edgetl.bench.harness import accuracy_section, measure_artifacts, reference_logits, write_threshold
    from edgetl.bench.merge import merge_rows, previous_report
    from edgetl.preprocess import PreprocessSpec
    from edgetl.report import write_report
    from edgetl.targets import Artifact, get_target
    from edgetl.versions import host_info, library_versions

    settings = config.bench
    threads = settings.threads or os.cpu_count() or 1
    meta = read_meta(run)
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    dataset = verified_split(run, "bench")
    inputs, labels = {}, {}
    for split in ("val", "test"):
        inputs[split], labels[split], _ = _split_inputs(dataset, spec, split)
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
        inputs,
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
        _log(
            f"bench {profile.name} {precision}: accuracy {section['metrics']['accuracy']:.4f}, "
            f"agreement {agree['top1_agreement']:.4f}, p50 {speed['latency_ms']['p50']:.2f} ms, "
            f"end to end p50 {speed['end_to_end_ms']['p50']:.2f} ms"
        )
    for r in results:
        base = next((b for b in results if b["target"] == r["target"] and b["precision"] == "fp32"), None)
        if base is not None:
            r["vs_fp32"] = {
                "accuracy_delta": r["metrics"]["accuracy"] - base["metrics"]["accuracy"],
                "p50_ratio": r["latency_ms"]["p50"] / base["latency_ms"]["p50"],
            }
    report: dict[str, Any] = {
        "run": run.root.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": dataset.info,
        "model": {
            **{k: meta[k] for k in ("arch", "strategy", "trained_from_block", "best_epoch", "val_metrics")},
            "classes": meta["classes"],
            "preprocess": meta["preprocess"],
            "timings": meta.get("timings", {}),
            "recipe": meta.get("recipe"),
            "search": {k: v for k, v in meta["search"].items() if k != "space"} if meta.get("search") else None,
            "test_metrics": ref_section["metrics"],
            "reference": ref_section,
            "parity": read_json(run.export / "parity.json") if (run.export / "parity.json").is_file() else {},
        },
        "bench": {
            **settings.model_dump(mode="json"),
            "threads": threads,
            "good_class": None if good is None else classes[good],
            "isolation": "one process per artifact",
        },
        "host": host_info(),
        "versions": library_versions(),
        "artifacts": results,
    }
    bundles = bundle_summaries(run)
    if bundles:
        report["bundles"] = bundles
    from edgetl.transfer.section import transfer_summaries

    transfer = transfer_summaries(run.root)
    if transfer:
        report["transfer"] = transfer
    previous = previous_report(run.root)
    report["artifacts"], kept = merge_rows(previous, report, benched=[p.name for p in profiles])
    if kept:
        _log(f"report.json keeps the earlier rows of {', '.join(kept)} (not benched now)")
    if timings is None and previous is not None:
        timings = previous.get("timings_s")
    if timings is not None:
        report["timings_s"] = dict(timings, bench=round(time.perf_counter() - started, 1))
    write_report(run.root, report)
    for folder, threshold in side_files:
        write_threshold(folder, threshold, classes=classes, good_index=good)
    return read_json(run.root / "report.json")


@writes_run("bundle")
def stage_bundle(config: BuildConfig, run: RunDir, profile: TargetProfile) -> dict[str, Any]:
    """Write run/bundle/<profile>/ from the prepared TensorRT inputs; check them on this CPU first.

    Host checks: every precision's ONNX runs in ONNX Runtime on the test split (INT8 as unfused Q/DQ, the
    arithmetic TensorRT's explicit quantization follows) against the FP32 model; the parity pack is drawn from
    the validation split.
    """
    from edgetl.bench.accuracy import agreement, classification_metrics
    from edgetl.bundle import host_runner, select_golden, write_bundle
    from edgetl.preprocess import PreprocessSpec

    if profile.tensorrt is None:
        raise ConfigError(f"profile {profile.name} is not a TensorRT profile; bundles are for TensorRT devices.")
    if profile.tensorrt.max_batch > 1 and not config.export.dynamic_batch:
        raise ConfigError(
            f"profile {profile.name} asks for batches up to {profile.tensorrt.max_batch}; "
            "set export.dynamic_batch: true."
        )
    meta = read_meta(run)
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    dataset = verified_split(run, "bundle")
    models: dict[str, Path] = {}
    details: dict[str, dict[str, Any]] = {}
    for wanted in profile.precisions:
        folder = run.target(profile.name, wanted)
        if not (folder / "artifact.json").is_file():
            raise MissingInputError(f"{folder} is missing; run 'edgetl compile {run.root} --target {profile.name}'.")
        details[wanted] = read_json(folder / "artifact.json")["details"]
        models[wanted] = folder / details[wanted]["onnx"]

    def logits_of(path: Path, precision: str, x: np.ndarray) -> np.ndarray:
        with host_runner(path, precision) as runner:
            return np.concatenate([runner.infer(x[i : i + 1]) for i in range(len(x))])

    x_test, y_test, _ = _split_inputs(dataset, spec, "test")
    x_val, y_val, names_val = _split_inputs(dataset, spec, "val")
    fp32_onnx = run.export / "model.onnx"
    test_logits = {"fp32": logits_of(fp32_onnx, "fp32", x_test)}
    val_logits = {"fp32": logits_of(fp32_onnx, "fp32", x_val)}
    for precision, path in models.items():
        if precision != "fp32":
            test_logits[precision] = logits_of(path, precision, x_test)
            val_logits[precision] = logits_of(path, precision, x_val)
    classes = list(dataset.classes)
    fp32_metrics = classification_metrics(y_test, test_logits["fp32"].argmax(1), classes)
    host: dict[str, Any] = {"split": "test", "runtime": "onnxruntime-cpu", "fp32_onnx": fp32_metrics}
    thresholds = _bundle_thresholds(config, dataset, val_logits, y_val)
    for precision, path in models.items():
        logits = test_logits[precision]
        metrics = classification_metrics(y_test, logits.argmax(1), classes)
        host[precision] = {
            "onnx": path.name,
            "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "accuracy_delta_vs_fp32": metrics["accuracy"] - fp32_metrics["accuracy"],
            "vs_fp32": agreement(logits, test_logits["fp32"]),
            "metrics": metrics,
        }
        if precision in thresholds:
            from edgetl.bench.accuracy import binary_metrics, defect_scores

            good = classes.index(thresholds[precision]["good_class"])
            host[precision]["binary"] = binary_metrics(
                defect_scores(logits, good), y_test != good, threshold=thresholds[precision]["threshold"]
            )
        _log(
            f"host check {profile.name} {precision} ({path.name} in ONNX Runtime): accuracy "
            f"{metrics['accuracy']:.4f} (FP32 {fp32_metrics['accuracy']:.4f}), "
            f"agreement {host[precision]['vs_fp32']['top1_agreement']:.4f}"
        )

    val_refs = {p: val_logits["fp32"] if p != "int8" else val_logits["int8"] for p in models}
    golden = select_golden(val_refs)
    references = {p: ref[golden] for p, ref in val_refs.items()}
    checkpoint = run.train / "model.pt"
    int8_details = details.get("int8", {})
    return write_bundle(
        run.bundle(profile.name),
        profile=profile,
        classes=list(meta["classes"]),
        spec=spec,
        fp32_onnx=fp32_onnx,
        models=models,
        golden_inputs=x_val[golden],
        golden_names=[names_val[i] for i in golden],
        references=references,
        host_metrics=host,
        thresholds=thresholds,
        provenance={
            "run": run.root.name,
            "checkpoint_sha256": sha256_file(checkpoint) if checkpoint.is_file() else None,
            "dataset_sha256": dataset.info.get("hash"),
            "onnx_sha256": sha256_file(fp32_onnx),
            "quantization": {k: v for k, v in int8_details.items() if k != "qdq_check"},
            "qdq_check": int8_details.get("qdq_check"),
        },
        name=config.name,
    )


def _bundle_thresholds(
    config: BuildConfig, dataset: Dataset, val_logits: dict[str, np.ndarray], y_val: np.ndarray
) -> dict[str, Any]:
    """Each precision's reject threshold (the good class against the rest), tuned on validation for
    bench.max_false_reject."""
    from edgetl.bench.accuracy import defect_scores, good_class_index, reject_threshold

    classes = list(dataset.classes)
    counts = [sum(1 for s in dataset.split("train") if s.label == c) for c in classes]
    good = good_class_index(classes, good=config.bench.good_class, counts=counts)
    if (y_val == good).all() or (y_val != good).all():
        return {}
    return {
        precision: {
            **reject_threshold(
                defect_scores(logits, good), y_val != good, max_false_reject=config.bench.max_false_reject
            ),
            "good_class": classes[good],
            "score": f"1 - softmax(logits)[{good}]  (probability of not '{classes[good]}')",
            "rule": "reject the part when score >= threshold",
            "tuned_on": "validation split, this precision's ONNX in ONNX Runtime on the build host",
        }
        for precision, logits in val_logits.items()
    }


@writes_run("build")
def build(config: BuildConfig, *, force: bool = False, progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """Run every stage for every target; returns the report (also in runs/<name>/report.json).

    ``resume`` continues an interrupted build in its existing run folder: training goes on from its last
    finished epoch (or is kept when it had finished), the other stages run again.
    """
    from edgetl.report import print_report

    profiles = [resolve_profile(name) for name in config.targets]
    run = init_run(config, force=force or resume, write_config=False)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        _log(f"[bold]{name}[/bold] ...")
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 1)
        _log(f"{name} done in {timings[name]:.1f} s")
        return out

    dataset = timed("data", stage_data, config, run)
    write_run_config(run, config)  # only now: a --force whose data check fails leaves the run's record as it was
    for warning in dataset.warnings:
        _log(f"[yellow]warning:[/yellow] {warning}")
    timed("train", stage_train, config, run, progress=progress, resume=resume)
    timed("export", stage_export, config, run)
    if any("int8" in p.precisions for p in profiles):
        timed("calibrate", stage_calibrate, config, run)
    for profile in profiles:
        timed(f"compile {profile.name}", stage_compile, config, run, profile)
    bundles = {p.name: timed(f"bundle {p.name}", stage_bundle, config, run, p) for p in profiles if p.tensorrt}
    t0 = time.perf_counter()
    report = stage_bench(config, run, profiles, timings=timings)
    _log(f"bench done in {time.perf_counter() - t0:.1f} s")
    print_report(report)
    for name, manifest in bundles.items():
        _log(device_summary(run, name, manifest))
    _log(f"report: {run.root / 'report.html'}, {run.root / 'report.md'} and {run.root / 'report.json'}")
    return report


def bundle_summaries(run: RunDir) -> dict[str, Any]:
    """The host checks of every bundle in run/bundle/, for the report (a damaged bundle is left out, with a note)."""
    from edgetl.bundle import read_manifest

    summaries = {}
    for path in sorted((run.root / "bundle").glob("*/manifest.json")):
        try:
            m = read_manifest(path.parent)
        except EdgetlError as exc:
            _log(f"[yellow]warning:[/yellow] bundle {path.parent} left out of the report: {exc}")
            continue
        summaries[path.parent.name] = {
            "path": str(path.parent),
            "tensorrt": m["profile"]["tensorrt"],
            "models": {p: v["onnx"] for p, v in m["models"].items()},
            "host_metrics": {k: v for k, v in m["host_metrics"].items() if k != "fp32_onnx"},
            "parity_images": len(m["parity"]["names"]),
            "engines_built_here": (path.parent / "engines").is_dir(),
            "on_device": m["on_device"],
        }
    return summaries


def device_summary(run: RunDir, name: str, manifest: dict[str, Any]) -> str:
    """What was built on this host for a TensorRT profile, and the one command for the device."""
    host = manifest["host_metrics"]
    lines = [f"[bold]bundle {name}[/bold]: {run.root / 'bundle' / name}"]
    lines.append("  built here: " + ", ".join(m["onnx"] for m in manifest["models"].values())
                 + ", DeepStream and Triton configs, parity pack of "
                 + f"{len(manifest['parity']['names'])} images, manifest (sha256)")  # fmt: skip
    for precision in manifest["models"]:
        h = host[precision]
        lines.append(
            f"  checked here ({h['onnx']} in ONNX Runtime, test split): accuracy {h['accuracy']:.4f} "
            f"({h['accuracy_delta_vs_fp32'] * 100:+.1f} pts vs FP32), agreement {h['vs_fp32']['top1_agreement']:.4f}"
        )
    lines.append("  not built here: TensorRT engines (they are tied to the device's GPU and TensorRT version)")
    lines.append(f"  on the device run: [bold]{manifest['on_device']}[/bold]")
    return "\n".join(lines)
