"""`edgetl build` is this chain of stages; each reads and writes the run folder and can run alone."""

from __future__ import annotations

import time
from typing import Any

from edgetl.bundle.build import stage_bundle
from edgetl.bundle.summary import device_summary
from edgetl.config import BuildConfig
from edgetl.custody import check_inputs, read_meta, verified_split
from edgetl.data.dataset import Dataset, prepare_dataset
from edgetl.data.inputs import split_inputs as _split_inputs
from edgetl.errors import MissingInputError
from edgetl.files import atomic_dir, sha256_file
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
    from edgetl.preprocess import PreprocessSpec
    from edgetl.quantize.calibration import build_calibration

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
    from edgetl.pixel_input import check_images, take_pixels
    from edgetl.quantize.calibration import load_calibration
    from edgetl.runtime.preprocess import PreprocessSpec
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
    gate = None
    if {"int8", "bf16"} & set(profile.precisions):
        from edgetl.quantize.gate_data import gate_data_for_run

        gate = gate_data_for_run(run, config, calib, onnx_path, profile.quantization.gate)
        _log(f"accuracy gate of {profile.name}: {gate.source}")
    spec = PreprocessSpec.model_validate(meta["preprocess"])
    pixels = check_images(verified_split(run, "compile"), spec) if config.export.uint8_input else None
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
                gate=gate,
            )
            artifact.classes = list(meta["classes"])
            artifact.preprocess = meta["preprocess"]
            if pixels is not None:
                take_pixels(target, artifact, tmp, spec, pixels, gate=gate, limits=profile.quantization.gate)
            artifact.source_onnx_sha256 = sha256_file(onnx_path)
            artifact.details["compile_seconds"] = round(time.perf_counter() - t0, 2)
            artifact.write(tmp)
        _log(f"compiled {profile.name} {precision} in {time.perf_counter() - t0:.1f} s")
        artifacts.append(run.target(profile.name, precision))
    return artifacts


def stage_bench(
    config: BuildConfig, run: RunDir, profiles: list[TargetProfile], *, timings: dict[str, float] | None = None
) -> dict[str, Any]:
    """Measure every compiled artifact and write the report: :func:`edgetl.bench.stage.bench_stage`."""
    from edgetl.bench.stage import bench_stage

    return bench_stage(config, run, profiles, timings=timings)


@writes_run("build")
def build(config: BuildConfig, *, force: bool = False, progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """Run every stage for every target; returns the report (also in runs/<name>/report.json).

    ``resume`` continues an interrupted build in its existing run folder: training goes on from its last
    finished epoch (or is kept when it had finished), the other stages run again.
    """
    from edgetl.report import print_report
    from edgetl.targets import get_target

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
    # TensorRT bundles first: the report carries their host checks. CPU bundles after the bench: they carry the
    # thresholds it tuned for each artifact, so predicting on a bundle gives the bench's verdicts.
    bundles = {p.name: timed(f"bundle {p.name}", stage_bundle, config, run, p) for p in profiles if p.tensorrt}
    t0 = time.perf_counter()
    report = stage_bench(config, run, profiles, timings=timings)
    _log(f"bench done in {time.perf_counter() - t0:.1f} s")
    for p in profiles:
        if p.tensorrt is None and get_target(p.backend).is_available():
            bundles[p.name] = timed(f"bundle {p.name}", stage_bundle, config, run, p)
        elif p.tensorrt is None:
            _log(
                f"no bundle for {p.name}: {p.backend} is not installed here, so the bench could not tune its thresholds"
            )
    for name, manifest in bundles.items():
        _log(device_summary(run, name, manifest))
    _log(f"report: {run.root / 'report.html'}, {run.root / 'report.md'} and {run.root / 'report.json'}")
    print_report(report)  # last: the verdict table and the recommendation per target end the console output
    return report
