"""Read an ImageFolder or CSV manifest, decode every file, split, hash and describe the data set."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetl.config import DataConfig
from edgetl.errors import EdgetlError
from edgetl.files import sha256_bytes, write_json_atomic, write_text_atomic
from edgetl.preprocess import IMAGE_EXTENSIONS  # one list for ImageFolders and manifests

if TYPE_CHECKING:
    from edgetl.data.grouping import GroupingResult

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
    """Stratified, group-aware train / val / test: every group lands whole in one split."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.array([s.label for s in samples])
    groups = np.array([s.group or f"image-{i}" for i, s in enumerate(samples)])
    index = np.arange(len(samples))
    if len(set(groups.tolist())) < 3:
        raise DataError(
            "the images form fewer than 3 independent groups (parts); train, val and test each need one. "
            "Add images of more parts, or check data.group_pattern / the manifest's group column."
        )

    def group_split(idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        import warnings

        folds = min(max(2, round(1 / fraction)), len(set(groups[idx].tolist())))
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class with fewer groups than folds: sklearn warns, the split holds
            keep, held = next(splitter.split(idx, labels[idx], groups[idx]))
        return idx[keep], idx[held]

    rest, test = group_split(index, config.test_fraction, config.seed)
    train, val = group_split(rest, config.val_fraction / (1 - config.test_fraction), config.seed + 1)
    for name, idx in (("train", train), ("val", val), ("test", test)):
        for i in idx:
            samples[int(i)].split = name


def dataset_hash(samples: list[Sample]) -> str:
    """sha256 over (path, content hash, label, split), independent of order."""
    rows = sorted(f"{s.path.as_posix()}|{s.sha256}|{s.label}|{s.split}" for s in samples)
    return sha256_bytes("\n".join(rows).encode("utf-8"))


def prepare_dataset(
    config: DataConfig, out_dir: Path, *, good_class: str | None = None, max_false_reject: float = 0.01
) -> Dataset:
    """Read, check, group, split and describe the data; write out_dir/split.csv and dataset.json.

    Runs :func:`edgetl.data.check.check_dataset` first and writes its report (check.json, check.csv), then
    joins images of one part into groups (:mod:`edgetl.data.grouping`) that the split never cuts. ``good_class``
    and ``max_false_reject`` decide whether the validation split can tune a reject threshold on its own.

    Raises:
        DataError: every problem the check found (unreadable images, too few images per class, a single class...),
            or a named group that a manifest's split column cuts.
    """
    from edgetl.data.check import check_report_or_raise

    report = check_report_or_raise(config, out_dir)
    source, root, samples = report.source, report.root, report.samples
    counts = Counter(s.label for s in samples)
    classes = sorted(counts)
    grouping = _group(samples, root, report, config)
    given = [s.split for s in samples]
    warnings = []
    if all(given):
        missing = [name for name in SPLITS if name not in given]
        if missing:
            raise DataError(f"{source}: the split column has no {missing} rows; every split needs images.")
        split_source = "manifest"
        warnings += _given_splits_respect_groups(samples, grouping, source)
    elif any(given):
        raise DataError(f"{source}: the split column is filled for some rows only; fill it for all or none.")
    else:
        _assign_splits(samples, config)
        split_source = "stratified by class, grouped by part"
    ratio = max(counts.values()) / min(counts.values())
    if ratio > config.imbalance_warning_ratio:
        warnings.append(f"class imbalance: largest/smallest = {ratio:.1f} ({dict(counts)})")
    near = [f for f in report.warnings if f.reason.startswith("near-identical")]
    if near:
        kept = (
            "each pair shares a group, so it stays in one split"
            if config.grouping != "none"
            else ("data.grouping is none, so they may land in different splits")
        )
        warnings.append(f"{len(near)} near-identical image pairs (listed in {out_dir / 'check.csv'}); {kept}")
    if grouping.stats["images_in_shared_groups"]:
        warnings.append(
            f"{grouping.stats['images_in_shared_groups']} images share a group with another image "
            f"({grouping.stats['named_images']} named, {grouping.stats['auto_linked_images']} linked automatically); "
            "each group stays in one split"
        )
    conflicts = int(grouping.stats["links"]["hash"]["conflict"]) + int(  # type: ignore[index]
        grouping.stats["links"]["embedding"]["conflict"]  # type: ignore[index]
    )
    if conflicts:
        warnings.append(
            f"{conflicts} pairs of near-identical images carry different group names; check that the group column "
            "or data.group_pattern names one part once"
        )
    independent = {split: len({s.group for s in samples if s.split == split}) for split in SPLITS}
    gray = report.gray
    images = dict(report.summary)
    images["gray_train"] = sum(1 for s in samples if s.split == "train" and gray.get(str(s.path), False))
    validation = validation_adequacy(samples, classes, good_class=good_class, max_false_reject=max_false_reject)
    warnings += [f"validation split too small: {reason}" for reason in validation["reasons"]]  # type: ignore[attr-defined]
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
        "groups": {"independent": independent, **grouping.stats},
        "validation": validation,
        "slices": dict(Counter(s.slice for s in samples if s.slice)),
        "images": images,
        "check": {"errors": 0, "warnings": len(report.warnings), "report": "check.csv"},
        "hash": dataset_hash(samples),
        "seed": config.seed,
        "warnings": warnings,
    }
    write_split_csv(dataset, out_dir / "split.csv")
    write_json_atomic(out_dir / "dataset.json", dataset.info)
    return dataset


