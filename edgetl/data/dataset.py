"""Read an ImageFolder or CSV manifest, decode every file, split, hash and describe the data set."""

from __future__ import annotations

import csv
import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetl.config import DataConfig
from edgetl.files import sha256_bytes, write_json_atomic, write_text_atomic
from edgetl.preprocess import ImageDecodeError, decode_image

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
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


def read_image_folder(root: Path) -> list[Sample]:
    """root/<class>/<files>; nested folders below a class are included."""
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
    if empty:
        names = ", ".join(str(p) for p in empty)
        raise DataError(f"class folders with no images: {names}; add images or remove the folders.")
    return samples


def read_manifest(manifest: Path) -> list[Sample]:
    """CSV with columns path,label[,split][,group][,slice]; relative paths are relative to the CSV."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"manifest {manifest} does not exist; pass the path of a CSV with columns path,label.")
    base = manifest.parent
    text = manifest.read_text(encoding="utf-8-sig")
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


def _check_one(sample: Sample) -> tuple[str | None, dict[str, object]]:
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
    sample.sha256 = sha256_bytes(data)
    return None, {"mode": image.mode, "size": image.size}


def check_images(samples: list[Sample], *, threads: int = 4) -> tuple[list[tuple[Sample, str]], dict[str, object]]:
    """Decode every file; return (bad samples with reasons, summary of modes and sizes)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(_check_one, samples))
    bad = [(s, reason) for s, (reason, _) in zip(samples, results, strict=True) if reason]
    modes = Counter(str(info["mode"]) for _, info in results if info)
    sizes = Counter("x".join(map(str, info["size"])) for _, info in results if info)  # type: ignore[call-overload]
    return bad, {"modes": dict(modes), "sizes": dict(sizes.most_common(5)), "distinct_sizes": len(sizes)}


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

    Raises:
        DataError: unreadable images (all listed with reasons), too few images per class, a single class.
    """
    source = config.manifest if config.manifest is not None else config.root
    assert source is not None
    samples = read_manifest(source) if config.manifest is not None else read_image_folder(source)
    root = source.parent if config.manifest is not None else Path(source)
    bad, summary = check_images(samples)
    if bad:
        listing = "\n".join(f"  {s.path}: {reason}" for s, reason in bad[:50])
        more = f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""
        raise DataError(
            f"{len(bad)} of {len(samples)} images cannot be used:\n{listing}{more}\n"
            "Fix or remove these files (edgetl never modifies them), then run again."
        )
    counts = Counter(s.label for s in samples)
    classes = sorted(counts)
    if len(classes) < 2:
        raise DataError(f"{source} has a single class ({classes[0]}); a classifier needs at least two.")
    small = {c: n for c, n in counts.items() if n < config.min_images_per_class}
    if small:
        raise DataError(f"classes below data.min_images_per_class={config.min_images_per_class}: {small}; add images.")
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
    by_hash: dict[str, set[str]] = {}
    for s in samples:
        by_hash.setdefault(s.sha256, set()).add(s.split)
    leaks = sum(1 for splits in by_hash.values() if len(splits) > 1)
    if leaks:
        warnings.append(f"{leaks} identical images appear in more than one split")
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
        "images": summary,
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
