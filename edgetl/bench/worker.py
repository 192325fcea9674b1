"""Measure one artifact in a process of its own: ``python -m edgetl.bench.worker REQUEST.json``.

The parent writes the request (artifact folder, preprocessed inputs as .npy, image files, settings) and reads
``result.json`` and the logits (.npy) from the request's ``out`` folder. One process per artifact keeps one
backend's threads, caches and memory from disturbing the next one's figures.
"""

from __future__ import annotations

import importlib
import itertools
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from edgetl.config import StrictModel
from edgetl.errors import EdgetlError, InvalidFileError


class WorkerRequest(StrictModel):
    """What the parent asks one worker to measure."""

    artifact: Path
    out: Path
    threads: int | None = None
    inputs: dict[str, Path] = Field(
        default_factory=dict, description="split name -> resized uint8 pixels (N, H, W, C; .npy)."
    )
    images: list[Path] = Field(default_factory=list, description="Image files for the end-to-end view.")
    warmup: int = 20
    warmup_seconds: float | None = None
    iterations: int = 200
    duration_s: float | None = None
    deadline_ms: float | None = None
    e2e_iterations: int = 50
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 4, 8, 16])
    throughput_seconds: float = 1.0
    blocks: int = 5


def _status_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the peak below is the model's phase alone.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    # ru_maxrss survives fork + exec on Linux (it would report the parent's peak), hence VmHWM first.
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def measure(request: WorkerRequest) -> dict[str, Any]:
    """Cold start, compute and end-to-end latency, throughput and memory, then logits of every input split."""
    from edgetl.bench.latency import cold_start, measure_latency, summarize, throughput, time_calls
    from edgetl.preprocess import PreprocessSpec, model_input, preprocess_file
    from edgetl.targets import Artifact, get_target

    artifact = Artifact.read(request.artifact)
    target = get_target(artifact.backend)
    target.require()
    importlib.import_module(target.package)
    spec = PreprocessSpec.model_validate(artifact.preprocess)
    first = preprocess_file(request.images[0], spec) if request.images else None
    if first is None:
        raise ValueError("the bench request names no image files; the worker needs at least one.")
    rss_before = _status_mb("VmRSS") or _peak_rss_mb()
    startup_peak = _peak_rss_mb()
    reset = _reset_peak()
    try:
        runner, cold = cold_start(lambda: target.load(artifact, threads=request.threads), first)
    except EdgetlError as exc:
        if exc.hint is None:
            exc.hint = f"compile it again with 'edgetl compile RUN --target {artifact.profile}'"
        raise
    except Exception as exc:
        # The files matched artifact.json, so the record itself was rewritten or the backend cannot read them.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InvalidFileError(
            f"{artifact.model_path} cannot be loaded by {artifact.backend} ({type(exc).__name__}: {reason}); "
            "it is damaged or was not written by this edgetl",
            hint=f"compile it again with 'edgetl compile RUN --target {artifact.profile}'",
        ) from exc
    with runner:
        latency = measure_latency(
            runner.infer,
            first,
            warmup=request.warmup,
            warmup_seconds=request.warmup_seconds,
            iterations=request.iterations,
            duration_s=request.duration_s,
            deadline_ms=request.deadline_ms,
            blocks=request.blocks,
        )
        files = itertools.cycle(request.images)

        def end_to_end() -> int:
            return int(_softmax(runner.infer(preprocess_file(next(files), spec))).argmax(1)[0])

        e2e_ms, _ = time_calls(end_to_end, warmup=min(5, request.warmup), iterations=request.e2e_iterations)
        # The line's peak: loading and batch-1 inference. Batches and OpenVINO's streams below take more.
        line_peak = _peak_rss_mb() if reset else max(_peak_rss_mb(), startup_peak)
        rates = throughput(runner.infer, first, batch_sizes=request.batch_sizes, seconds=request.throughput_seconds)
        # OpenVINO's THROUGHPUT hint (streams, several requests in flight) is how it serves batches at full rate.
        hinted = getattr(runner, "throughput_hint", None)
        streams = (
            hinted(first, batch_sizes=request.batch_sizes, seconds=request.throughput_seconds)
            if callable(hinted)
            else None
        )
        peak = _peak_rss_mb() if reset else max(_peak_rss_mb(), startup_peak)
        logits_files: dict[str, str] = {}
        for split, path in request.inputs.items():
            x = np.load(path, mmap_mode="r", allow_pickle=False)  # uint8 pixels: each model's input is made of them
            logits = np.concatenate([runner.infer(model_input(np.asarray(x[i : i + 1]), spec)) for i in range(len(x))])
            out = request.out / f"logits_{split}.npy"
            np.save(out, logits.astype(np.float32))
            logits_files[split] = str(out)
    return {
        "cold_start_ms": cold,
        "latency_ms": latency,
        "end_to_end_ms": {
            **summarize(e2e_ms, deadline_ms=request.deadline_ms, blocks=request.blocks),
            "images": len(request.images),
            "steps": "read + decode + preprocess + infer + softmax/argmax, batch 1",
        },
        "throughput": {
            "batch": rates,
            "sequential_batch1_images_per_s": 1e3 / latency["mean"],
            **({"throughput_hint": streams} if streams else {}),
        },
        "memory_mb": {
            "before_load": rss_before,
            "peak": max(line_peak, rss_before),
            "model": max(0.0, line_peak - rss_before),
            "peak_with_throughput": max(peak, rss_before),
        },
        "threads": request.threads,
        "logits": logits_files,
    }


def main(argv: list[str] | None = None) -> int:
    """Read the request file, measure, write ``out/result.json`` (or ``out/error.json`` for a user's failure)."""
    from edgetl.files import read_json, write_json_atomic

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edgetl.bench.worker REQUEST.json", file=sys.stderr)
        return 2
    request = WorkerRequest.model_validate(read_json(Path(args[0])))
    try:
        result = measure(request)
    except EdgetlError as exc:
        write_json_atomic(request.out / "error.json", {"message": str(exc), "hint": exc.hint})
        return 2
    write_json_atomic(request.out / "result.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
