"""The `edgetl` command. Each command parses options and calls one library function.

Heavy libraries (torch, onnxruntime, openvino) are imported inside the commands, so `edgetl --help` is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from edgetl.errors import EdgetlError

# Commands that can continue an interrupted run with --resume.
_RESUMABLE = {"build", "train"}


def _say_error(message: str, hint: str | None = None) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True)
    console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    if hint:
        console.print(Text("hint: ", style="bold") + Text(hint), soft_wrap=True)


def _say_warning(message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True).print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)


class _Commands(TyperGroup):
    """The one place user-facing failures become a message and an exit code (2); bugs keep their traceback."""

    def invoke(self, ctx: Any) -> Any:
        import errno
        import shlex
        import sys

        # The command line after 'edgetl' (global options already consumed), for the Ctrl-C line.
        argv = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except EdgetlError as exc:
            _say_error(str(exc), exc.hint)
            raise typer.Exit(code=2) from exc
        except KeyboardInterrupt:
            command = ctx.invoked_subcommand or "edgetl"
            again = [*argv, "--resume"] if command in _RESUMABLE and "--resume" not in argv else argv
            print(
                f"\ninterrupted: edgetl {command} stopped; finished artifacts are kept and nothing is left "
                f"half-written. To continue: edgetl {shlex.join(again)}",
                file=sys.stderr,
            )
            raise typer.Exit(code=130) from None
        except BrokenPipeError:
            # The reader of our output went away (`edgetl predict ... | head`): stop quietly, as Unix tools do.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(code=1) from None
        except OSError as exc:
            # Writes outside edgetl's atomic helpers (temporary folders of a backend) can fill a disk too.
            if exc.errno not in {errno.ENOSPC, errno.EDQUOT}:
                _report_bug()
                raise typer.Exit(code=1) from exc
            where = f" while writing {exc.filename}" if exc.filename else ""
            _say_error(f"no space left on the disk{where}; free some space and run again.")
            raise typer.Exit(code=2) from exc
        except Exception as exc:
            _report_bug()
            raise typer.Exit(code=1) from exc


def _report_bug() -> None:
    import sys
    import traceback

    traceback.print_exc(file=sys.stderr)
    print(
        "This is a bug in edgetl, not a problem with your input: please report it with the command and the "
        "traceback above.",
        file=sys.stderr,
    )


app = typer.Typer(
    cls=_Commands,
    help="Fine-tune a compact backbone on inspection images, compile it for edge targets, measure every artifact.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data sets: import, check and split.", no_args_is_help=True)
study_app = typer.Typer(help="Studies measured on a run's own data.", no_args_is_help=True)


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show third-party log lines (nncf INFO, torch warnings).")
    ] = False,
) -> None:
    """Fine-tune a compact backbone on inspection images, compile it for edge targets, measure every artifact."""
    from edgetl.quiet import quiet_third_party

    quiet_third_party(verbose=verbose)


app.add_typer(data_app, name="data")
app.add_typer(study_app, name="study")

RunArg = Annotated[Path, typer.Argument(help="Run folder (runs/<name>) made by 'edgetl build' or 'edgetl init'.")]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option("--target", "-t", help="Target profile or alias (repeatable): cpu, intel-cpu, ..."),
]


_ACCEPT = "Acceptance (judged per artifact on the test split)"
MinClassRecallOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--accept-min-class-recall",
        help="Minimum recall of each defect class (0.9), or of one class (crack=0.9, repeatable).",
        rich_help_panel=_ACCEPT,
    ),
]
MinDefectRecallOpt = Annotated[
    float | None,
    typer.Option(
        "--accept-min-defect-recall",
        help="Minimum share of defective parts rejected at the tuned threshold.",
        rich_help_panel=_ACCEPT,
    ),
]
MaxFalseRejectOpt = Annotated[
    float | None,
    typer.Option(
        "--accept-max-false-reject",
        help="Maximum share of good parts rejected at the tuned threshold (test split).",
        rich_help_panel=_ACCEPT,
    ),
]
MinBalancedAccuracyOpt = Annotated[
    float | None,
    typer.Option("--accept-min-balanced-accuracy", help="Minimum balanced accuracy.", rich_help_panel=_ACCEPT),
]
MaxP99Opt = Annotated[
    float | None,
    typer.Option("--accept-max-p99-ms", help="Deadline on the compute p99 (ms).", rich_help_panel=_ACCEPT),
]
MaxE2eP99Opt = Annotated[
    float | None,
    typer.Option("--accept-max-e2e-p99-ms", help="Deadline on the end-to-end p99 (ms).", rich_help_panel=_ACCEPT),
]
MaxSizeOpt = Annotated[
    float | None, typer.Option("--accept-max-size-mb", help="Largest model size (MB).", rich_help_panel=_ACCEPT)
]
MaxMemoryOpt = Annotated[
    float | None,
    typer.Option("--accept-max-memory-mb", help="Largest peak resident memory (MB).", rich_help_panel=_ACCEPT),
]
PointEstimatesOpt = Annotated[
    bool | None,
    typer.Option(
        "--accept-point-estimates/--accept-with-confidence",
        help="Pass a criterion on its point estimate (default: only when met with 95 % confidence).",
        rich_help_panel=_ACCEPT,
    ),
]
RequireAcceptanceOpt = Annotated[
    bool,
    typer.Option(
        "--require-acceptance",
        help="Exit 3 when a target has no artifact that meets the acceptance criteria (for CI of model updates).",
        rich_help_panel=_ACCEPT,
    ),
]


def _class_recall(values: list[str] | None) -> float | dict[str, float] | None:
    """--accept-min-class-recall values: one share for every defect class, or class=share pairs."""
    from edgetl.config import ConfigError

    if not values:
        return None
    try:
        if len(values) == 1 and "=" not in values[0]:
            return float(values[0])
        pairs = [value.split("=", 1) for value in values]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError
        return {name.strip(): float(share) for name, share in pairs}
    except ValueError:
        raise ConfigError(
            f"--accept-min-class-recall {' '.join(values)}: give one share (0.9) or class=share pairs (crack=0.9)."
        ) from None


def _acceptance(class_recall: list[str] | None, point_estimates: bool | None, **limits: float | None) -> dict[str, Any]:
    """The acceptance criteria given on the command line (keys of AcceptanceConfig; absent ones left out)."""
    given: dict[str, Any] = {k: v for k, v in limits.items() if v is not None}
    recall = _class_recall(class_recall)
    if recall is not None:
        given["min_class_recall"] = recall
    if point_estimates is not None:
        given["require_confidence"] = not point_estimates
    return given


def _require_criteria(acceptance: Any) -> None:
    """--require-acceptance without a criterion would pass every build: refuse it before anything runs."""
    from edgetl.config import ConfigError

    if not acceptance.criteria_set():
        raise ConfigError(
            "--require-acceptance needs acceptance criteria: set acceptance: in the config (min_defect_recall, "
            "max_false_reject, max_p99_ms, ...) or pass --accept-* options."
        )


def _exit_unless_accepted(report: dict[str, Any]) -> None:
    """Exit 3 (after the verdict was printed) when a target has no artifact that meets the criteria."""
    section = report.get("acceptance") or {}
    if not section.get("accepted"):
        _say_error("acceptance criteria not met: no artifact meets them for " + ", ".join(
            t for t, r in section.get("targets", {}).items() if not r.get("recommended")
        ) + " (exit code 3)")  # fmt: skip
        raise typer.Exit(code=3)


def _config(config: Path | None, data: Path | None, overrides: dict[str, Any]) -> Any:
    from edgetl.config import ConfigError, build_config_from_dict, load_build_config, set_dotted

    if config is None and data is None:
        raise ConfigError("give --data DIR (an ImageFolder or a CSV manifest) or --config FILE.")
    clean = {k: v for k, v in overrides.items() if v is not None}
    source = {} if data is None else {_data_key(data): str(data.resolve())}
    if config is None:
        return build_config_from_dict(set_dotted({"data": source}, clean), source=str(data))
    raw = load_build_config(config).model_dump(mode="json")
    if data is not None:
        given = raw["data"].get("root") or raw["data"].get("manifest")
        _say_warning(
            f"--data {data} replaces data.{'root' if raw['data'].get('root') else 'manifest'}: {given} of {config}"
        )
        raw["data"].update({"root": None, "manifest": None, **source})
    return build_config_from_dict(set_dotted(raw, clean), source=str(config))


def _data_key(data: Path) -> str:
    """data.manifest for a .csv file, data.root otherwise (check_dataset says when that is a file, not a folder)."""
    return "manifest" if data.suffix.lower() == ".csv" else "root"


@app.command()
def build(
    data: Annotated[
        Path | None, typer.Option(help="ImageFolder root or CSV manifest (with --config: replaces its data source).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML build config.")] = None,
    target: TargetOpt = None,
    name: Annotated[str | None, typer.Option(help="Run name: the folder runs/<name>.")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Parent of run folders.")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, linear, partial or full.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum training epochs.")] = None,
    gray: Annotated[bool | None, typer.Option("--gray/--rgb", help="Fold the first conv to one channel.")] = None,
    device: Annotated[str | None, typer.Option(help="Training device: cpu, cuda or auto.")] = None,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Wall time of the recipe search (train.strategy auto).")
    ] = None,
    study_storage: Annotated[
        str | None,
        typer.Option(help="Optuna RDB storage URL: several machines work on one recipe search (train.search.storage)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild an existing run in place.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted build: training goes on from its last epoch.")
    ] = False,
    accept_min_class_recall: MinClassRecallOpt = None,
    accept_min_defect_recall: MinDefectRecallOpt = None,
    accept_max_false_reject: MaxFalseRejectOpt = None,
    accept_min_balanced_accuracy: MinBalancedAccuracyOpt = None,
    accept_max_p99_ms: MaxP99Opt = None,
    accept_max_e2e_p99_ms: MaxE2eP99Opt = None,
    accept_max_size_mb: MaxSizeOpt = None,
    accept_max_memory_mb: MaxMemoryOpt = None,
    accept_point_estimates: PointEstimatesOpt = None,
    require_acceptance: RequireAcceptanceOpt = False,
) -> None:
    """Run the whole chain: data, train, export, calibrate, compile, bench, report; end with the verdict."""
    acceptance = _acceptance(
        accept_min_class_recall,
        accept_point_estimates,
        min_defect_recall=accept_min_defect_recall,
        max_false_reject=accept_max_false_reject,
        min_balanced_accuracy=accept_min_balanced_accuracy,
        max_p99_ms=accept_max_p99_ms,
        max_e2e_p99_ms=accept_max_e2e_p99_ms,
        max_size_mb=accept_max_size_mb,
        max_memory_mb=accept_max_memory_mb,
    )
    cfg = _config(
        config,
        data,
        {
            "targets": target or None,
            "name": name,
            "runs_dir": str(runs_dir) if runs_dir else None,
            "train.strategy": strategy,
            "train.epochs": epochs,
            "model.gray": gray,
            "train.device": device,
            "train.budget_minutes": budget_minutes,
            "train.search.storage": study_storage,
            **{f"acceptance.{key}": value for key, value in acceptance.items()},
        },
    )
    if require_acceptance:
        _require_criteria(cfg.acceptance)
    from edgetl.pipeline import build as run_build

    report = run_build(cfg, force=force, resume=resume)
    if require_acceptance:
        _exit_unless_accepted(report)


@app.command()
def init(
    data: Annotated[Path | None, typer.Option(help="ImageFolder root or CSV manifest.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML build config.")] = None,
    target: TargetOpt = None,
    name: Annotated[str | None, typer.Option(help="Run name.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run's config.")] = False,
) -> None:
    """Create a run folder with its resolved config, for running stages one by one."""
    from edgetl.run import init_run

    run = init_run(_config(config, data, {"targets": target or None, "name": name}), force=force)
    typer.echo(run.root)


@data_app.command("elpv")
def data_elpv(
    out: Annotated[Path, typer.Argument(help="Destination folder.")],
    limit: Annotated[int | None, typer.Option(help="Stratified subset of this many images.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset.")] = 0,
) -> None:
    """Write the ELPV solar-cell set as an ImageFolder plus manifest.csv (slice = mono/poly)."""
    from edgetl.data.elpv import import_elpv

    manifest = import_elpv(out, limit=limit, seed=seed)
    typer.echo(f"ELPV written: {manifest}")


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(help="ImageFolder root or CSV manifest.")],
    out: Annotated[Path, typer.Option(help="Folder for the report (check.json, check.csv).")] = Path("edgetl-check"),
    min_images_per_class: Annotated[int | None, typer.Option(help="Fewer images in a class is an error.")] = None,
    min_image_size: Annotated[int | None, typer.Option(help="A shorter image side (pixels) is an error.")] = None,
) -> None:
    """Check every image the way 'edgetl build' does first; write a report, never touch the images."""
    from edgetl.config import ConfigError, DataConfig
    from edgetl.data.check import check_dataset

    raw: dict[str, Any] = {_data_key(data): data}
    if min_images_per_class is not None:
        raw["min_images_per_class"] = min_images_per_class
    if min_image_size is not None:
        raw["min_image_size"] = min_image_size
    try:
        cfg = DataConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid option: {exc}") from exc
    report = check_dataset(cfg)
    csv_path = report.write(out)
    for finding in report.warnings[:20]:
        typer.echo(f"warning: {finding.path}: {finding.reason}", err=True)
    typer.echo(
        f"{len(report.samples)} images checked: {len(report.errors)} errors, {len(report.warnings)} warnings; "
        f"report {csv_path}"
    )
    report.raise_for_errors(report=csv_path)


@data_app.command("split")
def data_split(run: RunArg) -> None:
    """Check every image and write run/data/split.csv and dataset.json."""
    from edgetl.pipeline import stage_data
    from edgetl.run import open_run

    run_dir, cfg = open_run(run)
    dataset = stage_data(cfg, run_dir)
    typer.echo(f"{len(dataset.samples)} images, classes {dataset.classes}; {run_dir.data / 'dataset.json'}")


@app.command()
def train(
    run: RunArg,
    resume: Annotated[bool, typer.Option(help="Continue from the last finished epoch (train/resume.pt).")] = False,
) -> None:
    """Fine-tune the backbone of a run."""
    from edgetl.pipeline import stage_train
    from edgetl.run import open_run

    run_dir, cfg = open_run(run)
    stage_train(cfg, run_dir, resume=resume)


@app.command()
def export(run: RunArg) -> None:
    """Export the run's checkpoint to ONNX and check parity with PyTorch."""
    from edgetl.pipeline import stage_export
    from edgetl.run import open_run

    report = stage_export(*open_run(run)[::-1])
    typer.echo(f"parity: max |logit diff| {report['max_abs_diff']:.2e} on {report['images']} images")


