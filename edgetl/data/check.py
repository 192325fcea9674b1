"""Check a data set before anything trains on it: every file decoded, every problem listed with path and reason.

``edgetl data check DIR`` and ``edgetl build`` run the same :func:`check_dataset`. Source files are only read.
Errors (the run stops): unreadable, truncated, empty or non-image files; files of a type edgetl does not read
(``IMAGE_EXTENSIONS``, the same list for an ImageFolder and a manifest); unsupported modes; decompression bombs;
images below ``data.min_image_size``; empty class folders; classes below ``data.min_images_per_class``; a single
class; class names that cannot be folder names; symbolic links leading out of an ImageFolder (a manifest may name
any file, relative or absolute); identical files that could land in different splits. Warnings: near-identical
images (perceptual hash), identical files within one given split, image files of other formats in an ImageFolder
(not read).
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from edgetl.config import DataConfig
from edgetl.data.dataset import DataError, Sample, list_image_folder, read_manifest
from edgetl.files import is_inside, sha256_bytes, write_json_atomic, write_text_atomic
from edgetl.paths import class_name_problem
from edgetl.preprocess import FORMATS_READ, IMAGE_EXTENSIONS, ImageDecodeError, decode_image

HASH_SIDE = 16  # dHash of 16 x 16 brightness gradients: 256 bits
REPORT_JSON = "check.json"
REPORT_CSV = "check.csv"
_LISTED = 50

Severity = Literal["error", "warning"]


@dataclass
class Finding:
    """One problem: the file (or folder) it concerns, how bad it is and why."""

    path: str
    severity: Severity
    reason: str


@dataclass
class CheckReport:
    """What :func:`check_dataset` found; ``samples`` holds every listed image (with sha256 when readable)."""

    source: Path
    root: Path
    samples: list[Sample]
    findings: list[Finding] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)
    dhashes: dict[str, bytes] = field(default_factory=dict)
    gray: dict[str, bool] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        """Findings that stop a run."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings reported but not blocking."""
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict[str, object]:
        """The report as written to check.json."""
        return {
            "source": str(self.source),
            "images": len(self.samples),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "summary": self.summary,
            "findings": [asdict(f) for f in self.findings],
        }

    def write(self, out_dir: Path) -> Path:
        """Write out_dir/check.json and out_dir/check.csv (severity, path, reason); returns the CSV path."""
        write_json_atomic(out_dir / REPORT_JSON, self.to_dict())
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["severity", "path", "reason"])
        for f in self.findings:
            writer.writerow([f.severity, f.path, f.reason])
        write_text_atomic(out_dir / REPORT_CSV, buffer.getvalue())
        return out_dir / REPORT_CSV

    def raise_for_errors(self, *, report: Path | None = None) -> None:
        """Raise one DataError listing every error (the first 50 in the message, all in the report)."""
        errors = self.errors
        if not errors:
            return
        files = {f.path for f in errors if f.path in self._sample_paths()}
        head = f"{len(files)} of {len(self.samples)} images cannot be used" if files else "the data set cannot be used"
        listing = "\n".join(f"  {f.path}: {f.reason}" for f in errors[:_LISTED])
        more = f"\n  ... and {len(errors) - _LISTED} more" if len(errors) > _LISTED else ""
        where = f" Every finding is in {report}." if report is not None else ""
        raise DataError(
            f"{head}:\n{listing}{more}\nFix or remove these files (edgetl never modifies them), then run again.{where}"
        )

    def _sample_paths(self) -> set[str]:
        return {str(s.path) for s in self.samples}


def dhash(image: Image.Image) -> bytes:
    """Difference hash: signs of horizontal brightness gradients on a 17 x 16 grey thumbnail (256 bits)."""
    small = image.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.BILINEAR)
    array = np.asarray(small, dtype=np.int16)
    return np.packbits(array[:, 1:] > array[:, :-1]).tobytes()


def near_duplicate_pairs(hashes: list[bytes], *, max_bits: int) -> list[tuple[int, int, int]]:
    """Pairs (i, j, differing bits) of hashes at most ``max_bits`` apart, i < j."""
    if len(hashes) < 2:
        return []
    bits = np.unpackbits(np.frombuffer(b"".join(hashes), np.uint8).reshape(len(hashes), -1), axis=1)
    ones = bits.astype(np.float32)
    zeros = 1.0 - ones
    width = bits.shape[1]
    pairs = []
    for start in range(0, len(hashes), 512):
        block = slice(start, start + 512)
        same = ones[block] @ ones.T + zeros[block] @ zeros.T
        distance = np.rint(width - same).astype(np.int64)
        rows, cols = np.nonzero(distance <= max_bits)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c:
                pairs.append((i, c, int(distance[r, c])))
    return pairs


