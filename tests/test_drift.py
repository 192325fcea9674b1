"""Drift on the line: a numpy-only module (no torch, sklearn or scipy), and a score that rises on shifted images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.runtime.drift import LARGE_SHIFT, NO_SHIFT, SHIFT, DriftReference, reference_from_embeddings, score_window


def test_drift_imports_without_torch_sklearn_or_scipy():
    code = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'sklearn', 'scipy', 'onnx', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "import numpy as np\n"
        "import edgetl.runtime.drift as d\n"
        "rng = np.random.default_rng(0)\n"
        "ref = d.reference_from_embeddings(rng.normal(size=(60, 16)))\n"
        "print(d.score_window(ref, rng.normal(size=(20, 16))).verdict)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in {NO_SHIFT, SHIFT, LARGE_SHIFT}


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_score_rises_with_the_shift_and_the_reference_round_trips(tmp_path: Path):
    # Like pooled CNN features: a common direction plus spread (isotropic noise would leave nothing atypical).
    rng = np.random.default_rng(0)
    base = 1.0 + 0.5 * rng.normal(size=(600, 64))
    ref = reference_from_embeddings(_unit(base[:400]), sample_size=256)
    path = tmp_path / "reference.npz"
    ref.save(path)
    loaded = DriftReference.load(path)
    assert np.array_equal(loaded.sample, ref.sample) and loaded.bandwidth == ref.bandwidth
    window = base[400:500]
    direction = np.r_[np.ones(32), -np.ones(32)] / 4
    scores = [score_window(loaded, _unit(window + s * direction)) for s in (0.0, 0.5, 3.0)]
    assert scores[0].verdict == NO_SHIFT
    assert scores[0].mmd2 < scores[1].mmd2 < scores[2].mmd2
    assert scores[1].verdict in {SHIFT, LARGE_SHIFT} and scores[2].verdict == LARGE_SHIFT
    assert scores[0].atypical_share <= 0.1 < scores[2].atypical_share


def test_not_a_reference_is_refused(tmp_path: Path):
    bad = tmp_path / "x.npz"
    np.savez(bad, sample=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="not an edgetl drift reference"):
        DriftReference.load(bad)


def _cells(folder: Path, n: int, *, seed: int, gain: float = 1.0, offset: float = 0.0) -> Path:
    """Grey images like the tiny run's: smooth noise, some with a dark line; ``gain``/``offset`` change the lamp
    (a negative gain inverts it)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.normal(150, 10, (40, 40))
        if i % 2:
            row = rng.integers(10, 30)
            img[row : row + 3, :] = 20
        Image.fromarray((img * gain + offset).clip(0, 255).astype(np.uint8), mode="L").save(folder / f"{i:03d}.png")
    return folder


def test_drift_reference_of_a_run_and_windows_of_real_images(run_copy, tmp_path: Path):
    """The reference file written from a run, then windows embedded by the run's model: the score rises on
    images under an inverted, flat lamp; the same kind of images as the reference gives no measurable shift."""
    from edgetl.run import RunDir
    from edgetl.runtime.drift import score_window
    from edgetl.transfer.gap import models_of
    from edgetl.transfer.images import embed, load_pixels, read_images
    from edgetl.transfer.reference import write_drift_reference

    copy, _ = run_copy
    run = RunDir(copy)
    path = write_drift_reference(run, sample_size=256)
    assert path == copy / "drift" / "reference.npz"
    reference = DriftReference.load(path)
    assert reference.info["images"].startswith("the train and validation splits")
    model, _, spec, _ = models_of(run)

    def window(folder: Path) -> np.ndarray:
        return embed(model, spec, load_pixels(read_images(folder), spec))

    same = window(_cells(tmp_path / "same", 40, seed=5))
    # The tiny run's 2-epoch model hardly reacts to a brighter, flatter exposure; an inverted, flat lamp it sees.
    shifted = window(_cells(tmp_path / "shifted", 40, seed=5, gain=-0.6, offset=255))
    calm, moved = score_window(reference, same), score_window(reference, shifted)
    assert calm.verdict == NO_SHIFT, calm
    assert moved.verdict in {SHIFT, LARGE_SHIFT} and moved.mmd2 > calm.mmd2 and moved.p_value < 0.05