@app.command()
def calibrate(run: RunArg) -> None:
    """Select and preprocess the calibration set."""
    from edgetl.pipeline import stage_calibrate
    from edgetl.run import open_run

    calib = stage_calibrate(*open_run(run)[::-1])
    typer.echo(f"calibration set: {len(calib)} images {calib.manifest['counts_per_class']}")


RunOrBundleArg = Annotated[
    Path, typer.Argument(help="Run folder (runs/<name>), or a bundle folder (runs/<name>/bundle/<profile>).")
]
BundleArg = Annotated[Path, typer.Argument(help="Bundle folder (runs/<name>/bundle/<profile>) copied to the device.")]


@app.command()
def compile(
    run: RunOrBundleArg,
    target: TargetOpt = None,
    precision: Annotated[
        list[str] | None, typer.Option(help="Bundle only: engines to build (repeatable); default all.")
    ] = None,
    verify: Annotated[bool, typer.Option(help="Bundle only: run the parity pack after building.")] = True,
) -> None:
    """Compile a run's ONNX model for its targets; on a device, build a bundle's TensorRT engines."""
    from edgetl.runtime.bundle import is_bundle

    if is_bundle(run):
        _compile_bundle(run, precision, verify)
        return
    from edgetl.pipeline import stage_compile
    from edgetl.run import open_run
    from edgetl.targets.profiles import resolve_profile

    run_dir, cfg = open_run(run)
    for name in target or cfg.targets:
        stage_compile(cfg, run_dir, resolve_profile(name))


