"""Write a bundle folder: one layout for every target.

::

    <profile>/
      manifest.json      sha256 of every file, the profile, classes, preprocessing, models, parity pack
      card.json          the model card: arch, classes, input, validation data and figures, recipe, versions
      README.md          install and run commands for this device
      labels.txt  preprocess.json  thresholds.json
      model files        per precision: ONNX (onnxruntime), IR .xml + .bin (openvino), ONNX inputs of the
                         engines (tensorrt, built on the device into engines/<precision>/)
      parity/            golden inputs and each precision's reference logits
      triton/            a model repository with the backends that run on the device
      deepstream/        nvinfer configs (NVIDIA profiles only)

The folder is written atomically: an earlier bundle survives until the new one is complete. Model and drift files
are hard links to the run's artifacts where the file system allows (stored once; copying the bundle to a device
copies the bytes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.files import atomic_dir, link_or_copy, sha256_file, write_json_atomic, write_text_atomic
from edgetl.runtime.bundle import DEVICE_OUTPUTS, KIND, MANIFEST, SCHEMA_VERSION
from edgetl.runtime.preprocess import PreprocessSpec
from edgetl.targets.profiles import TargetProfile

PARITY_INPUTS = "parity/inputs.npy"
CARD = "card.json"
THRESHOLDS = "thresholds.json"
DRIFT_REFERENCE = "drift/reference.npz"
DRIFT_EMBEDDER = "drift/embedder.onnx"
# Max |logit difference| allowed against the bundle's reference logits, by precision. TensorRT FP32 and FP16
# engines are compared with the FP32 logits, INT8 engines with the QDQ model's; other backends with the same
# artifact's logits on the build host (another CPU may pick other kernels).
TOLERANCE = {"fp32": 0.05, "fp16": 0.25, "bf16": 0.5, "int8": 0.5}
MIN_MARGIN = 2 * max(TOLERANCE.values())  # golden images whose top-1 cannot flip within tolerance


@dataclass
class BundleModel:
    """One precision's files: ``files`` maps the name in the bundle to the source file (the first is the main)."""

    files: dict[str, Path]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> str:
        return next(iter(self.files))


def model_files(backend: str, precision: str, artifact_folder: Path, model_file: str) -> BundleModel:
    """The bundle names of an artifact's files: model.onnx / model.int8.onnx, model.xml + .bin / model.fp16.xml +
    .bin, or the TensorRT ONNX inputs (model.onnx, model.fp16.onnx, model.qdq.onnx)."""
    source = artifact_folder / model_file
    if backend == "openvino":
        stem = "model" if precision == "fp32" else f"model.{precision}"
        return BundleModel({f"{stem}.xml": source, f"{stem}.bin": source.with_suffix(".bin")})
    if backend == "onnxruntime":
        return BundleModel({"model.onnx" if precision == "fp32" else f"model.{precision}.onnx": source})
    return BundleModel(
        {source.name: source},
        {"onnx": source.name, "weakly_typed_onnx": "model.onnx" if precision == "fp16" else source.name},
    )


def select_golden(references: dict[str, np.ndarray], *, count: int = 32) -> np.ndarray:
    """Indices of up to ``count`` images whose top-1 is stable: every reference agrees and has a wide margin.

    Alternates classes so both good and defective parts are in the pack.
    """
    first = next(iter(references.values()))
    top = first.argmax(1)
    stable = np.all([r.argmax(1) == top for r in references.values()], axis=0)
    margins = np.min([np.sort(r, axis=1)[:, -1] - np.sort(r, axis=1)[:, -2] for r in references.values()], axis=0)
    ok = stable & (margins >= MIN_MARGIN)
    if ok.sum() < min(count, 8):
        ok = stable  # few wide-margin images: keep the stable ones, widest margins first
    order = [i for i in np.argsort(-margins) if ok[i]]
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(top[i]), []).append(int(i))
    chosen: list[int] = []
    while len(chosen) < count and any(by_class.values()):
        for queue in by_class.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return np.array(sorted(chosen), dtype=np.int64)


def _triton(
    tmp: Path,
    *,
    profile: TargetProfile,
    name: str,
    specs: dict[str, PreprocessSpec],
    classes: list[str],
    models: dict[str, BundleModel],
    thresholds: dict[str, Any],
) -> tuple[list[str], dict[str, str]]:
    """A Triton model repository with the backends that run on the device; returns (files, precision -> model)."""
    from edgetl.deploy.triton import Kind, TritonModel, write_model

    root = tmp / "triton"
    written: list[str] = []
    names: dict[str, str] = {}

    def add(suffix: str, kind: Kind, precision: str, files: dict[str, Path] | None, *, gpu: bool) -> str:
        spec = specs[precision]
        model = TritonModel(
            f"{name}_{suffix}",
            kind,
            spec.channels,
            spec.input_size,
            classes,
            gpu=gpu,
            reject=thresholds.get(precision),
            pixels=spec.takes_pixels,
            bf16=precision in models and models[precision].extra.get("inference_precision") == "bf16",
        )
        written.extend(write_model(root, model, files))
        return model.name

    if profile.backend == "tensorrt":
        add("onnx", "onnxruntime_onnx", "fp32", {"model.onnx": tmp / "model.onnx"}, gpu=True)
        for precision in models:
            names[precision] = add(f"trt_{precision}", "tensorrt_plan", precision, None, gpu=True)
    elif profile.backend == "openvino":
        for precision, model in models.items():
            xml, binary = list(model.files)
            files = {"model.xml": tmp / xml, "model.bin": tmp / binary}
            names[precision] = add(f"openvino_{precision}", "openvino", precision, files, gpu=False)
    else:
        for precision, model in models.items():
            files = {"model.onnx": tmp / model.main}
            names[precision] = add(f"ort_{precision}", "onnxruntime_onnx", precision, files, gpu=False)
    return [f"triton/{f}" for f in written], names


