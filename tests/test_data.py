import csv
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_image_folder, tree_hashes

from edgetl.config import DataConfig
from edgetl.data.dataset import DataError, load_split, prepare_dataset


def test_image_folder_split_is_stratified_deterministic_and_described(image_folder: Path, tmp_path: Path):
    before = tree_hashes(image_folder)
    config = DataConfig(root=image_folder, test_fraction=0.25, val_fraction=0.25)  # type: ignore[call-arg]
    a = prepare_dataset(config, tmp_path / "a")
    b = prepare_dataset(config, tmp_path / "b")
    assert [s.split for s in a.samples] == [s.split for s in b.samples]
    assert a.info["hash"] == b.info["hash"]
    counts = a.info["counts"]
    # Stratified as far as whole groups allow (the generated images pair up as near-identical groups of 2).
    for split in ("val", "test"):
        assert abs(counts[split]["crack"] - counts[split]["good"]) <= 2 and sum(counts[split].values()) == 6
    splits_of_group: dict[str, set[str]] = {}
    for s in a.samples:
        splits_of_group.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in splits_of_group.values())
    assert sum(a.info["groups"]["independent"].values()) == a.info["groups"]["groups"]
    assert (tmp_path / "a" / "split.csv").is_file() and (tmp_path / "a" / "dataset.json").is_file()
    again = load_split(tmp_path / "a")
    assert [s.sha256 for s in again.samples] == [s.sha256 for s in a.samples]
    assert tree_hashes(image_folder) == before


def test_unreadable_files_are_all_listed_before_training(image_folder: Path, tmp_path: Path):
    (image_folder / "good" / "zero.png").write_bytes(b"")
    (image_folder / "crack" / "fake.jpg").write_text("hello")
    before = tree_hashes(image_folder)
    with pytest.raises(DataError) as err:
        prepare_dataset(DataConfig(root=image_folder), tmp_path / "d")  # type: ignore[call-arg]
    message = str(err.value)
    assert "zero.png" in message and "empty file" in message
    assert "fake.jpg" in message and "cannot decode" in message
    assert "2 of 26" in message
    assert tree_hashes(image_folder) == before


def test_empty_class_and_single_class_are_errors(tmp_path: Path):
    root = make_image_folder(tmp_path / "imgs", per_class=6)
    (root / "scratch").mkdir()
    with pytest.raises(DataError, match="scratch"):
        prepare_dataset(DataConfig(root=root), tmp_path / "d")  # type: ignore[call-arg]
    (root / "scratch").rmdir()
    import shutil

    shutil.rmtree(root / "crack")
    with pytest.raises(DataError, match="single class"):
        prepare_dataset(DataConfig(root=root), tmp_path / "d")  # type: ignore[call-arg]


def test_manifest_with_groups_keeps_each_group_in_one_split(tmp_path: Path):
    root = make_image_folder(tmp_path / "imgs", per_class=20)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "slice"])
        for i, path in enumerate(sorted(root.rglob("*.png"))):
            writer.writerow([path.relative_to(tmp_path).as_posix(), path.parent.name, f"module{i // 4}", "a"])
    dataset = prepare_dataset(DataConfig(manifest=manifest, seed=3), tmp_path / "d")  # type: ignore[call-arg]
    assert dataset.info["split_source"] == "stratified by class, grouped by part"
    assert dataset.info["groups"]["source"] == "manifest group column"
    splits_of = {}
    for s in dataset.samples:
        splits_of.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in splits_of.values())
    assert set(Counter(s.split for s in dataset.samples)) == {"train", "val", "test"}


def test_manifest_split_column_is_used_and_checked(tmp_path: Path):
    root = make_image_folder(tmp_path / "imgs", per_class=6)
    manifest = tmp_path / "m.csv"
    rows = sorted(root.rglob("*.png"))
    lines = ["path,label,split"] + [
        f"{p.relative_to(tmp_path).as_posix()},{p.parent.name},{('train', 'val', 'test')[i % 3]}"
        for i, p in enumerate(rows)
    ]
    manifest.write_text("\n".join(lines) + "\n")
    dataset = prepare_dataset(DataConfig(manifest=manifest), tmp_path / "d")  # type: ignore[call-arg]
    assert dataset.info["split_source"] == "manifest"
    manifest.write_text("\n".join([*lines[:3], lines[3].rsplit(",", 1)[0] + ",holdout"]) + "\n")
    with pytest.raises(DataError, match="m.csv:4"):
        prepare_dataset(DataConfig(manifest=manifest), tmp_path / "d")  # type: ignore[call-arg]


def test_manifest_errors_name_the_file(tmp_path: Path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match="m.csv must have a header"):
        prepare_dataset(DataConfig(manifest=manifest), tmp_path / "d")  # type: ignore[call-arg]
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset(DataConfig(root=tmp_path / "missing"), tmp_path / "d")  # type: ignore[call-arg]


def test_imbalance_and_duplicates_are_warned(tmp_path: Path):
    root = make_image_folder(tmp_path / "imgs", per_class=20)
    for p in sorted((root / "crack").glob("*.png"))[6:]:
        p.unlink()
    dataset = prepare_dataset(DataConfig(root=root), tmp_path / "d")  # type: ignore[call-arg]
    assert any("imbalance" in w for w in dataset.warnings)
