"""Bench every artifact of a run: one worker process per artifact for speed, accuracy computed here."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.config import BenchConfig
from edgetl.errors import EdgetlError
from edgetl.files import atomic_path, is_inside, read_json, sha256_file, write_json_atomic

THRESHOLD_FILE = "threshold.json"
# A worker that meets a user-facing failure writes its message here instead of a traceback.
ERROR_FILE = "error.json"
# End-to-end timing cycles through this many test images (decoded from disk on every call).
E2E_FILES = 64


class BenchError(EdgetlError, RuntimeError):
    """A measurement that could not be made; the message names the artifact and what to do."""


def reference_logits(
    checkpoint: Path, inputs: dict[str, np.ndarray], cache: Path, *, threads: int
) -> dict[str, np.ndarray]:
    """FP32 PyTorch logits of each split, cached in ``cache`` (.npz) under a key of checkpoint and input bytes.

    Eager PyTorch is the slowest part of a bench on a small CPU; a re-bench of the same model and data reuses it.
    """
    digest = hashlib.sha256(sha256_file(checkpoint).encode())
    for split in sorted(inputs):
        digest.update(split.encode())
        digest.update(np.ascontiguousarray(inputs[split]).tobytes())
    key = digest.hexdigest()
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key and set(stored.files) >= set(inputs):
                return {split: stored[split] for split in inputs}
    import torch

    from edgetl.models import load_checkpoint

    torch.set_num_threads(threads)
    model, _ = load_checkpoint(checkpoint)
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for split, x in inputs.items():
            out[split] = np.concatenate([model(torch.from_numpy(x[i : i + 16])).numpy() for i in range(0, len(x), 16)])
    with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, key=np.array(key), **out)
    return out


def worker_command(request_file: Path, *, untrusted: Path) -> list[str]:
    """The command line of one bench worker: ``python -I`` with an explicit ``sys.path``.

    ``-I`` keeps the working folder, PYTHONPATH and user site out of ``sys.path``; the parent's own import
    path is handed over instead (edgetl's package folder first), less every entry that is relative or lies inside
    ``untrusted`` (the run folder), so nothing in a run folder can change which code runs.
    """
    import edgetl

    package_parent = str(Path(edgetl.__file__).resolve().parent.parent)
    entries = [package_parent]
    for entry in sys.path:
        if entry and Path(entry).is_absolute() and not is_inside(Path(entry), untrusted) and entry not in entries:
            entries.append(entry)
    code = (
        "import sys; sys.path[:0] = __import__('json').loads(sys.argv[1]); "
        "from edgetl.bench.worker import main; sys.exit(main(sys.argv[2:]))"
    )
    return [sys.executable, "-I", "-c", code, json.dumps(entries), str(request_file)]


def run_worker(request: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Measure one artifact in a fresh, isolated Python process (``edgetl.bench.worker``); return its result.

    ``workdir`` is the run folder: it is only read as data. The worker runs in its own scratch folder
    (``request['out']``), never with the run folder as working directory or on its import path.
    """
    out = Path(request["out"])
    out.mkdir(parents=True, exist_ok=True)
    request_file = out / "request.json"
    # Scratch space of this process, removed afterwards: no atomic write or fsync needed.
    request_file.write_text(json.dumps(request), encoding="utf-8")
    proc = subprocess.run(
        worker_command(request_file, untrusted=Path(workdir)),
        capture_output=True,
        text=True,
        check=False,
        cwd=out,
        env=os.environ.copy(),
    )
    error_file = out / ERROR_FILE
    if error_file.is_file():
        error = json.loads(error_file.read_text(encoding="utf-8"))
        raise BenchError(f"measuring {request['artifact']} failed: {error['message']}", hint=error.get("hint"))
    if proc.returncode != 0 or not (out / "result.json").is_file():
        raise _worker_crash(request["artifact"], proc.returncode, proc.stderr)
    return dict(read_json(out / "result.json"))


def _worker_crash(artifact: str, returncode: int, stderr: str) -> BenchError:
    """The error for a worker that ended without a result or an error of its own: the process itself broke."""
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-returncode}"
        cause = f"the bench worker was stopped by {name}" + (
            " (on Linux most often the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        )
        hint = (
            "Close what else uses memory and rerun 'edgetl bench RUN'; if only this artifact stops it, "
            "recompile it with 'edgetl compile RUN --target ...' or drop that --target."
        )
    else:
        cause = f"the bench worker exited with status {returncode} without a result"
        hint = (
            "The worker's last lines above say where it stopped. A backend that cannot load the artifact: "
            "recompile it with 'edgetl compile RUN --target ...' or drop that --target; an import error: "
            "reinstall edgetl ('make install' in a checkout)."
        )
    return BenchError(f"measuring {artifact} failed: {cause}." + (f"\n{tail}" if tail else ""), hint=hint)


def accuracy_section(
    logits: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    classes: list[str],
    slices: list[str],
    settings: BenchConfig,
    good_index: int | None,
    *,
    groups: list[str] | None = None,
    tune_on: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> dict[str, Any]:
    """Test metrics with 95 % intervals, the reject threshold, per-slice metrics and the threshold trade-off curve
    (defect recall against false rejects on the test split) of one model.

    The threshold is tuned on this model's validation logits, or on ``tune_on`` (logits, labels, description:
    the cross-validated out-of-fold logits when the validation split is too small). ``groups`` are the test
    images' parts, for the intervals.
    """
    from edgetl.bench.accuracy import (
        binary_metrics,
        classification_metrics,
        defect_scores,
        reject_threshold,
        slice_metrics,
        tradeoff_curve,
    )

    test = logits["test"]
    metrics = classification_metrics(labels["test"], test.argmax(1), classes, groups=groups)
    threshold = None
    tradeoff = None
    if good_index is not None:
        source_logits, source_labels, source = (
            tune_on if tune_on is not None else (logits["val"], labels["val"], "validation split")
        )
        is_defect = source_labels != good_index
        if is_defect.any() and not is_defect.all():
            threshold = reject_threshold(
                defect_scores(source_logits, good_index), is_defect, max_false_reject=settings.max_false_reject
            )
            threshold["tuned_on"] = source
            metrics["binary"] = binary_metrics(
                defect_scores(test, good_index),
                labels["test"] != good_index,
                threshold=threshold["threshold"],
                groups=groups,
            )
            tradeoff = tradeoff_curve(defect_scores(test, good_index), labels["test"] != good_index)
    per_slice = slice_metrics(
        labels["test"],
        test,
        slices,
        classes,
        good_index=good_index,
        threshold=None if threshold is None else threshold["threshold"],
        max_gap=settings.slice_gap,
        min_images=settings.min_slice_images,
        groups=groups,
    )
    return {"metrics": metrics, "threshold": threshold, "slices": per_slice, "tradeoff": tradeoff}


def write_threshold(folder: Path, threshold: dict[str, Any], *, classes: list[str], good_index: int) -> None:
    """Store an artifact's reject threshold beside it (targets/<profile>/<precision>/threshold.json)."""
    write_json_atomic(
        folder / THRESHOLD_FILE,
        {
            **threshold,
            "good_class": classes[good_index],
            "score": f"1 - softmax(logits)[{good_index}]  (probability of not '{classes[good_index]}')",
            "rule": "reject the part when score >= threshold",
            "tuned_on": threshold.get("tuned_on", "validation split"),
        },
    )


def measure_artifacts(
    folders: list[Path],
    pixels: dict[str, np.ndarray],
    images: list[Path],
    settings: BenchConfig,
    *,
    threads: int,
    workdir: Path,
    log: Callable[[str], None] | None = None,
) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Run one worker per artifact folder, one after the other; returns (result, logits per split) each.

    A reference workload is timed before and after each worker (``result['host_check']``, see
    :mod:`edgetl.bench.host`): a busy host makes the latency figures unreliable and the report says so.
    """
    from edgetl.bench.host import host_check, reference_workload

    results = []
    with tempfile.TemporaryDirectory(prefix="edgetl-bench-") as tmp:
        files = {}
        for split, x in pixels.items():
            files[split] = str(Path(tmp) / f"pixels_{split}.npy")
            np.save(files[split], x)
        for i, folder in enumerate(folders):
            request = {
                "artifact": str(Path(folder).resolve()),
                "out": str(Path(tmp) / f"artifact_{i}"),
                "threads": threads,
                "inputs": files,
                "images": [str(p) for p in images[:E2E_FILES]],
                "warmup": settings.warmup,
                "warmup_seconds": settings.warmup_seconds,
                "iterations": settings.iterations,
                "duration_s": settings.duration_s,
                "deadline_ms": settings.deadline_ms,
                "e2e_iterations": settings.e2e_iterations,
                "batch_sizes": settings.batch_sizes,
                "throughput_seconds": settings.throughput_seconds,
                "blocks": settings.blocks,
            }
            started = time.perf_counter()
            before = reference_workload(threads=threads)
            result = run_worker(request, workdir)
            result["host_check"] = host_check(
                before, reference_workload(threads=threads), busy_wait_share=settings.busy_wait_share
            )
            if log is not None:
                busy = f"; {result['host_check']['note']}" if result["host_check"]["busy"] else ""
                log(f"measured {folder} in {time.perf_counter() - started:.1f} s{busy}")
            logits = {split: np.load(path, allow_pickle=False) for split, path in result.pop("logits").items()}
            results.append((result, logits))
    return results