def inspect_image(sample: Sample, *, min_size: int) -> tuple[str | None, dict[str, object]]:
    """Check one file: (reason it cannot be used, None) or (None, its mode, size and perceptual hash).

    Sets ``sample.sha256`` when the file is usable. Never raises for a bad file.
    """
    try:
        data = sample.path.read_bytes()
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}", {}
    if not data:
        return "empty file (0 bytes)", {}
    try:
        image = decode_image(sample.path)
    except ImageDecodeError as exc:
        return str(exc), {}
    width, height = image.size
    if min(width, height) < min_size:
        return (
            f"image is {width}x{height} pixels, smaller than data.min_image_size={min_size}; "
            "use larger crops or lower data.min_image_size"
        ), {}
    sample.sha256 = sha256_bytes(data)
    return None, {"mode": image.mode, "size": image.size, "dhash": dhash(image), "gray": is_gray(image)}


def is_gray(image: Image.Image) -> bool:
    """True for one-channel images and for colour files whose three channels are equal everywhere."""
    if image.mode == "L":
        return True
    array = np.asarray(image.convert("RGB"))
    return bool((array[:, :, 0] == array[:, :, 1]).all() and (array[:, :, 1] == array[:, :, 2]).all())


def _list_samples(config: DataConfig, findings: list[Finding]) -> tuple[Path, Path, list[Sample]]:
    if config.manifest is not None:
        source = Path(config.manifest)
        if source.is_dir():
            raise DataError(
                f"{source} is a folder, not a CSV manifest; give it as an ImageFolder root (data.root, or --data "
                "without .csv) or point to the manifest file inside it."
            )
        samples = read_manifest(source)
        for s in samples:
            if s.path.suffix.lower() not in IMAGE_EXTENSIONS:
                findings.append(Finding(str(s.path), "error", _unsupported(s.path)))
        return source, source.parent, samples
    assert config.root is not None
    source = Path(config.root)
    if source.exists() and not source.is_dir():
        raise DataError(
            f"{source} is a file, not a folder: give an ImageFolder root (a folder with one subfolder of images per "
            "class) or a CSV manifest whose name ends in .csv."
        )
    samples, empty = list_image_folder(source)
    for folder in empty:
        findings.append(Finding(str(folder), "error", "class folder has no images; add images or remove the folder"))
    findings.extend(_skipped_images(source))
    return source, source, samples


def _unsupported(path: Path) -> str:
    return f"{path.suffix or 'no extension'}: not an image type edgetl reads ({FORMATS_READ}); convert the file"


def _skipped_images(root: Path) -> list[Finding]:
    """Warnings for image files of other formats in class folders: an ImageFolder lists only the formats read."""
    Image.init()
    other = set(Image.registered_extensions()) - IMAGE_EXTENSIONS
    return [
        Finding(str(p), "warning", f"not read: {_unsupported(p)}")
        for class_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        for p in sorted(class_dir.rglob("*"))
        if p.suffix.lower() in other and p.is_file()
    ]


def check_dataset(config: DataConfig, *, threads: int = 4) -> CheckReport:
    """Read and check the data set described by ``config`` (nothing is modified)."""
    findings: list[Finding] = []
    source, root, samples = _list_samples(config, findings)
    refused = {f.path for f in findings if f.severity == "error"}
    inside = []
    for s in samples:
        if str(s.path) in refused:
            continue
        # A manifest names each file explicitly (relative to it or absolute): those are the user's choice. Only a
        # symbolic link inside an ImageFolder may not lead out of it.
        if config.manifest is not None or is_inside(s.path, root):
            inside.append(s)
            continue
        how = "a symbolic link" if s.path.is_symlink() else "its path"
        findings.append(
            Finding(
                str(s.path),
                "error",
                f"outside the data root {root} ({how} leads to {s.path.resolve()}); "
                "copy the file inside the data folder",
            )
        )
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda s: inspect_image(s, min_size=config.min_image_size), inside))
    good: list[tuple[Sample, dict[str, object]]] = []
    for s, (reason, info) in zip(inside, results, strict=True):
        if reason:
            findings.append(Finding(str(s.path), "error", reason))
        else:
            good.append((s, info))
    report = CheckReport(source=source, root=root, samples=samples, findings=findings)
    _check_classes(report, config)
    _check_duplicates(report, good, config)
    modes = Counter(str(info["mode"]) for _, info in good)
    sizes = Counter("x".join(map(str, info["size"])) for _, info in good)  # type: ignore[call-overload]
    report.gray = {str(s.path): bool(info["gray"]) for s, info in good}
    dims = np.array([info["size"] for _, info in good], dtype=np.float64).reshape(-1, 2)
    report.summary = {
        "images_ok": len(good),
        "classes": dict(sorted(Counter(s.label for s in samples).items())),
        "modes": dict(modes),
        "sizes": dict(sizes.most_common(5)),
        "distinct_sizes": len(sizes),
        "gray_images": sum(report.gray.values()),
        "median_short_side": float(np.median(dims.min(axis=1))) if len(dims) else None,
        "median_aspect": float(np.median(dims.max(axis=1) / np.maximum(dims.min(axis=1), 1))) if len(dims) else None,
    }
    return report


