"""Drift on the line: every predicted image is also embedded by the bundle's embedder, and each full window of
embeddings is scored against the bundle's reference (:func:`edgetl.runtime.drift.score_window`).

The embedder is the FP32 backbone with its pooling (``drift/embedder.onnx``, exported with the bundle), run in ONNX
Runtime, or in OpenVINO where only that is installed; it costs about one FP32 backbone pass per image, so a line
that needs every millisecond scores a sample of its parts (``every``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from edgetl.errors import EdgetlError
from edgetl.runtime.drift import DriftReference, DriftScore, score_window
from edgetl.runtime.preprocess import PreprocessSpec, float_input
from edgetl.runtime.runner import BackendUnavailable, Runner, has_package

MIN_WINDOW = 10


class DriftSettingsError(EdgetlError, ValueError):
    """A drift window or sampling rate that cannot be scored."""


def embedder_runner(path: Path, *, threads: int | None) -> Runner:
    """The embedder ONNX in ONNX Runtime, else OpenVINO on the CPU.

    Raises:
        BackendUnavailable: neither is installed (a TensorRT device has to add ONNX Runtime for drift).
    """
    if has_package("onnxruntime"):
        from edgetl.runtime.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, threads=threads)
    if has_package("openvino"):
        from edgetl.runtime.openvino import OpenVinoRunner

        return OpenVinoRunner(path, "CPU", threads=threads)
    raise BackendUnavailable(
        "drift scoring runs the bundle's embedder (drift/embedder.onnx) in ONNX Runtime or OpenVINO, and neither "
        "is installed here",
        hint="pip install onnxruntime (on a Jetson: the onnxruntime-gpu wheel for its JetPack), or predict without "
        "--drift.",
    )


class DriftMonitor:
    """Embeds preprocessed images as they are predicted and scores each full window of them.

    ``observe`` may be called from several threads; windows are taken in the order images were observed.
    """

    def __init__(
        self,
        reference: DriftReference,
        embedder: Runner,
        *,
        window: int = 100,
        every: int = 1,
        seed: int = 0,
        spec: PreprocessSpec | None = None,
    ) -> None:
        """``spec``: the model's preprocessing, so uint8 pixel inputs are normalised for the FP32 embedder."""
        if window < MIN_WINDOW:
            raise DriftSettingsError(
                f"a drift window needs at least {MIN_WINDOW} images, got {window}", hint="pass --drift-window 100"
            )
        if every < 1:
            raise DriftSettingsError(f"drift sampling every {every}-th image is not possible: give 1 or more.")
        self.reference = reference
        self.embedder = embedder
        self.spec = spec
        self.window = window
        self.every = every
        self.seed = seed
        self._seen = 0
        self._pending: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.scores: list[DriftScore] = []
        self.embedded = 0
        self.embed_seconds = 0.0

    def observe(self, x: np.ndarray) -> None:
        """Embed one model input (float 1, C, H, W or uint8 1, H, W, C; every ``every``-th image) for the next
        window."""
        with self._lock:
            self._seen += 1
            if (self._seen - 1) % self.every:
                return
        began = time.perf_counter()
        unit = self.embed(x)
        with self._lock:
            self._pending.extend(unit)
            self.embedded += len(x)
            self.embed_seconds += time.perf_counter() - began

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Pooled, L2-normalised backbone features (N, D) of model inputs (float NCHW, or uint8 NHWC pixels)."""
        if self.spec is not None:
            x = float_input(x, self.spec)
        features = np.asarray(self.embedder.infer(x), np.float32).reshape(len(x), -1)
        return np.asarray(features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12), np.float32)

    def _score(self, rows: list[np.ndarray]) -> DriftScore:
        score = score_window(self.reference, np.stack(rows), seed=self.seed + len(self.scores))
        self.scores.append(score)
        return score

    def take_window(self) -> DriftScore | None:
        """The score of the oldest full window, once ``window`` images are waiting (else None)."""
        with self._lock:
            if len(self._pending) < self.window:
                return None
            rows, self._pending = self._pending[: self.window], self._pending[self.window :]
        return self._score(rows)

    def take_rest(self) -> DriftScore | None:
        """The score of what is left at the end, when it is at least :data:`MIN_WINDOW` images."""
        with self._lock:
            rows, self._pending = self._pending, []
        return self._score(rows) if len(rows) >= MIN_WINDOW else None

    def close(self) -> None:
        """Release the embedder."""
        self.embedder.close()


def describe(score: DriftScore) -> str:
    """One line: the verdict with its figures."""
    return (
        f"drift over {score.images} images: {score.verdict} (MMD² {score.mmd2:.4f}, permutation p "
        f"{score.p_value:.3f}, {100 * score.atypical_share:.0f} % atypical)"
    )
