"""The device bundle: ONNX inputs, labels, preprocessing, deploy configs, parity pack and a sha256 manifest.

Written on the build host by ``edgetl build`` for TensorRT profiles; on the device ``edgetl compile BUNDLE``
builds the engines, ``edgetl verify BUNDLE`` runs the parity pack and ``edgetl bench BUNDLE`` times them. Nothing
in a bundle is loaded before every file matches the manifest.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from edgetl.errors import EdgetlError, InvalidFileError
from edgetl.files import atomic_dir, is_inside, read_json, sha256_file, write_json_atomic, write_text_atomic
from edgetl.lock import run_lock
from edgetl.paths import PlainName, inside
from edgetl.preprocess import PreprocessSpec
from edgetl.targets.profiles import Precision, TargetProfile

MANIFEST = "manifest.json"
KIND = "edgetl-bundle"
SCHEMA_VERSION = "1.0"
PARITY_INPUTS = "parity/inputs.npy"
# Max |logit difference| allowed against the bundle's reference logits, by precision. FP32 and FP16 engines are
# compared with the FP32 logits; INT8 engines with the QDQ model's logits computed on the build host.
TOLERANCE = {"fp32": 0.05, "fp16": 0.25, "int8": 0.5}
MIN_MARGIN = 2 * max(TOLERANCE.values())  # golden images whose top-1 cannot flip within tolerance


class BundleError(EdgetlError, ValueError):
    """A bundle that is incomplete, altered or fails its parity pack; the message names the file."""


def _relative(path: str, root: Path) -> Path:
    """A manifest path inside the bundle (symbolic links followed), or BundleError."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BundleError(f"{root / MANIFEST} lists {path!r}, which points outside the bundle; re-create the bundle.")
    full = root / Path(*pure.parts)
    if not is_inside(full, root):
        raise BundleError(
            f"{full} leads outside the bundle (a symbolic link to {full.resolve()}); copy the bundle as plain files."
        )
    return full


class _ManifestModel(BaseModel):
    """The parts of a bundle manifest the device reads; each path in it must stay inside the bundle."""

    model_config = ConfigDict(extra="allow")

    onnx: str
    weakly_typed_onnx: str
    triton: PlainName


class _ManifestParity(BaseModel):
    model_config = ConfigDict(extra="allow")

    inputs: str
    names: list[str]
    references: dict[Precision, str]
    tolerance: dict[Precision, float]


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["edgetl-bundle"]
    files: dict[str, str]
    profile: TargetProfile
    classes: list[str]
    preprocess: PreprocessSpec
    models: dict[Precision, _ManifestModel]
    parity: _ManifestParity


def _check_manifest(manifest: Any, path: Path) -> None:
    """Raise BundleError unless ``manifest`` has every field the device reads, with paths inside the bundle."""
    if isinstance(manifest, dict) and manifest.get("kind") != KIND:
        raise BundleError(f"{path} is not an edgetl bundle manifest (kind {manifest.get('kind')!r}).")
    try:
        checked = _Manifest.model_validate(manifest)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors()[:5])
        raise BundleError(
            f"{path} is not a valid bundle manifest ({fields}); copy the bundle again from the build host, or "
            "re-create it there with 'edgetl bundle RUN'."
        ) from exc
    folder = path.parent
    named = [m.onnx for m in checked.models.values()] + [m.weakly_typed_onnx for m in checked.models.values()]
    for name in [*checked.files, *named, checked.parity.inputs, *checked.parity.references.values()]:
        _relative(name, folder)
    missing = sorted(set(checked.models) - set(checked.parity.references))
    if missing:
        raise BundleError(f"{path} lists no parity reference for {', '.join(missing)}; re-create the bundle.")