def _check_classes(report: CheckReport, config: DataConfig) -> None:
    counts = Counter(s.label for s in report.samples)
    folder_of = {s.label: str(s.path.parent) for s in report.samples} if config.root is not None else {}
    for label in sorted(counts):
        problem = class_name_problem(label)
        if problem is not None:
            report.findings.append(
                Finding(
                    folder_of.get(label, str(report.source)),
                    "error",
                    f"class name {label!r} cannot be used: {problem}; class names become folder names and "
                    "label-file lines, rename the class",
                )
            )
    for label, count in sorted(counts.items()):
        if count < config.min_images_per_class:
            report.findings.append(
                Finding(
                    folder_of.get(label, str(report.source)),
                    "error",
                    f"class {label!r} has {count} images, below data.min_images_per_class="
                    f"{config.min_images_per_class}; add images or merge the class",
                )
            )
    if len(counts) == 1:
        report.findings.append(
            Finding(
                str(report.source),
                "error",
                f"a single class ({next(iter(counts))}); a classifier needs at least two, add a folder per class",
            )
        )


def _check_duplicates(report: CheckReport, good: list[tuple[Sample, dict[str, object]]], config: DataConfig) -> None:
    by_hash: dict[str, list[Sample]] = defaultdict(list)
    for s, _ in good:
        by_hash[s.sha256].append(s)
    for copies in by_hash.values():
        if len(copies) < 2:
            continue
        first = copies[0]
        labels = sorted({s.label for s in copies})
        splits = {s.split for s in copies}
        for s in copies[1:]:
            if len(labels) > 1:
                reason = f"identical to {first.path} but labelled {' and '.join(labels)}; keep one copy, one label"
                report.findings.append(Finding(str(s.path), "error", reason))
            elif len(splits) == 1 and "" not in splits:
                reason = f"identical to {first.path} (same split {first.split}); it counts twice"
                report.findings.append(Finding(str(s.path), "warning", reason))
            else:
                reason = (
                    f"identical to {first.path} (sha256 {s.sha256[:12]}...); a copy in another split would leak "
                    "into the test score, remove one copy"
                )
                report.findings.append(Finding(str(s.path), "error", reason))
    unique = [(s, info) for s, info in good if by_hash[s.sha256][0] is s]
    report.dhashes = {str(s.path): info["dhash"] for s, info in unique}  # type: ignore[misc]
    hashes = [report.dhashes[str(s.path)] for s, _ in unique]
    for i, j, bits in near_duplicate_pairs(hashes, max_bits=config.near_duplicate_bits):
        a, b = unique[i][0], unique[j][0]
        report.findings.append(
            Finding(
                str(b.path),
                "warning",
                f"near-identical to {a.path} ({bits} of {HASH_SIDE * HASH_SIDE} hash bits differ); if they show the "
                "same part, give both the same group in a manifest so they stay in one split",
            )
        )


def cross_split_near_duplicates(report: CheckReport, samples: list[Sample], *, max_bits: int) -> int:
    """Number of near-identical pairs whose images landed in different splits."""
    known = [s for s in samples if str(s.path) in report.dhashes]
    pairs = near_duplicate_pairs([report.dhashes[str(s.path)] for s in known], max_bits=max_bits)
    return sum(1 for i, j, _ in pairs if known[i].split != known[j].split)


def check_report_or_raise(config: DataConfig, out_dir: Path) -> CheckReport:
    """Run the check, write out_dir/check.json + check.csv, raise DataError when anything blocks."""
    report = check_dataset(config)
    csv_path = report.write(out_dir)
    report.raise_for_errors(report=csv_path)
    return report