def _compile_bundle(folder: Path, precisions: list[str] | None, verify: bool) -> None:
    from edgetl.bundle.device import compile_bundle

    result = compile_bundle(folder, precisions=precisions, verify=verify)
    for precision, details in result["built"].items():
        engine = details["engine"]
        typer.echo(
            f"engine {precision}: TensorRT {engine['tensorrt']} on {engine['gpu']} ({details['build_seconds']} s)"
        )
    if verify:
        typer.echo(f"parity pack passed: {folder / 'verify.json'}")


@app.command()
def bundle(run: RunArg, target: TargetOpt = None) -> None:
    """Write the bundle of every target of the run (or the given ones): runs/<name>/bundle/<profile>/.

    CPU targets carry the thresholds their bench tuned: bench them first ('edgetl bench RUN').
    """
    from rich.console import Console

    from edgetl.bundle.build import stage_bundle
    from edgetl.bundle.summary import device_summary
    from edgetl.run import open_run
    from edgetl.targets.profiles import resolve_profile

    run_dir, cfg = open_run(run)
    for profile in [resolve_profile(name) for name in target or cfg.targets]:
        manifest = stage_bundle(cfg, run_dir, profile)
        Console().print(device_summary(run_dir, profile.name, manifest))


@app.command()
def verify(bundle: BundleArg) -> None:
    """Check a bundle's files against its manifest (none missing, altered or unlisted), then run its parity pack.

    TensorRT bundles run their engines where 'edgetl compile' built them, else their ONNX in ONNX Runtime.
    """
    from edgetl.runtime.verify import verify_bundle

    result = verify_bundle(bundle)
    for row in result["checked"]:
        typer.echo(
            f"{row['precision']} on {row['runtime']}: max |logit diff| {row['max_abs_logit_diff']:.3g} "
            f"(tolerance {row['tolerance']}), top-1 identical on {row['images']} images"
        )
    typer.echo("parity pack passed")


