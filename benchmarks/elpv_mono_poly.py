"""Manifests for the ELPV mono -> poly transfer experiment (README, "Transfer learning, measured").

Reads the manifest that `edgetl data elpv DIR` writes and writes beside it:

- ``mono.csv``: the mono cells only (the training station);
- ``poly-a.csv`` and ``poly-b.csv``: two disjoint random halves of the poly cells (stratified by label): A is the
  new station's unlabelled batch for ``edgetl adapt``, B its labelled evaluation set; together they are the null
  of ``edgetl gap`` (poly against poly);
- ``elpv-mono.yaml``: the build config (fixed recipe, no search, to keep it affordable on 2 cores).

Usage: python benchmarks/elpv_mono_poly.py data/elpv/manifest.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

CONFIG = """\
# ELPV mono -> poly: a model trained on mono cells only (benchmarks/elpv_mono_poly.py writes this file).
name: elpv-mono
targets: [cpu]
data:
  manifest: mono.csv
  test_fraction: 0.25
  val_fraction: 0.10
model:
  arch: mobilenet_v2
  input_size: 224
train:
  strategy: partial       # a fixed recipe (the search's default depth) instead of the search, to keep it short
  trainable_blocks: 5
  epochs: 12
"""


def main(manifest: Path) -> None:
    with open(manifest, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = manifest.parent

    def write(name: str, chosen: list[dict[str, str]]) -> None:
        with open(out / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "label", "slice"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(chosen)
        print(f"{out / name}: {len(chosen)} images")

    write("mono.csv", [r for r in rows if r["slice"] == "mono"])
    poly = [r for r in rows if r["slice"] == "poly"]
    rng = np.random.default_rng(0)
    half_a: list[dict[str, str]] = []
    half_b: list[dict[str, str]] = []
    for label in sorted({r["label"] for r in poly}):
        members = [r for r in poly if r["label"] == label]
        order = rng.permutation(len(members))
        cut = len(members) // 2
        half_a += [members[i] for i in sorted(order[:cut])]
        half_b += [members[i] for i in sorted(order[cut:])]
    write("poly-a.csv", half_a)
    write("poly-b.csv", half_b)
    (out / "elpv-mono.yaml").write_text(CONFIG, encoding="utf-8")
    print(f"{out / 'elpv-mono.yaml'}: edgetl build --config {out / 'elpv-mono.yaml'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/elpv/manifest.csv"))
