"""``edgetl predict``: a bundle over images, folders, lists or a watched folder; rows out, a summary at the end.

Rows go to ``out`` (.csv or .jsonl, flushed row by row) or, without it, to standard output as CSV. Progress and
the summary go to standard error, so ``edgetl predict BUNDLE images/ > results.csv`` works as well.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetl.errors import EdgetlError
from edgetl.runtime.model import LineModel, Prediction, load
from edgetl.runtime.results import ResultWriter, Summary
from edgetl.runtime.sources import expand_sources


class PredictError(EdgetlError, ValueError):
    """A predict command that cannot run as given."""


@dataclass(frozen=True)
class WatchSettings:
    """How ``--watch`` decides a file is complete, and when it stops."""

    folder: Path
    settle: float = 0.5
    poll: float = 0.2
    retry_for: float = 10.0
    count: int | None = None
    idle_exit: float | None = None


@dataclass
class PredictRun:
    """What a predict run did: its model facts and the summary."""

    bundle: Path
    precision: str
    runtime: str
    threshold: float | None
    good_class: str | None
    summary: Summary
    watched: bool = False
    interrupted: bool = False
    drift: list[dict[str, Any]] = field(default_factory=list)


def _line(prediction: Prediction) -> str:
    """One console line (rich markup; the file name and error are escaped)."""
    from rich.markup import escape

    source = escape(prediction.source)
    if prediction.error is not None:
        return f"{source}  [red]error[/red]: {escape(prediction.error)}"
    verdict = {"reject": "[bold red]reject[/bold red]", "ok": "[green]ok[/green]"}.get(str(prediction.verdict), "-")
    score = "-" if prediction.score is None else f"{prediction.score:.4f}"
    return f"{source}  {escape(str(prediction.label))}  score {score}  {verdict}  {prediction.ms:.1f} ms"


def _watched(model: LineModel, settings: WatchSettings, *, log: Any) -> Iterator[Prediction]:
    from edgetl.runtime.watch import FolderWatch

    watch = FolderWatch(settings.folder, settle=settings.settle, poll=settings.poll, retry_for=settings.retry_for)
    log(f"watching {settings.folder} for new images (Ctrl-C to stop)")
    handled = 0
    for path in watch.files(idle_exit=settings.idle_exit):
        prediction = model.predict(path)[0]
        if prediction.error is not None and watch.retry_later(path):
            continue  # most likely still being written: try again once it settles anew
        watch.done(path)
        handled += 1
        yield prediction
        if settings.count is not None and handled >= settings.count:
            return


def run_predict(
    bundle: Path,
    paths: Sequence[Path],
    *,
    precision: str | None = None,
    threshold: float | None = None,
    out: Path | None = None,
    watch: WatchSettings | None = None,
    threads: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    drift_window: int | None = None,
    drift_every: int = 1,
) -> PredictRun:
    """Predict every image of ``paths`` (files, folders, lists), then those that arrive in ``watch.folder``.

    The bundle is verified before anything loads. An unreadable image is a row with its error. Ctrl-C ends a
    watch cleanly (the summary covers what was done); elsewhere it stops the run as usual.

    ``threads`` None: files are predicted by ``workers`` (default: the CPU count, at most 8) single-threaded
    inference streams, the highest throughput; a watched folder, one part at a time, by every core, the lowest
    latency.

    ``drift_window``: also embed every ``drift_every``-th image and print the drift verdict of each window of that
    many embedded images against the bundle's reference (and of the last, partial one when it has 10 or more).
    """
    from rich.console import Console
    from rich.markup import escape

    from edgetl.runtime.monitor import describe

    if not paths and watch is None:
        raise PredictError("give images, folders or lists of images to predict, or --watch DIR.")
    files = list(expand_sources(paths))
    workers = workers or min(8, os.cpu_count() or 2)
    console = Console(stderr=True)
    options: dict[str, Any] = {"precision": precision, "device": device, "threshold": threshold}
    model = load(bundle, threads=threads or (1 if files else None), **options)
    console.print(
        f"[bold]{escape(str(bundle))}[/bold] {model.precision} on {model.runtime}"
        + (
            f", reject when 1 - P({model.rule.good_class}) >= {model.threshold:.6g}"
            if model.rule and model.threshold is not None
            else ""
        )
    )
    monitor = None
    if drift_window is not None:
        try:
            monitor = model.watch_drift(window=drift_window, every=drift_every)
        except BaseException:
            model.close()
            raise
    drift: list[dict[str, Any]] = []

    def check_drift(final: bool = False) -> None:
        if monitor is None:
            return
        score = monitor.take_rest() if final else monitor.take_window()
        if score is not None:
            drift.append(score.as_dict())
            colour = "green" if score.verdict == "no measurable shift" else "bold red"
            console.print(f"[{colour}]{escape(describe(score))}[/{colour}]", highlight=False)

    summary = Summary()
    sink = ResultWriter(out, model.classes)
    interrupted = False
    started = time.perf_counter()
    try:
        with model:
            if files:
                for prediction in _with_progress(
                    model.predict_iter(files, workers=workers), len(files), console, show=progress and out is not None
                ):
                    summary.add(prediction)
                    sink.write(prediction)
                    check_drift()
            if watch is not None:
                watcher = model if threads or not files else load(bundle, threads=None, **options)
                watcher.drift = monitor
                try:
                    for prediction in _watched(watcher, watch, log=console.print):
                        summary.add(prediction)
                        sink.write(prediction)
                        if out is not None:
                            console.print(_line(prediction), highlight=False)
                        check_drift()
                except KeyboardInterrupt:
                    interrupted = True
                    console.print("watch stopped")
                finally:
                    if watcher is not model:
                        watcher.drift = None  # the monitor is the first model's, closed with it
                        watcher.close()
            check_drift(final=True)
    finally:
        sink.close()
        summary.seconds = time.perf_counter() - started
    return PredictRun(
        bundle=Path(bundle),
        precision=model.precision,
        runtime=model.runtime,
        threshold=model.threshold,
        good_class=None if model.rule is None else model.rule.good_class,
        summary=summary,
        watched=watch is not None,
        interrupted=interrupted,
        drift=drift,
    )


def _with_progress(predictions: Iterator[Prediction], total: int, console: Any, *, show: bool) -> Iterator[Prediction]:
    if not show:
        yield from predictions
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("predict", total=total)
        for prediction in predictions:
            yield prediction
            bar.advance(task)


def print_summary(result: PredictRun) -> None:
    """Counts per class and verdict, errors and timing, on standard error."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=True)
    s = result.summary.as_dict()
    console.print(f"[bold]summary[/bold]: {escape(str(result.bundle))}, {result.precision} on {result.runtime}")
    table = Table()
    table.add_column("")
    table.add_column("images", justify="right")
    for name, count in sorted(s["per_class"].items()):
        table.add_row(f"class {name}", str(count))
    for verdict in ("ok", "reject", "error"):
        if verdict in s["per_verdict"]:
            table.add_row(verdict, str(s["per_verdict"][verdict]))
    table.add_row("total", str(s["images"]))
    console.print(table)
    if result.threshold is not None:
        console.print(f"reject rule: 1 - P({result.good_class}) >= {result.threshold:.6g}")
    if s["mean_ms"] is not None:
        rate = f", {s['images_per_s']:.1f} images/s" if s["images_per_s"] and not result.watched else ""
        console.print(f"mean {s['mean_ms']:.2f} ms per image (decode + preprocess + infer){rate}")
    if result.drift:
        verdicts = ", ".join(d["verdict"] for d in result.drift)
        console.print(f"drift: {len(result.drift)} window(s) scored against the bundle's reference: {verdicts}")