@app.command()
def bench(
    run: RunOrBundleArg,
    target: TargetOpt = None,
    threads: Annotated[int | None, typer.Option(help="Threads per runtime (default: every core).")] = None,
    deadline_ms: Annotated[
        float | None, typer.Option(help="Line takt in ms: report the share of frames slower than this.")
    ] = None,
    max_false_reject: Annotated[
        float | None, typer.Option(help="Good parts rejected at most when tuning the reject threshold (0.01 = 1 %).")
    ] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed warm-up runs.")] = None,
    warmup_seconds: Annotated[float | None, typer.Option(help="Warm up for this long instead.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Timed runs.")] = None,
    duration: Annotated[float | None, typer.Option(help="Time runs for this many seconds instead.")] = None,
    accept_min_class_recall: MinClassRecallOpt = None,
    accept_min_defect_recall: MinDefectRecallOpt = None,
    accept_max_false_reject: MaxFalseRejectOpt = None,
    accept_min_balanced_accuracy: MinBalancedAccuracyOpt = None,
    accept_max_p99_ms: MaxP99Opt = None,
    accept_max_e2e_p99_ms: MaxE2eP99Opt = None,
    accept_max_size_mb: MaxSizeOpt = None,
    accept_max_memory_mb: MaxMemoryOpt = None,
    accept_point_estimates: PointEstimatesOpt = None,
    require_acceptance: RequireAcceptanceOpt = False,
) -> None:
    """Measure accuracy and latency of compiled artifacts (one process each); rewrite the report; end with the
    verdict of the run's acceptance criteria (overridden by --accept-* options).

    On a bundle folder: the latency of every precision here (engines where built, else ONNX Runtime).
    """
    from edgetl.runtime.bundle import is_bundle

    if is_bundle(run):
        from edgetl.bundle.device import bench_bundle

        for row in bench_bundle(run)["results"]:
            lat = row["latency_ms"]
            typer.echo(f"{row['precision']} on {row['runtime']}: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
        return
    from edgetl.bench import run as bench_run
    from edgetl.config import AcceptanceConfig
    from edgetl.report import print_report
    from edgetl.run import open_run

    acceptance = _acceptance(
        accept_min_class_recall,
        accept_point_estimates,
        min_defect_recall=accept_min_defect_recall,
        max_false_reject=accept_max_false_reject,
        min_balanced_accuracy=accept_min_balanced_accuracy,
        max_p99_ms=accept_max_p99_ms,
        max_e2e_p99_ms=accept_max_e2e_p99_ms,
        max_size_mb=accept_max_size_mb,
        max_memory_mb=accept_max_memory_mb,
    )
    if require_acceptance:
        criteria = {**open_run(run)[1].acceptance.model_dump(), **acceptance}
        _require_criteria(AcceptanceConfig.model_validate(criteria))
    settings = {
        "threads": threads,
        "deadline_ms": deadline_ms,
        "max_false_reject": max_false_reject,
        "warmup": warmup,
        "warmup_seconds": warmup_seconds,
        "iterations": iterations,
        "duration_s": duration,
    }
    report = bench_run(
        run, targets=target, acceptance=acceptance, **{k: v for k, v in settings.items() if v is not None}
    )
    typer.echo(f"report: {Path(run) / 'report.html'}")
    print_report(report)
    if require_acceptance:
        _exit_unless_accepted(report)


@app.command()
def clean(
    run: RunArg,
    dry_run: Annotated[bool, typer.Option(help="List what would be removed, remove nothing.")] = False,
) -> None:
    """Remove what can be rebuilt from a run (caches, calibration pixels); never models, reports, configs or records."""
    from edgetl.clean import clean_run, run_size
    from edgetl.run import open_run

    run_dir, _ = open_run(run)
    removed = clean_run(run_dir, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for entry in removed:
        typer.echo(f"{verb} {entry['path']} ({entry['bytes'] / 1e6:.1f} MB): {entry['rebuilt_by']}")
    total = sum(entry["bytes"] for entry in removed)
    typer.echo(
        f"{verb} {len(removed)} files, {total / 1e6:.1f} MB; {run_dir.root} holds "
        f"{run_size(run_dir)['bytes'] / 1e6:.1f} MB without its report files"
    )


@app.command()
def predict(
    bundle: BundleArg,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Images, folders of images, or lists of them (a CSV with a path column, a .txt).", show_default=False
        ),
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32, fp16, bf16 or int8 (default: FP32 when the bundle has it).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Reject when the defect score 1 - P(good) >= this (default: the tuned one).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write rows to this .csv or .jsonl (default: CSV on stdout).")
    ] = None,
    watch: Annotated[
        Path | None, typer.Option(help="Then predict every new image that appears in this folder, until Ctrl-C.")
    ] = None,
    fail_on_reject: Annotated[
        bool, typer.Option(help="Exit 1 when a part is rejected or an image cannot be read.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(help="Backend threads per inference (default: 1 per worker for files, every core for --watch)."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="OpenVINO device (CPU, GPU, ...); 'cpu' runs a TensorRT bundle's ONNX.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Images decoded and inferred at once (default: the CPU count, at most 8).")
    ] = None,
    settle: Annotated[float, typer.Option(help="--watch: seconds a file's size must stay unchanged.")] = 0.5,
    retry_for: Annotated[
        float, typer.Option(help="--watch: seconds an image that fails to decode is retried before its error row.")
    ] = 10.0,
    count: Annotated[int | None, typer.Option(help="--watch: stop after this many new images.")] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="--watch: stop after this many seconds without a new image.")
    ] = None,
    drift: Annotated[
        bool,
        typer.Option(help="Also score drift: each window of images against the bundle's reference embeddings."),
    ] = False,
    drift_window: Annotated[int, typer.Option(help="--drift: images per scored window (10 or more).")] = 100,
    drift_every: Annotated[
        int, typer.Option(help="--drift: embed every N-th image only (the embedder costs a backbone pass).")
    ] = 1,
) -> None:
    """Run a bundle on images: one row per image (path, class, defect score, verdict, ms) and a summary.

    The bundle is verified first (sha256 of every file); an unreadable image is a row with its error.
    """
    from edgetl.runtime.job import WatchSettings, print_summary, run_predict

    watching = None
    if watch is not None:
        watching = WatchSettings(watch, settle=settle, retry_for=retry_for, count=count, idle_exit=idle_exit)
    result = run_predict(
        bundle,
        paths or [],
        precision=precision,
        threshold=threshold,
        out=out,
        watch=watching,
        threads=threads,
        device=device,
        workers=workers,
        drift_window=drift_window if drift else None,
        drift_every=drift_every,
    )
    print_summary(result)
    if fail_on_reject and (result.summary.rejects or result.summary.errors):
        raise typer.Exit(code=1)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="Baseline: a run folder or its report.json.")],
    run_b: Annotated[Path, typer.Argument(help="Candidate: a run folder or its report.json.")],
    max_latency_regression: Annotated[
        float | None, typer.Option(help="Exit 1 when an artifact's p50 grows by more than this many percent.")
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(help="Exit 1 when an artifact's accuracy or balanced accuracy drops by more points."),
    ] = None,
    different_data: Annotated[
        bool, typer.Option(help="Compare runs whose data or classes differ (the deltas are then not the model's).")
    ] = False,
) -> None:
    """Print what got faster, slower, better or worse from RUN_A to RUN_B; exit 1 past the limits."""
    from edgetl.bench.compare import comparability, compare_reports, load_report, print_comparison
    from edgetl.errors import EdgetlError

    report_a, report_b = load_report(run_a), load_report(run_b)
    problems = comparability(report_a, report_b)
    if problems and not different_data:
        raise EdgetlError(
            f"{run_a} and {run_b} are not comparable: " + "; ".join(problems),
            hint="compare runs built on the same data (same split), or pass --different-data to see the deltas anyway",
        )
    for problem in problems:
        _say_warning(f"{problem}; the deltas below are NOT the models' difference alone")
    result = compare_reports(
        report_a,
        report_b,
        max_latency_regression=max_latency_regression,
        max_accuracy_drop=max_accuracy_drop,
    )
    print_comparison(result, name_a=str(run_a), name_b=str(run_b))
    if not result.passed:
        raise typer.Exit(code=1)


