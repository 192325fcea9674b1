import csv
from pathlib import Path

import pytest

pytest.importorskip("elpv_dataset", reason="the elpv-dataset package is not installed")

from edgetl.data.elpv import import_elpv


def test_import_writes_imagefolder_and_manifest(tmp_path: Path):
    manifest = import_elpv(tmp_path / "elpv", limit=40, seed=1)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 40
    assert {r["label"] for r in rows} == {"functional", "defective"}
    assert {r["slice"] for r in rows} <= {"mono", "poly"}
    for r in rows:
        assert (manifest.parent / r["path"]).is_file()
        assert r["path"].startswith(r["label"] + "/")
    mtime = manifest.stat().st_mtime_ns
    import_elpv(tmp_path / "elpv", limit=40, seed=1)
    assert manifest.stat().st_mtime_ns == mtime


def test_labels_follow_the_probability_threshold(tmp_path: Path):
    import numpy as np
    from elpv_dataset.utils import load_dataset

    manifest = import_elpv(tmp_path / "all")
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 2624
    _, proba, types = load_dataset()
    assert sum(r["label"] == "defective" for r in rows) == int(np.sum(proba >= 0.5)) == 821
    assert sum(r["slice"] == "mono" for r in rows) == int(np.sum(types == "mono"))