def read_manifest(folder: Path) -> dict[str, Any]:
    """Load manifest.json and check every listed file against its sha256 (before anything is loaded)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path} is missing: {folder} is not an edgetl bundle (made by 'edgetl build').")
    try:
        manifest = read_json(path)
    except InvalidFileError as exc:
        raise BundleError(
            f"{path} is damaged (not valid JSON); copy the bundle again from the build host.", hint=exc.hint
        ) from exc
    _check_manifest(manifest, path)
    for name, digest in manifest["files"].items():
        file = _relative(name, folder)
        if not file.is_file():
            raise BundleError(f"{file} is missing from the bundle; copy the whole bundle folder again.")
        if sha256_file(file) != digest:
            raise BundleError(
                f"{file} differs from the bundle manifest (sha256): the copy is damaged or was edited; "
                "copy the bundle again from the build host."
            )
    return dict(manifest)


def is_bundle(folder: Path) -> bool:
    """True when ``folder`` holds a bundle manifest."""
    return (Path(folder) / MANIFEST).is_file()


def bundle_profile(manifest: dict[str, Any]) -> TargetProfile:
    """The target profile the bundle was made for (carried inside it)."""
    return TargetProfile.model_validate(manifest["profile"])


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


def write_bundle(
    out: Path,
    *,
    profile: TargetProfile,
    classes: list[str],
    spec: PreprocessSpec,
    fp32_onnx: Path,
    models: dict[str, Path],
    golden_inputs: np.ndarray,
    golden_names: list[str],
    references: dict[str, np.ndarray],
    host_metrics: dict[str, Any],
    provenance: dict[str, Any],
    name: str,
    thresholds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the bundle folder atomically (an earlier bundle survives until the new one is complete).

    ``models``: precision -> prepared ONNX (model.onnx, model.fp16.onnx, model.qdq.onnx); ``references``:
    precision -> reference logits of ``golden_inputs``; ``thresholds``: precision -> reject threshold (the good
    class against the rest), written to thresholds.json and carried into the DeepStream and Triton configs.
    """
    from edgetl.deploy.deepstream import write_deepstream
    from edgetl.deploy.triton import Kind, TritonModel, write_model
    from edgetl.versions import library_versions

    assert profile.tensorrt is not None
    with atomic_dir(out) as tmp:
        shutil.copyfile(fp32_onnx, tmp / "model.onnx")
        for path in models.values():
            if not (tmp / path.name).exists():
                shutil.copyfile(path, tmp / path.name)
        write_text_atomic(tmp / "labels.txt", "\n".join(classes) + "\n")
        write_json_atomic(tmp / "preprocess.json", spec.model_dump(mode="json"))
        if thresholds:
            write_json_atomic(tmp / "thresholds.json", {p: thresholds[p] for p in models if p in thresholds})

        (tmp / "parity").mkdir()
        np.save(tmp / PARITY_INPUTS, golden_inputs.astype(np.float32), allow_pickle=False)
        reference_files = {}
        for precision, logits in references.items():
            reference_files[precision] = f"parity/reference_{precision}.npy"
            np.save(tmp / reference_files[precision], logits.astype(np.float32), allow_pickle=False)

        ds_sources = {p: (tmp / "model.onnx" if p in ("fp32", "fp16") else tmp / models[p].name) for p in models}
        deepstream = write_deepstream(
            tmp / "deepstream", spec, classes, ds_sources, dla_core=profile.tensorrt.dla_core, thresholds=thresholds
        )

        triton_root = tmp / "triton"

        reject = thresholds or {}

        def triton_model(suffix: str, kind: Kind, precision: str, *, gpu: bool = True) -> TritonModel:
            return TritonModel(
                f"{name}_{suffix}", kind, spec.channels, spec.input_size, classes, gpu=gpu, reject=reject.get(precision)
            )

        triton = write_model(
            triton_root, triton_model("onnx", "onnxruntime_onnx", "fp32"), {"model.onnx": tmp / "model.onnx"}
        )
        ir = _openvino_ir(tmp / "model.onnx")
        if ir is not None:
            files = {"model.xml": ir / "model.xml", "model.bin": ir / "model.bin"}
            triton += write_model(triton_root, triton_model("openvino", "openvino", "fp32", gpu=False), files)
            shutil.rmtree(ir, ignore_errors=True)
        for precision in models:
            triton += write_model(triton_root, triton_model(f"trt_{precision}", "tensorrt_plan", precision), None)

        manifest: dict[str, Any] = {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "profile": profile.model_dump(mode="json"),
            "classes": classes,
            "preprocess": spec.model_dump(mode="json"),
            "models": {
                precision: {
                    "onnx": path.name,
                    "weakly_typed_onnx": "model.onnx" if precision == "fp16" else path.name,
                    "triton": f"{name}_trt_{precision}",
                }
                for precision, path in models.items()
            },
            "parity": {
                "inputs": PARITY_INPUTS,
                "names": golden_names,
                "references": reference_files,
                "tolerance": {p: TOLERANCE[p] for p in models},
                "reference_of": {p: "QDQ model on the build host" if p == "int8" else "FP32 model" for p in models},
            },
            "thresholds": "thresholds.json" if thresholds else None,
            "deepstream": [f"deepstream/{f}" for f in deepstream],
            "triton": [f"triton/{f}" for f in triton],
            "host_metrics": host_metrics,
            "provenance": {**provenance, "versions": library_versions()},
            "on_device": f"edgetl compile {out}",
        }
        write_text_atomic(tmp / "README.md", _readme(manifest, out))
        manifest["files"] = {
            p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def _openvino_ir(onnx_path: Path) -> Path | None:
    """FP32 OpenVINO IR of the model for Triton's openvino backend, or None without OpenVINO."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return None
    import openvino as ov

    folder = onnx_path.parent / ".openvino-ir"
    folder.mkdir(exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "model.xml"), compress_to_fp16=False)
    return folder


def _readme(manifest: dict[str, Any], out: Path) -> str:
    profile = manifest["profile"]
    trt = profile["tensorrt"]
    return f"""# edgetl bundle: {manifest["name"]} for {profile["name"]}

{profile["description"]}
Assumes TensorRT {trt["version"]}{f" (JetPack {trt['jetpack']})" if trt["jetpack"] else ""}.

On the device, from the folder that holds this bundle:

    edgetl compile {out.name}    # verify files, build the engines here, run the parity pack
    edgetl verify {out.name}     # parity pack again (top-1 and logit drift per precision)
    edgetl bench {out.name}      # latency of every engine on this device

Files: model.onnx (FP32), {", ".join(m["onnx"] for m in manifest["models"].values())}; labels.txt;
preprocess.json; parity/ (golden inputs and reference logits); deepstream/ (nvinfer configs); triton/ (a model
repository; TensorRT plans are added by `edgetl compile`). manifest.json holds the sha256 of every file.
"""


# --- on the device ------------------------------------------------------------------------------------------


def host_runner(path: Path, precision: str) -> Any:
    """ONNX Runtime on this machine's CPU: the stand-in where no engine was built."""
    from edgetl.targets.onnxruntime import OnnxRuntimeRunner

    # Unfused Q/DQ: ORT's fused int8 kernels would add their own rounding (and saturation on some CPUs);
    # the unfused graph computes exactly what the Q/DQ nodes say, like TensorRT's explicit quantization.
    return OnnxRuntimeRunner(path, threads=None, optimization="none" if precision == "int8" else "all")


def runners(folder: Path, manifest: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """precision -> (runtime name, opener): the engine when one was built here, else ONNX Runtime."""
    from edgetl.targets.base import Artifact
    from edgetl.targets.tensorrt import TensorRTTarget

    found: dict[str, tuple[str, Any]] = {}
    for precision, model in manifest["models"].items():
        engine_dir = folder / "engines" / precision
        if (engine_dir / "artifact.json").is_file():
            artifact = Artifact.read(engine_dir)
            found[precision] = ("tensorrt", lambda a=artifact: TensorRTTarget().load(a))
        else:
            path = folder / model["onnx"]
            found[precision] = ("onnxruntime-cpu", lambda p=path, q=precision: host_runner(p, q))
    return found


def verify_bundle(folder: Path, *, write: bool = True) -> dict[str, Any]:
    """Check the manifest, then run the parity pack through every precision; raise BundleError on failure."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    parity = manifest["parity"]
    inputs = np.load(folder / parity["inputs"], allow_pickle=False)
    rows = []
    for precision, (runtime, opener) in runners(folder, manifest).items():
        reference = np.load(folder / parity["references"][precision], allow_pickle=False)
        with opener() as runner:
            logits = np.concatenate([runner.infer(inputs[i : i + 1]) for i in range(len(inputs))])
        diff = float(np.abs(logits - reference).max())
        flips = [parity["names"][i] for i in np.flatnonzero(logits.argmax(1) != reference.argmax(1))]
        tolerance = parity["tolerance"][precision]
        rows.append(
            {
                "precision": precision,
                "runtime": runtime,
                "images": len(inputs),
                "max_abs_logit_diff": diff,
                "tolerance": tolerance,
                "top1_disagreements": flips,
                "passed": diff <= tolerance and not flips,
            }
        )
    result = {"bundle": str(folder), "checked": rows, "passed": all(r["passed"] for r in rows)}
    if write:
        write_json_atomic(folder / "verify.json", result)
    failed = [r for r in rows if not r["passed"]]
    if failed:
        lines = [
            f"{r['precision']} on {r['runtime']}: max |logit diff| {r['max_abs_logit_diff']:.3g} "
            f"(tolerance {r['tolerance']}), top-1 disagreements: {', '.join(r['top1_disagreements']) or 'none'}"
            for r in failed
        ]
        raise BundleError(
            f"parity pack of {folder} FAILED:\n  " + "\n  ".join(lines) + "\nDo not deploy; rebuild the engines with "
            "'edgetl compile' and check the TensorRT version against the profile."
        )
    return result


def compile_bundle(folder: Path, *, precisions: list[str] | None = None, verify: bool = True) -> dict[str, Any]:
    """Build the TensorRT engines of a bundle on this device, add the plans to triton/, then verify."""
    with run_lock(Path(folder), stage="compile"):
        return _compile_bundle(Path(folder), precisions=precisions, verify=verify)


def _compile_bundle(folder: Path, *, precisions: list[str] | None, verify: bool) -> dict[str, Any]:
    from edgetl.files import atomic_path
    from edgetl.targets.base import Artifact
    from edgetl.targets.tensorrt import ENGINE_FILE, TensorRTTarget, build_engine, device_fingerprint, weakly_typed

    folder = Path(folder)
    manifest = read_manifest(folder)
    profile = bundle_profile(manifest)
    assert profile.tensorrt is not None
    unknown = [p for p in precisions or [] if p not in manifest["models"]]
    if unknown:
        raise BundleError(
            f"{folder} has no {', '.join(map(repr, unknown))} model; --precision takes {', '.join(manifest['models'])}."
        )
    target = TensorRTTarget()
    target.require()
    if not target.is_available():
        raise BundleError(f"no NVIDIA GPU is visible here; run 'edgetl compile {folder}' on the device.")
    weak = weakly_typed()
    built = {}
    for precision in precisions or list(manifest["models"]):
        model = manifest["models"][precision]
        source = _relative(model["weakly_typed_onnx"] if weak else model["onnx"], folder)
        started = time.perf_counter()
        with atomic_dir(inside(folder, "engines", precision)) as tmp:
            facts = build_engine(
                source, tmp / ENGINE_FILE, precision=precision, spec=profile.tensorrt,  # type: ignore[arg-type]
                timing_cache=folder / "engines" / "timing.cache",
            )  # fmt: skip
            artifact = target.artifact(profile, precision, ENGINE_FILE, facts)  # type: ignore[arg-type]
            artifact.details["engine"] = device_fingerprint(profile.tensorrt.dla_core)
            artifact.details["build_seconds"] = round(time.perf_counter() - started, 1)
            artifact.classes = manifest["classes"]
            artifact.preprocess = manifest["preprocess"]
            artifact.source_onnx_sha256 = sha256_file(source)
            artifact.write(tmp)
        plan = inside(folder, "triton", model["triton"], "1", "model.plan")
        with atomic_path(plan) as tmp_plan:
            shutil.copyfile(folder / "engines" / precision / ENGINE_FILE, tmp_plan)
        built[precision] = Artifact.read(folder / "engines" / precision).details
    result: dict[str, Any] = {"built": built}
    if verify:
        result["verify"] = verify_bundle(folder)
    return result


def bench_bundle(folder: Path, *, warmup: int = 20, iterations: int = 200) -> dict[str, Any]:
    """Batch-1 latency of every precision here (engines when built, else ONNX Runtime); writes bench.json."""
    from edgetl.bench.latency import cold_start, measure_latency

    folder = Path(folder)
    manifest = read_manifest(folder)
    inputs = np.load(folder / manifest["parity"]["inputs"], allow_pickle=False)
    rows = []
    for precision, (runtime, opener) in runners(folder, manifest).items():
        runner, cold = cold_start(opener, inputs[:1])
        with runner:
            latency = measure_latency(runner.infer, inputs[:1], warmup=warmup, iterations=iterations)
        rows.append({"precision": precision, "runtime": runtime, "latency_ms": latency, "cold_start_ms": cold})
    result = {"bundle": str(folder), "results": rows}
    write_json_atomic(folder / "bench.json", result)
    return result