def _group(samples: list[Sample], root: Path, report: object, config: DataConfig) -> GroupingResult:
    """Fill every sample's group (manifest column, then group_pattern, then automatic links)."""
    from edgetl.data.check import near_duplicate_pairs
    from edgetl.data.grouping import embedding_links, group_samples, pattern_groups

    named = [s.group for s in samples]
    if config.group_pattern:
        missing = [i for i, name in enumerate(named) if not name]
        found = pattern_groups([samples[i] for i in missing], root, config.group_pattern)
        for i, name in zip(missing, found, strict=True):
            named[i] = name
    hash_pairs: list[tuple[int, int, int]] = []
    embedding_pairs: list[tuple[int, int, float]] = []
    facts: dict[str, object] = {"embedding": {"used": False, "reason": f"data.grouping is {config.grouping}"}}
    if config.grouping != "none":
        by_sha: dict[str, int] = {}
        for i, s in enumerate(samples):
            if s.sha256 and s.sha256 in by_sha:
                hash_pairs.append((by_sha[s.sha256], i, 0))
            elif s.sha256:
                by_sha[s.sha256] = i
        dhashes: dict[str, bytes] = report.dhashes  # type: ignore[attr-defined]
        known = [i for i, s in enumerate(samples) if str(s.path) in dhashes]
        pairs = near_duplicate_pairs(
            [dhashes[str(samples[i].path)] for i in known], max_bits=config.near_duplicate_bits
        )
        hash_pairs += [(known[a], known[b], bits) for a, b, bits in pairs]
    # Small sets keep enough groups to split: an automatic group holds at most 1/12 of the images.
    cap = min(config.max_group_size, max(2, len(samples) // 12))
    if config.grouping == "auto":
        usable = [i for i, s in enumerate(samples) if s.sha256]
        found_pairs, facts["embedding"] = embedding_links(
            [samples[i] for i in usable], neighbours=config.group_neighbours, background=cap + 1, seed=config.seed
        )
        embedding_pairs = [(usable[a], usable[b], sim) for a, b, sim in found_pairs]
    result = group_samples(
        samples, named=named, hash_pairs=hash_pairs, embedding_pairs=embedding_pairs, max_group_size=cap
    )
    for s, group in zip(samples, result.groups, strict=True):
        s.group = group
    result.stats["source"] = (
        "data.group_pattern" if config.group_pattern else "manifest group column" if any(named) else "automatic"
    )
    result.stats.update(facts)
    return result


def _given_splits_respect_groups(samples: list[Sample], grouping: GroupingResult, source: Path) -> list[str]:
    """A named group cut by a manifest's split column is an error; an automatic group cut by it, a warning."""
    splits_of: dict[str, set[str]] = {}
    for s in samples:
        splits_of.setdefault(s.group, set()).add(s.split)
    cut = sorted(g for g, splits in splits_of.items() if len(splits) > 1)
    named = [g for g in cut if not g.startswith("auto-")]
    if named:
        listing = ", ".join(f"{g} ({'/'.join(sorted(splits_of[g]))})" for g in named[:10])
        raise DataError(
            f"{source}: the split column puts one part in several splits: {listing}"
            f"{' ...' if len(named) > 10 else ''}. Keep every image of a group in one split, or leave the split "
            "column empty and let edgetl split by group."
        )
    if cut:
        return [
            f"{len(cut)} automatic groups of near-identical images straddle the manifest's splits; the test score "
            "may be optimistic (leave the split column empty to split by group)"
        ]
    return []


def validation_adequacy(
    samples: list[Sample], classes: list[str], *, good_class: str | None, max_false_reject: float
) -> dict[str, object]:
    """Whether the validation split can tune and trust choices on its own, and if not, why.

    Too small: fewer good images than a false-reject budget needs (at least 20, and 0.2 / budget: 20 for 1 %),
    or a class with fewer than 5 images. Then choices fall to cross-validation on train+val.
    """
    from edgetl.bench.accuracy import good_class_index

    val = [s for s in samples if s.split == "val"]
    per_class = Counter(s.label for s in val)
    train_counts = [sum(1 for s in samples if s.split == "train" and s.label == c) for c in classes]
    good = classes[good_class_index(classes, good=good_class, counts=train_counts)]
    need_good = max(20, int(np.ceil(0.2 / max(max_false_reject, 1e-6))))
    reasons = []
    if per_class.get(good, 0) < need_good:
        reasons.append(
            f"{per_class.get(good, 0)} good ('{good}') validation images, fewer than the {need_good} a "
            f"{100 * max_false_reject:g} % false-reject threshold needs"
        )
    for c in classes:
        if per_class.get(c, 0) < 5:
            reasons.append(f"class '{c}' has {per_class.get(c, 0)} validation images (fewer than 5)")
    return {
        "adequate": not reasons,
        "reasons": reasons,
        "good_class": good,
        "images": len(val),
        "groups": len({s.group for s in val}),
        "choices_by": "the validation split" if not reasons else "cross-validation on train+val where possible",
    }


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