@app.command()
def gap(
    run: RunArg,
    images: Annotated[
        Path, typer.Argument(help="New images: a folder (class folders or any images) or a CSV manifest.")
    ],
    reference: Annotated[
        Path | None, typer.Option(help="Compare against these images instead of the run's train split.")
    ] = None,
    slice_by: Annotated[str, typer.Option(help="Also per: slice (manifest column), label (per class) or none.")] = (
        "slice"
    ),
    label: Annotated[str | None, typer.Option(help="Result name: runs/<name>/gap/<label>.json.")] = None,
    max_images: Annotated[int, typer.Option(help="At most this many images per side (whole groups, seeded).")] = 1000,
    permutations: Annotated[int, typer.Option(help="Permutations of the MMD test.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of subsampling, permutations, folds and bootstraps.")] = 0,
) -> None:
    """Measure the domain gap between a run's training images and new images, in the run's own backbone."""
    from edgetl.transfer.gap import print_gap, run_gap
    from edgetl.transfer.section import refresh_report

    run_dir = _existing_run(run)
    result = run_gap(
        run_dir,
        images,
        reference=reference,
        label=label,
        slice_by=slice_by,
        max_images=max_images,
        permutations=permutations,
        seed=seed,
    )
    print_gap(result)
    refresh_report(run_dir)
    typer.echo(f"gap: {result['verdict']}; {run_dir.root / 'gap' / (result['label'] + '.json')}")