def write_bundle(
    out: Path,
    *,
    profile: TargetProfile,
    name: str,
    classes: list[str],
    spec: PreprocessSpec,
    models: dict[str, BundleModel],
    golden_pixels: np.ndarray,
    specs: dict[str, PreprocessSpec] | None = None,
    golden_names: list[str],
    references: dict[str, np.ndarray],
    reference_of: dict[str, str],
    thresholds: dict[str, Any],
    good_class: str | None,
    card: dict[str, Any],
    provenance: dict[str, Any],
    readme: Any,
    fp32_onnx: Path | None = None,
    host_metrics: dict[str, Any] | None = None,
    drift: tuple[Path, Path, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the bundle folder ``out`` atomically; returns the manifest.

    ``models``: precision -> its files; ``references``: precision -> reference logits of ``golden_pixels`` (uint8
    N, H, W, C: the golden images, resized);
    ``thresholds``: precision -> thresholds.json entry (the good class against the rest); ``fp32_onnx``: the
    exported model, which TensorRT bundles always carry (FP16 engines of weakly typed TensorRT, Triton, DeepStream);
    ``readme``: manifest -> README text; ``drift``: (reference, embedder, reference info) for drift on the line;
    ``specs``: precision -> its model's input where they differ from ``spec`` (uint8 pixels or float).
    """
    specs = {p: (specs or {}).get(p, spec) for p in models}
    from edgetl.versions import library_versions

    with atomic_dir(out) as tmp:
        if fp32_onnx is not None:
            link_or_copy(fp32_onnx, tmp / "model.onnx")
        for model in models.values():
            for target_name, source in model.files.items():
                if not (tmp / target_name).exists():
                    link_or_copy(source, tmp / target_name)
        write_text_atomic(tmp / "labels.txt", "\n".join(classes) + "\n")
        write_json_atomic(tmp / "preprocess.json", spec.model_dump(mode="json"))
        kept = {p: thresholds[p] for p in models if p in thresholds}
        if kept:
            write_json_atomic(tmp / THRESHOLDS, kept)
        write_json_atomic(tmp / CARD, card)
        if drift is not None:
            (tmp / "drift").mkdir()
            link_or_copy(drift[0], tmp / DRIFT_REFERENCE)
            link_or_copy(drift[1], tmp / DRIFT_EMBEDDER)

        (tmp / "parity").mkdir()
        # uint8 pixels, a quarter of the float tensor: Bundle.parity_inputs() makes the models' input of them.
        np.save(tmp / PARITY_INPUTS, np.ascontiguousarray(golden_pixels, np.uint8), allow_pickle=False)
        reference_files = {}
        for precision, logits in references.items():
            reference_files[precision] = f"parity/reference_{precision}.npy"
            np.save(tmp / reference_files[precision], logits.astype(np.float32), allow_pickle=False)

        deepstream: list[str] = []
        if profile.tensorrt is not None:
            from edgetl.deploy.deepstream import write_deepstream

            sources = {p: tmp / ("model.onnx" if p in ("fp32", "fp16") else models[p].main) for p in models}
            deepstream = write_deepstream(
                tmp / "deepstream", spec, classes, sources, dla_core=profile.tensorrt.dla_core, thresholds=kept
            )
        triton, triton_names = _triton(
            tmp, profile=profile, name=name, specs=specs, classes=classes, models=models, thresholds=kept
        )

        manifest: dict[str, Any] = {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "profile": profile.model_dump(mode="json"),
            "backend": profile.backend,
            "device": profile.device,
            "classes": classes,
            "good_class": good_class,
            "preprocess": spec.model_dump(mode="json"),
            "models": {
                precision: {
                    "backend": profile.backend,
                    "file": model.main,
                    "files": list(model.files),
                    **model.extra,
                    "preprocess": specs[precision].model_dump(mode="json"),
                    "triton": triton_names[precision],
                }
                for precision, model in models.items()
            },
            "parity": {
                "inputs": PARITY_INPUTS,
                "stored": "uint8 pixels (N, H, W, C), resized; preprocess.json makes the models' input of them",
                "names": golden_names,
                "references": reference_files,
                "tolerance": {p: TOLERANCE[p] for p in models},
                "reference_of": reference_of,
            },
            "thresholds": THRESHOLDS if kept else None,
            "drift": None
            if drift is None
            else {"reference": DRIFT_REFERENCE, "embedder": DRIFT_EMBEDDER, "reference_info": drift[2]},
            "card": CARD,
            "deepstream": [f"deepstream/{f}" for f in deepstream],
            "triton": triton,
            "provenance": {**provenance, "versions": library_versions()},
            "on_device": f"edgetl compile {out.name}" if profile.tensorrt is not None else f"edgetl verify {out.name}",
            "device_outputs": list(DEVICE_OUTPUTS),
        }
        if host_metrics is not None:
            manifest["host_metrics"] = host_metrics
        write_text_atomic(tmp / "README.md", readme(manifest))
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest
