"""Read an ImageFolder or CSV manifest, decode every file, split, hash and describe the data set."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.config import DataConfig
from edgetl.errors import EdgetlError
from edgetl.files import sha256_bytes, write_json_atomic, write_text_atomic
from edgetl.preprocess import IMAGE_EXTENSIONS  # one list for ImageFolders and manifests

SPLITS = ("train", "val", "test")


class DataError(EdgetlError, ValueError):
    """A data set that cannot be used as it is; the message names the files and the fix."""


@dataclass
class Sample:
    """One labelled image."""

    path: Path
    label: str
    split: str = ""
    group: str = ""
    slice: str = ""
    sha256: str = ""


@dataclass
class Dataset:
    """Samples with their split, the class list and what was learnt while checking them."""

    samples: list[Sample]
    classes: list[str]
    root: Path
    warnings: list[str] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        """Samples of one split."""
        return [s for s in self.samples if s.split == name]

    def label_index(self, sample: Sample) -> int:
        """Class index of a sample."""
        return self.classes.index(sample.label)


def list_image_folder(root: Path) -> tuple[list[Sample], list[Path]]:
    """root/<class>/<files> (nested folders below a class included): (samples, class folders with no image)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass --data with an ImageFolder root (root/<class>/*).")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class folders; arrange images as {root}/<class>/<image>.png")
    samples: list[Sample] = []
    empty = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            empty.append(class_dir)
        samples.extend(Sample(path=f, label=class_dir.name) for f in files)
    return samples, empty


def read_image_folder(root: Path) -> list[Sample]:
    """root/<class>/<files>; nested folders below a class are included; an empty class folder is an error."""
    samples, empty = list_image_folder(root)
    if empty:
        names = ", ".join(str(p) for p in empty)
        raise DataError(f"class folders with no images: {names}; add images or remove the folders.")
    return samples


def read_manifest(manifest: Path) -> list[Sample]:
    """CSV with columns path,label[,split][,group][,slice]; relative paths are relative to the CSV."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"manifest {manifest} does not exist; pass the path of a CSV with columns path,label.")
    try:
        return _parse_manifest(manifest, manifest.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{manifest} is not UTF-8 text ({exc}); save it as UTF-8 CSV.") from exc
    except csv.Error as exc:
        raise DataError(f"{manifest} is not a readable CSV file ({exc}); fix the line it names.") from exc


def _parse_manifest(manifest: Path, text: str) -> list[Sample]:
    base = manifest.parent
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or [])
    if not {"path", "label"} <= columns:
        raise DataError(f"{manifest} must have a header with at least 'path' and 'label' (found {sorted(columns)}).")
    unknown = columns - {"path", "label", "split", "group", "slice"}
    if unknown:
        raise DataError(f"{manifest} has unknown columns {sorted(unknown)}; allowed: path,label,split,group,slice.")
    samples = []
    for line, row in enumerate(reader, start=2):
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not rel or not label:
            raise DataError(f"{manifest}:{line}: empty path or label.")
        if "\x00" in rel:
            raise DataError(f"{manifest}:{line}: the path contains a NUL character.")
        split = (row.get("split") or "").strip().lower()
        if split and split not in SPLITS:
            raise DataError(f"{manifest}:{line}: split {split!r} must be one of {', '.join(SPLITS)} or empty.")
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        samples.append(
            Sample(
                path=path,
                label=label,
                split=split,
                group=(row.get("group") or "").strip(),
                slice=(row.get("slice") or "").strip(),
            )
        )
    if not samples:
        raise DataError(f"{manifest} lists no images.")
    return samples


def _assign_splits(samples: list[Sample], config: DataConfig) -> None:
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    labels = np.array([s.label for s in samples])
    index = np.arange(len(samples))
    grouped = any(s.group for s in samples)
    if grouped:
        groups = np.array([s.group or f"__single_{i}" for i, s in enumerate(samples)])

        if len(set(groups)) < 3:
            raise DataError("the group column names fewer than 3 groups; train, val and test each need one.")

        def group_split(idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
            folds = min(max(2, round(1 / fraction)), len(set(groups[idx])))
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            keep, held = next(splitter.split(idx, labels[idx], groups[idx]))
            return idx[keep], idx[held]

        rest, test = group_split(index, config.test_fraction, config.seed)
        train, val = group_split(rest, config.val_fraction / (1 - config.test_fraction), config.seed + 1)
    else:
        rest, test = train_test_split(index, test_size=config.test_fraction, stratify=labels, random_state=config.seed)
        train, val = train_test_split(
            rest,
            test_size=config.val_fraction / (1 - config.test_fraction),
            stratify=labels[rest],
            random_state=config.seed,
        )
    for name, idx in (("train", train), ("val", val), ("test", test)):
        for i in idx:
            samples[int(i)].split = name


def dataset_hash(samples: list[Sample]) -> str:
    """sha256 over (path, content hash, label, split), independent of order."""
    rows = sorted(f"{s.path.as_posix()}|{s.sha256}|{s.label}|{s.split}" for s in samples)
    return sha256_bytes("\n".join(rows).encode("utf-8"))


def prepare_dataset(config: DataConfig, out_dir: Path) -> Dataset:
    """Read, check, split and describe the data; write out_dir/split.csv and dataset.json.

    Runs :func:`edgetl.data.check.check_dataset` first and writes its report (check.json, check.csv).

    Raises:
        DataError: every problem the check found (unreadable images, too few images per class, a single class...).
    """
    from edgetl.data.check import check_report_or_raise, cross_split_near_duplicates

    report = check_report_or_raise(config, out_dir)
    source, root, samples = report.source, report.root, report.samples
    counts = Counter(s.label for s in samples)
    classes = sorted(counts)
    given = [s.split for s in samples]
    if all(given):
        missing = [name for name in SPLITS if name not in given]
        if missing:
            raise DataError(f"{source}: the split column has no {missing} rows; every split needs images.")
        split_source = "manifest"
    elif any(given):
        raise DataError(f"{source}: the split column is filled for some rows only; fill it for all or none.")
    else:
        _assign_splits(samples, config)
        split_source = "grouped" if any(s.group for s in samples) else "stratified"
    warnings = []
    ratio = max(counts.values()) / min(counts.values())
    if ratio > config.imbalance_warning_ratio:
        warnings.append(f"class imbalance: largest/smallest = {ratio:.1f} ({dict(counts)})")
    near = [f for f in report.warnings if f.reason.startswith("near-identical")]
    if near:
        straddling = cross_split_near_duplicates(report, samples, max_bits=config.near_duplicate_bits)
        warnings.append(
            f"{len(near)} near-identical image pairs, {straddling} of them across splits "
            f"(listed in {out_dir / 'check.csv'}); a group column keeps such images in one split"
        )
    dataset = Dataset(samples=samples, classes=classes, root=root, warnings=warnings)
    dataset.info = {
        "source": str(source),
        "split_source": split_source,
        "num_images": len(samples),
        "classes": classes,
        "counts": {
            split: {c: sum(1 for s in samples if s.split == split and s.label == c) for c in classes}
            for split in SPLITS
        },
        "slices": dict(Counter(s.slice for s in samples if s.slice)),
        "images": report.summary,
        "check": {"errors": 0, "warnings": len(report.warnings), "report": "check.csv"},
        "hash": dataset_hash(samples),
        "seed": config.seed,
        "warnings": warnings,
    }
    write_split_csv(dataset, out_dir / "split.csv")
    write_json_atomic(out_dir / "dataset.json", dataset.info)
    return dataset


def write_split_csv(dataset: Dataset, path: Path) -> None:
    """Write the split table (absolute paths) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split", "group", "slice", "sha256"])
    for s in dataset.samples:
        writer.writerow([s.path.resolve().as_posix(), s.label, s.split, s.group, s.slice, s.sha256])
    write_text_atomic(path, buffer.getvalue())


def load_split(data_dir: Path) -> Dataset:
    """Read a run's data/split.csv and dataset.json back."""
    from edgetl.files import read_json

    split_csv = data_dir / "split.csv"
    if not split_csv.is_file():
        raise DataError(f"{split_csv} is missing; run 'edgetl data prepare' or 'edgetl build' first.")
    with open(split_csv, encoding="utf-8", newline="") as handle:
        samples = [
            Sample(Path(r["path"]), r["label"], r["split"], r["group"], r["slice"], r["sha256"])
            for r in csv.DictReader(handle)
        ]
    info = read_json(data_dir / "dataset.json")
    return Dataset(
        samples=samples,
        classes=list(info["classes"]),
        root=Path(str(info["source"])),
        warnings=list(info.get("warnings", [])),
        info=info,
    )