@app.command()
def adapt(
    run: RunArg,
    images: Annotated[Path, typer.Option(help="Unlabelled images of the new station: a folder or a CSV manifest.")],
    name: Annotated[str | None, typer.Option(help="Name of the new run (default <run>-adapted).")] = None,
    eval_images: Annotated[
        Path | None,
        typer.Option("--eval", help="Labelled images of the new station, kept apart, for before/after."),
    ] = None,
    build: Annotated[
        bool, typer.Option(help="Export, calibrate, compile, bundle and bench the new run (--no-build: train only).")
    ] = True,
    layers: Annotated[
        str,
        typer.Option(help="all (every batch-norm layer, as published) or trained (the blocks the run trained only)."),
    ] = "all",
    force: Annotated[bool, typer.Option(help="Replace an existing run of that name.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the batch order and the figures.")] = 0,
) -> None:
    """AdaBN: re-estimate batch-norm statistics on a new station's images, into a new run built like any other."""
    from edgetl.transfer.adapt import adapt_run
    from edgetl.transfer.section import adapt_markdown, refresh_report

    report = adapt_run(
        _existing_run(run).root,
        images,
        name=name,
        eval_images=eval_images,
        force=force,
        build=build,
        layers=layers,
        seed=seed,
    )
    typer.echo("\n".join(adapt_markdown(report)))
    from edgetl.run import RunDir

    target = RunDir(Path(report["source_run"]).parent / report["run"])
    refresh_report(target)
    typer.echo(f"adapted run: {target.root}")


