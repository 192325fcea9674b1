"""What a run folder weighs, which of its files can be rebuilt, and ``edgetl clean`` that removes those.

Only caches and intermediate data that a stage writes again from the run's own inputs are listed. Models,
reports, configs and the records that verify them (split.csv, meta.json, parity.json, artifact.json, manifests,
threshold.json, the search's out-of-fold logits) are never removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.files import disk_bytes
from edgetl.lock import LOCK_FILE, writes_run
from edgetl.run import RunDir

# (path inside the run, what it is and which command writes it again)
REBUILDABLE: tuple[tuple[str, str], ...] = (
    (
        "bench/reference_logits.npz",
        "cache of the FP32 PyTorch logits of the val and test images; 'edgetl bench RUN' computes it again",
    ),
    (
        "calibration/calib.npy",
        "calibration pixels; 'edgetl calibrate RUN' writes the same bytes again from the run's images "
        "(calibration/manifest.json keeps their sha256)",
    ),
    (
        "calibration/histograms.npz",
        "activation histograms of the calibration set; 'edgetl compile' counts them again when it calibrates with "
        "entropy or percentile ranges",
    ),
    (
        "drift/embedder.onnx",
        "the drift embedder (the FP32 backbone); 'edgetl bundle RUN' exports it again with the drift reference",
    ),
)
REPORT_FILES = ("report.json", "report.md", "report.html")


def _size(path: Path, seen: set[tuple[int, int]]) -> int:
    if path.is_symlink() or not path.exists():
        return 0
    return disk_bytes([path] if path.is_file() else path.rglob("*"), seen=seen)


def rebuildable_files(run: RunDir) -> list[dict[str, Any]]:
    """The rebuildable files present in the run: path (relative), bytes and how each is rebuilt."""
    found = []
    for relative, why in REBUILDABLE:
        path = run.root / relative
        if path.is_file() and not path.is_symlink():
            found.append({"path": relative, "bytes": path.stat().st_size, "rebuilt_by": why})
    return found


def run_size(run: RunDir) -> dict[str, Any]:
    """The run folder's size on disk (report files left out: they are being rewritten) and its rebuildable part.

    A file is counted once however many hard links name it (bundles share their models with the run's
    artifacts): each part counts the files it adds to the parts before it.
    """
    total = disk_bytes(
        p for p in run.root.rglob("*") if not (p.parent == run.root and p.name in (*REPORT_FILES, LOCK_FILE))
    )
    seen: set[tuple[int, int]] = set()
    parts = {
        name: _size(run.root / name, seen)
        for name in ("data", "train", "export", "calibration", "targets", "drift", "bundle")
    }
    rebuildable = rebuildable_files(run)
    return {
        "bytes": total,
        "parts": {name: size for name, size in parts.items() if size},
        "rebuildable_bytes": sum(f["bytes"] for f in rebuildable),
        "rebuildable": rebuildable,
        "clean": f"edgetl clean {run.root}",
    }


@writes_run("clean")
def clean_run(run: RunDir, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove the run's rebuildable files (none with ``dry_run``); returns what was (or would be) removed."""
    found = rebuildable_files(run)
    if not dry_run:
        for entry in found:
            (run.root / entry["path"]).unlink()
    return found
