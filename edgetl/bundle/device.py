"""On the device: build a TensorRT bundle's engines (``edgetl compile BUNDLE``) and time every precision
(``edgetl bench BUNDLE``). The files are checked against the manifest before anything is loaded."""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

from edgetl.files import atomic_dir, atomic_path, sha256_file, write_json_atomic
from edgetl.runtime.bundle import Bundle, BundleError
from edgetl.runtime.verify import runtime_plan, verify_bundle
from edgetl.targets.profiles import TargetProfile


def bundle_profile(manifest: dict[str, Any]) -> TargetProfile:
    """The target profile the bundle was made for (carried inside it)."""
    return TargetProfile.model_validate(manifest["profile"])


def compile_bundle(folder: Path, *, precisions: list[str] | None = None, verify: bool = True) -> dict[str, Any]:
    """Build the TensorRT engines of a bundle on this device, add the plans to triton/, then verify."""
    from edgetl.lock import run_lock

    with run_lock(Path(folder), stage="compile", scratch=False):
        return _compile_bundle(Path(folder), precisions=precisions, verify=verify)


def _compile_bundle(folder: Path, *, precisions: list[str] | None, verify: bool) -> dict[str, Any]:
    from edgetl.targets.tensorrt import ENGINE_FILE, TensorRTTarget, build_engine, device_fingerprint, weakly_typed

    bundle = Bundle.open(folder)
    folder = bundle.folder
    manifest = bundle.manifest
    profile = bundle_profile(manifest)
    if profile.tensorrt is None:
        raise BundleError(
            f"{folder} is an {profile.backend} bundle: it runs as it is, there is nothing to compile.",
            hint=f"run 'edgetl verify {folder}', then 'edgetl predict {folder} IMAGES...'.",
        )
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
    for precision in [bundle.check_precision(p) for p in precisions or list(manifest["models"])]:
        model = manifest["models"][precision]
        source = bundle.file(model["weakly_typed_onnx"] if weak else model["onnx"])
        started = time.perf_counter()
        with atomic_dir(bundle.engine_dir(precision)) as tmp:
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
            built[precision] = artifact.details
        # The plan goes beside the Triton model's config, a file the manifest lists (so a path inside the bundle).
        plan = bundle.file(f"triton/{model['triton']}/config.pbtxt").parent / "1" / "model.plan"
        with atomic_path(plan) as tmp_plan:
            shutil.copyfile(bundle.engine_dir(precision) / ENGINE_FILE, tmp_plan)
    result: dict[str, Any] = {"built": built}
    if verify:
        result["verify"] = verify_bundle(folder)
    return result


def bench_bundle(folder: Path, *, warmup: int = 20, iterations: int = 200) -> dict[str, Any]:
    """Batch-1 latency of every precision here (engines when built, else ONNX Runtime); writes bench.json."""
    from edgetl.bench.latency import cold_start, measure_latency

    bundle = Bundle.open(folder)
    rows = []
    for precision, (runtime, device) in runtime_plan(bundle).items():
        inputs = bundle.parity_inputs(precision)
        runner, cold = cold_start(partial(bundle.runner, precision, device=device), inputs[:1])
        with runner:
            latency = measure_latency(runner.infer, inputs[:1], warmup=warmup, iterations=iterations)
        rows.append({"precision": precision, "runtime": runtime, "latency_ms": latency, "cold_start_ms": cold})
    result = {"bundle": str(bundle.folder), "results": rows}
    write_json_atomic(bundle.folder / "bench.json", result)
    return result