@study_app.command("transfer")
def study_transfer(
    run: RunArg,
    fractions: Annotated[str, typer.Option(help="Shares of the training groups, comma-separated.")] = "0.1,0.25,0.5,1",
    seeds: Annotated[
        int | None,
        typer.Option(help="Seeds per share and arm (default: 3 on cuda; 1 on cpu, about an hour on 2 cores)."),
    ] = None,
    input_size: Annotated[
        int | None, typer.Option(help="Input side of both arms (default: the recipe's on cuda, at most 128 on cpu).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Pretrained arm's epochs (default: the recipe's).")] = None,
    scratch_epochs: Annotated[int, typer.Option(help="Scratch arm's epochs.")] = 16,
    scratch_lr: Annotated[float, typer.Option(help="Scratch arm's learning rate (every block).")] = 3e-3,
    scratch_patience: Annotated[
        int | None, typer.Option(help="Stop the scratch arm after this many epochs without progress (default: never).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: every core).")] = None,
    resume: Annotated[bool, typer.Option(help="Reuse the finished fits of an interrupted study.")] = True,
) -> None:
    """Pretrained against random initialisation: learning curves, time to score, and the usual claims measured."""
    from edgetl.config import ConfigError
    from edgetl.transfer.section import refresh_report, study_markdown
    from edgetl.transfer.study import StudySettings, run_study

    try:
        shares = tuple(float(f) for f in fractions.split(",") if f.strip())
    except ValueError as exc:
        raise ConfigError(f"--fractions {fractions!r}: give shares such as 0.1,0.25,0.5,1") from exc
    if seeds is None:
        from edgetl.train import resolve_device

        seeds = 3 if resolve_device(device).type == "cuda" else 1
        if seeds == 1:
            typer.echo("study on the CPU: 1 seed per share and arm (about an hour on 2 cores); --seeds 3 for spread")
    if not shares or any(not 0 < f <= 1 for f in shares) or seeds < 1:
        raise ConfigError("--fractions must be shares in (0, 1] and --seeds at least 1.")
    settings = StudySettings(
        fractions=shares,
        seeds=seeds,
        input_size=input_size,
        epochs=epochs,
        scratch_epochs=scratch_epochs,
        scratch_lr=scratch_lr,
        scratch_patience=scratch_patience,
        device=device,
        threads=threads,
    )
    run_dir = _existing_run(run)
    result = run_study(run_dir, settings, log=typer.echo, resume=resume)
    typer.echo("\n".join(study_markdown(result)))
    refresh_report(run_dir)
    typer.echo(f"study: {run_dir.root / 'study' / 'transfer.md'}")


def _existing_run(run: Path) -> Any:
    from edgetl.run import open_run

    return open_run(run)[0]


@app.command()
def targets() -> None:
    """List target profiles and whether their backend is installed here."""
    from edgetl.targets import get_target
    from edgetl.targets.profiles import available_profiles

    for profile in available_profiles().values():
        try:
            target = get_target(profile.backend)
            if target.is_available():
                here = "available"
            elif target.compiles_without_backend:
                here = "not here: builds write the device bundle, engines are built on the device"
            else:
                here = "backend not installed"
        except Exception as exc:
            here = str(exc)
        aliases = f" (aliases: {', '.join(profile.aliases)})" if profile.aliases else ""
        typer.echo(f"{profile.name}{aliases}: {profile.backend} {'/'.join(profile.precisions)} - {here}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
