"""``stage_bundle``: write runs/<name>/bundle/<profile>/ from a run, for any profile.

CPU profiles (ONNX Runtime, OpenVINO) bundle the compiled artifacts with the reject thresholds the bench tuned
for them (targets/<profile>/<precision>/threshold.json), so ``edgetl predict`` on the bundle gives the bench's
verdicts: the bench runs first. TensorRT profiles bundle the engines' ONNX inputs, checked here in ONNX Runtime
on the test split, with thresholds tuned on those checks' validation logits (the engines are built on the device).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.bundle.write import BundleModel, model_files
from edgetl.config import BuildConfig, ConfigError
from edgetl.custody import read_meta, verified_split
from edgetl.data.dataset import Dataset
from edgetl.data.inputs import split_pixels
from edgetl.errors import MissingInputError
from edgetl.files import read_json, sha256_file
from edgetl.lock import writes_run
from edgetl.run import RunDir
from edgetl.runtime.preprocess import PreprocessSpec, model_input
from edgetl.runtime.runner import Runner
from edgetl.targets.profiles import TargetProfile

THRESHOLD_FILE = "threshold.json"  # written beside each artifact by the bench (edgetl.bench.harness)


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message)


def host_runner(path: Path, precision: str) -> Runner:
    """ONNX Runtime on this machine's CPU for a TensorRT input: INT8 as unfused Q/DQ."""
    from edgetl.runtime.onnxruntime import OnnxRuntimeRunner

    # Unfused Q/DQ: ORT's fused int8 kernels would add their own rounding (and saturation on some CPUs);
    # the unfused graph computes exactly what the Q/DQ nodes say, like TensorRT's explicit quantization.
    return OnnxRuntimeRunner(path, threads=None, optimization="none" if precision == "int8" else "all")


def _artifact_runner(
    profile: TargetProfile, path: Path, precision: str = "fp32", details: dict[str, Any] | None = None
) -> Runner:
    """The runtime's runner for a CPU artifact, opened as the bundle will be on the line."""
    if profile.backend == "openvino":
        from edgetl.runtime.openvino import OpenVinoRunner, precision_options

        options = precision_options(details or {}, precision=precision)
        return OpenVinoRunner(path, profile.device, threads=None, **options)
    from edgetl.runtime.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, threads=None)


