"""Was the host busy while an artifact was measured? A fixed reference workload, timed before and after.

The workload hashes a fixed buffer (sha256 releases the GIL on large inputs) on as many threads as the bench uses.
Each thread's CPU time against its wall time says how long it waited for a CPU: about nothing on a quiet host,
a third or more when other processes compete for the cores the bench runs on. That share does not depend on how
fast the CPU is, so no baseline from another run is needed.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any

# Work per thread: this many sha256 passes over a 1 MiB buffer (tens of milliseconds on a current core).
REFERENCE_PASSES = 48
_BUFFER = bytes(range(256)) * 4096


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _one_run(threads: int, passes: int) -> tuple[float, float, float]:
    """(wall ms of the slowest thread, mean CPU ms per thread, mean waiting share) of one run of the workload."""
    times: list[tuple[float, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        for _ in range(passes):
            hashlib.sha256(_BUFFER).digest()
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        with lock:
            times.append((wall, cpu))

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    waiting = [max(0.0, 1.0 - cpu / wall) if wall > 0 else 0.0 for wall, cpu in times]
    return 1e3 * max(w for w, _ in times), 1e3 * sum(c for _, c in times) / len(times), sum(waiting) / len(waiting)


def reference_workload(*, threads: int, passes: int = REFERENCE_PASSES, repeats: int = 3) -> dict[str, Any]:
    """Run the reference workload ``repeats`` times on ``threads`` threads (at most one per CPU); the median run.

    Returns ``wall_ms`` (the slowest thread), ``cpu_ms`` (mean per thread), ``waiting_share`` (mean over the
    threads of 1 - CPU time / wall time), ``threads``, ``cpus`` (the CPUs this process may run on) and
    ``load_average`` (1 minute, for the record: it also counts the bench itself).
    """
    threads = max(1, min(threads, _cpus()))
    runs = sorted((_one_run(threads, passes) for _ in range(repeats)), key=lambda run: run[2])
    wall, cpu, waiting = runs[len(runs) // 2]
    return {
        "wall_ms": round(wall, 2),
        "cpu_ms": round(cpu, 2),
        "waiting_share": round(waiting, 3),
        "threads": threads,
        "cpus": _cpus(),
        "load_average": _load_average(),
    }


def host_check(before: dict[str, Any], after: dict[str, Any], *, busy_wait_share: float) -> dict[str, Any]:
    """The verdict on one measurement from the reference workload timed before and after it.

    ``busy`` when either run waited for a CPU ``busy_wait_share`` of its time or more; ``note`` says so in words.
    """
    worst = max(before["waiting_share"], after["waiting_share"])
    busy = worst >= busy_wait_share
    note = (
        f"host busy: the reference workload waited {100 * worst:.0f} % of its time for a CPU "
        f"(limit {100 * busy_wait_share:.0f} %); latency figures are unreliable"
        if busy
        else f"host quiet: the reference workload waited at most {100 * worst:.0f} % of its time for a CPU"
    )
    return {"before": before, "after": after, "busy": busy, "busy_wait_share": busy_wait_share, "note": note}


def is_busy(artifact: dict[str, Any]) -> bool:
    """True when a report row's latency was measured on a busy host (rows from before the check: False)."""
    check = artifact.get("host_check")
    return bool(isinstance(check, dict) and check.get("busy"))
