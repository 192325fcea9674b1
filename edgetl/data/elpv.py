"""Import the ELPV solar-cell set (package ``elpv-dataset``) as an ImageFolder plus a manifest.

Labels: ``defective`` when the experts' defect probability is >= 0.5, else ``functional``.
The manifest's slice column carries the cell technology (mono / poly). Files are copied byte for byte.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np

from edgetl.errors import EdgetlError
from edgetl.files import atomic_dir, read_json, write_json_atomic

MARKER = "elpv.json"


class ElpvNotInstalled(EdgetlError, RuntimeError):
    """The elpv-dataset package is missing."""


def _package_labels() -> tuple[Path, list[tuple[str, float, str]]]:
    try:
        import elpv_dataset
    except ImportError as exc:
        raise ElpvNotInstalled(
            "the ELPV images come from the Python package 'elpv-dataset'; install it with "
            "'pip install elpv-dataset' (or run 'make demo', which does)."
        ) from exc
    data_dir = Path(elpv_dataset.__file__).parent / "data"
    labels_file = data_dir / "labels.csv"
    if not labels_file.is_file():
        raise ElpvNotInstalled(f"{labels_file} is missing; reinstall 'elpv-dataset'.")
    rows = []
    for line in labels_file.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], float(parts[1]), parts[2]))
    return data_dir, rows


def import_elpv(out: Path, *, limit: int | None = None, seed: int = 0, threshold: float = 0.5) -> Path:
    """Write ELPV as out/<functional|defective>/*.png and out/manifest.csv; returns the manifest path.

    Args:
        out: destination folder (replaced atomically when its content differs).
        limit: keep a stratified random subset of this many images (for tests and quick trials).
        seed: seed of that subset.
        threshold: defect probability at or above which a cell is ``defective``.
    """
    data_dir, rows = _package_labels()
    labels = np.array(["defective" if p >= threshold else "functional" for _, p, _ in rows])
    keep = np.arange(len(rows))
    if limit is not None and limit < len(rows):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(keep, train_size=limit, stratify=labels, random_state=seed)
        keep = np.sort(keep)
    wanted = {"source": "elpv-dataset", "images": len(keep), "limit": limit, "seed": seed, "threshold": threshold}
    out = Path(out)
    marker = out / MARKER
    if marker.is_file() and read_json(marker) == wanted and (out / "manifest.csv").is_file():
        return out / "manifest.csv"
    with atomic_dir(out) as tmp:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label", "slice"])
        for i in keep:
            rel, _, cell_type = rows[int(i)]
            label = str(labels[int(i)])
            dest = Path(label) / Path(rel).name
            (tmp / label).mkdir(exist_ok=True)
            shutil.copyfile(data_dir / rel, tmp / dest)
            writer.writerow([dest.as_posix(), label, cell_type])
        (tmp / "manifest.csv").write_text(buffer.getvalue(), encoding="utf-8")
        (tmp / "LICENSE.txt").write_text(
            "ELPV images: Buerhop-Lutz, Deitsch et al., CC BY-NC-SA 4.0. Copied from the elpv-dataset package.\n",
            encoding="utf-8",
        )
        write_json_atomic(tmp / MARKER, wanted)
    return out / "manifest.csv"