def _logits(runner: Runner, pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Logits of uint8 pixels (N, H, W, C), each image made into the model's input by ``spec``."""
    with runner:
        return np.concatenate([runner.infer(model_input(pixels[i : i + 1], spec)) for i in range(len(pixels))])


def _good_class(config: BuildConfig, dataset: Dataset) -> int:
    from edgetl.bench.accuracy import good_class_index

    classes = list(dataset.classes)
    counts = [sum(1 for s in dataset.split("train") if s.label == c) for c in classes]
    return good_class_index(classes, good=config.bench.good_class, counts=counts)


def _provenance(run: RunDir, dataset: Dataset, details: dict[str, dict[str, Any]]) -> dict[str, Any]:
    checkpoint = run.train / "model.pt"
    onnx = run.export / "model.onnx"
    int8 = details.get("int8", {})
    return {
        "run": run.root.name,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint.is_file() else None,
        "dataset_sha256": dataset.info.get("hash"),
        "onnx_sha256": sha256_file(onnx) if onnx.is_file() else None,
        "quantization": {k: v for k, v in int8.items() if k not in ("qdq_check", "engine")},
        "qdq_check": int8.get("qdq_check"),
    }


@writes_run("bundle")
def stage_bundle(config: BuildConfig, run: RunDir, profile: TargetProfile) -> dict[str, Any]:
    """Write run/bundle/<profile>/ (see :mod:`edgetl.bundle.write`); returns its manifest."""
    if profile.tensorrt is not None:
        return _tensorrt_bundle(config, run, profile)
    return _runtime_bundle(config, run, profile)


def _write(
    config: BuildConfig,
    run: RunDir,
    profile: TargetProfile,
    *,
    meta: dict[str, Any],
    spec: PreprocessSpec,
    dataset: Dataset,
    models: dict[str, BundleModel],
    val_pixels: tuple[np.ndarray, list[str]],
    val_logits: dict[str, np.ndarray],
    reference_of: dict[str, str],
    thresholds: dict[str, Any],
    good: int,
    validated: dict[str, Any],
    measured_by: str,
    reference: dict[str, Any] | None,
    details: dict[str, dict[str, Any]],
    acceptance: dict[str, Any] | None = None,
    specs: dict[str, PreprocessSpec] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    from edgetl.bundle.card import figure_lines, model_card
    from edgetl.bundle.readme import bundle_readme
    from edgetl.bundle.write import select_golden, write_bundle
    from edgetl.transfer.reference import drift_files
    from edgetl.versions import library_versions

    x_val, names_val = val_pixels
    golden = select_golden(val_logits)
    classes = list(meta["classes"])
    card = model_card(
        name=config.name,
        profile=profile.model_dump(mode="json"),
        meta=meta,
        dataset_info=dataset.info,
        good_class=classes[good],
        validated=validated,
        measured_by=measured_by,
        reference=reference,
        acceptance=acceptance,
        versions={"trained_with": meta.get("versions", {}), "bundled_with": library_versions()},
        details=details,
        spec=spec,
    )
    kept = {p: thresholds[p] for p in models if p in thresholds}
    return write_bundle(
        run.bundle(profile.name),
        profile=profile,
        name=config.name,
        classes=classes,
        spec=spec,
        specs=specs,
        models=models,
        golden_pixels=x_val[golden],
        golden_names=[names_val[i] for i in golden],
        references={p: logits[golden] for p, logits in val_logits.items()},
        reference_of=reference_of,
        thresholds=kept,
        good_class=classes[good],
        card=card,
        provenance=_provenance(run, dataset, details),
        readme=lambda manifest: bundle_readme(manifest, thresholds=kept, figures=figure_lines(card)),
        drift=drift_files(run),
        **extra,
    )


def _bench_figures(entry: dict[str, Any] | None, report_file: Path) -> dict[str, Any]:
    """An artifact's figures from the bench report: test metrics (with intervals where the report has them),
    the threshold, agreement with FP32, latency."""
    if entry is None:
        return {"note": f"not in {report_file}: bench this target again for its figures"}
    return {
        "metrics": entry.get("metrics"),
        "threshold": entry.get("threshold"),
        "fp32_agreement": entry.get("fp32_agreement"),
        "latency_ms": {k: entry.get("latency_ms", {}).get(k) for k in ("p50", "p90", "p99")},
        "end_to_end_ms": {k: entry.get("end_to_end_ms", {}).get(k) for k in ("p50", "p99")},
        "size_bytes": entry.get("size_bytes"),
    }


def _runtime_bundle(config: BuildConfig, run: RunDir, profile: TargetProfile) -> dict[str, Any]:
    """A CPU profile's bundle: the compiled artifacts with the bench's thresholds and figures."""
    from edgetl.bench.acceptance import card_verdict
    from edgetl.targets.base import Artifact

    meta = read_meta(run)
    dataset = verified_split(run, "bundle")
    report_file = run.root / "report.json"
    report = read_json(report_file) if report_file.is_file() else {}
    measured = {(a["target"], a["precision"]): a for a in report.get("artifacts", [])}
    models: dict[str, BundleModel] = {}
    thresholds: dict[str, Any] = {}
    validated: dict[str, Any] = {}
    details: dict[str, dict[str, Any]] = {}
    specs: dict[str, PreprocessSpec] = {}
    for precision in profile.precisions:
        folder = run.target(profile.name, precision)
        if not (folder / "artifact.json").is_file():
            raise MissingInputError(f"{folder} is missing; run 'edgetl compile {run.root} --target {profile.name}'.")
        artifact = Artifact.read(folder)
        specs[precision] = PreprocessSpec.model_validate(artifact.preprocess)  # uint8 pixels or float, per model
        entry = measured.get((profile.name, precision))
        threshold_file = folder / THRESHOLD_FILE
        if threshold_file.is_file():
            thresholds[precision] = read_json(threshold_file)
        elif entry is None or entry.get("threshold") is not None:
            raise MissingInputError(
                f"{threshold_file} is missing: a {profile.name} bundle carries the reject threshold the bench tuned "
                "for each artifact, and this one has not been benched since it was compiled.",
                hint=f"run 'edgetl bench {run.root} --target {profile.name}' first (where {profile.backend} is "
                "installed), then 'edgetl bundle'.",
            )
        models[precision] = model_files(profile.backend, precision, folder, artifact.model_file)
        # How the runtime runs it (the INT8 ladder may land on the FP32 IR run in bf16) travels with the model.
        from edgetl.runtime.openvino import PRECISION_FACTS

        models[precision].extra.update({k: artifact.details[k] for k in PRECISION_FACTS if k in artifact.details})
        details[precision] = artifact.details
        validated[precision] = _bench_figures(entry, report_file)
    kinds = {s.model_dump_json() for s in specs.values()}
    spec = next(iter(specs.values())) if len(kinds) == 1 else PreprocessSpec.model_validate(meta["preprocess"])
    x_val, _, names_val = split_pixels(dataset, spec, "val")
    val_logits: dict[str, np.ndarray] = {
        p: _logits(_artifact_runner(profile, m.files[m.main], p, details[p]), x_val, specs[p])
        for p, m in models.items()
    }
    cpu = report.get("host", {}).get("cpu", "the build host")
    return _write(
        config,
        run,
        profile,
        meta=meta,
        dataset=dataset,
        models=models,
        val_logits=val_logits,
        reference_of={p: f"this {p} model in {profile.backend} on the build host ({cpu})" for p in models},
        thresholds=thresholds,
        good=_good_class(config, dataset),
        validated=validated,
        measured_by=f"edgetl bench, {profile.backend} on the build host ({cpu})",
        reference=report.get("model", {}).get("test_metrics"),
        acceptance=card_verdict(report, profile.name),
        details=details,
        spec=spec,
        specs=specs,
        val_pixels=(x_val, names_val),
    )


def _tensorrt_bundle(config: BuildConfig, run: RunDir, profile: TargetProfile) -> dict[str, Any]:
    """A TensorRT profile's bundle from the prepared inputs; checked on this CPU first.

    Host checks: every precision's ONNX runs in ONNX Runtime on the test split (INT8 as unfused Q/DQ, the
    arithmetic TensorRT's explicit quantization follows) against the FP32 model; the parity pack is drawn from
    the validation split.
    """
    from edgetl.bench.accuracy import agreement, binary_metrics, classification_metrics, defect_scores

    assert profile.tensorrt is not None
    if profile.tensorrt.max_batch > 1 and not config.export.dynamic_batch:
        raise ConfigError(
            f"profile {profile.name} asks for batches up to {profile.tensorrt.max_batch}; "
            "set export.dynamic_batch: true."
        )
    meta = read_meta(run)
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    dataset = verified_split(run, "bundle")
    models: dict[str, BundleModel] = {}
    details: dict[str, dict[str, Any]] = {}
    for wanted in profile.precisions:
        folder = run.target(profile.name, wanted)
        if not (folder / "artifact.json").is_file():
            raise MissingInputError(f"{folder} is missing; run 'edgetl compile {run.root} --target {profile.name}'.")
        details[wanted] = read_json(folder / "artifact.json")["details"]
        models[wanted] = model_files("tensorrt", wanted, folder, details[wanted]["onnx"])

    x_test, y_test, _ = split_pixels(dataset, spec, "test")
    x_val, y_val, names_val = split_pixels(dataset, spec, "val")
    fp32_onnx = run.export / "model.onnx"
    test_logits: dict[str, np.ndarray] = {"fp32": _logits(host_runner(fp32_onnx, "fp32"), x_test, spec)}
    val_logits: dict[str, np.ndarray] = {"fp32": _logits(host_runner(fp32_onnx, "fp32"), x_val, spec)}
    for precision, model in models.items():
        if precision != "fp32":
            path = model.files[model.main]
            test_logits[precision] = _logits(host_runner(path, precision), x_test, spec)
            val_logits[precision] = _logits(host_runner(path, precision), x_val, spec)
    classes = list(dataset.classes)
    good = _good_class(config, dataset)
    fp32_metrics = classification_metrics(y_test, test_logits["fp32"].argmax(1), classes)
    host: dict[str, Any] = {"split": "test", "runtime": "onnxruntime-cpu", "fp32_onnx": fp32_metrics}
    from edgetl.bench.stage import threshold_source

    thresholds = tensorrt_thresholds(config, dataset, val_logits, y_val, tune_on=threshold_source(run, dataset))
    validated: dict[str, Any] = {}
    for precision, model in models.items():
        logits = test_logits[precision]
        metrics = classification_metrics(y_test, logits.argmax(1), classes)
        host[precision] = {
            "onnx": model.main,
            "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "accuracy_delta_vs_fp32": metrics["accuracy"] - fp32_metrics["accuracy"],
            "vs_fp32": agreement(logits, test_logits["fp32"]),
            "metrics": metrics,
        }
        if precision in thresholds:
            host[precision]["binary"] = binary_metrics(
                defect_scores(logits, good), y_test != good, threshold=thresholds[precision]["threshold"]
            )
            metrics = {**metrics, "binary": host[precision]["binary"]}
        validated[precision] = {
            "metrics": metrics,
            "threshold": thresholds.get(precision),
            "fp32_agreement": host[precision]["vs_fp32"]["top1_agreement"],
        }
        _log(
            f"host check {profile.name} {precision} ({model.main} in ONNX Runtime): accuracy "
            f"{metrics['accuracy']:.4f} (FP32 {fp32_metrics['accuracy']:.4f}), "
            f"agreement {host[precision]['vs_fp32']['top1_agreement']:.4f}"
        )
    references = {p: val_logits["fp32"] if p != "int8" else val_logits["int8"] for p in models}
    return _write(
        config,
        run,
        profile,
        meta=meta,
        dataset=dataset,
        models=models,
        val_logits=references,
        reference_of={p: "QDQ model on the build host" if p == "int8" else "FP32 model" for p in models},
        thresholds=thresholds,
        good=good,
        validated=validated,
        measured_by="ONNX Runtime on the build host (host checks of the engines' ONNX inputs; the engines are "
        "checked on the device by the parity pack)",
        reference=fp32_metrics,
        details=details,
        spec=spec,
        val_pixels=(x_val, names_val),
        fp32_onnx=fp32_onnx,
        host_metrics=host,
    )


def tensorrt_thresholds(
    config: BuildConfig,
    dataset: Dataset,
    val_logits: dict[str, np.ndarray],
    y_val: np.ndarray,
    *,
    tune_on: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> dict[str, Any]:
    """Each precision's reject threshold (the good class against the rest) for bench.max_false_reject, tuned on
    that precision's validation logits, or on ``tune_on`` (the recipe search's out-of-fold logits, the same for
    every precision) when the validation split is too small."""
    from edgetl.bench.accuracy import defect_scores, reject_threshold

    classes = list(dataset.classes)
    good = _good_class(config, dataset)
    out = {}
    for precision, logits in val_logits.items():
        scores_of, labels, where = (
            tune_on if tune_on is not None else (logits, y_val, "validation split, this precision's ONNX in ONNX "
                                                 "Runtime on the build host")
        )  # fmt: skip
        if (labels == good).all() or (labels != good).all():
            continue
        out[precision] = {
            **reject_threshold(
                defect_scores(scores_of, good), labels != good, max_false_reject=config.bench.max_false_reject
            ),
            "good_class": classes[good],
            "score": f"1 - softmax(logits)[{good}]  (probability of not '{classes[good]}')",
            "rule": "reject the part when score >= threshold",
            "tuned_on": where,
        }
    return out
