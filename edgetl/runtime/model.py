"""``load(bundle)`` -> a model for the line: images in, class, probabilities, defect score and verdict out.

Images are paths, PIL images or uint8 arrays, decoded and preprocessed by the code training used (one spec,
from the bundle). ``predict`` takes one image or a list (and batches for models with a dynamic batch axis);
``predict_iter`` and ``predict_folder`` decode the next images in a small thread pool while the current one is
inferred. An image that cannot be decoded comes back as a prediction with ``error`` set, never as an exception.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image

from edgetl.runtime.bundle import Bundle
from edgetl.runtime.decision import RejectRule, Verdict, defect_scores, reject_rule, softmax
from edgetl.runtime.preprocess import (
    ImageDecodeError,
    canonical_image,
    decode_image,
    image_from_array,
    model_input,
    resized_uint8,
)
from edgetl.runtime.runner import InputMismatchError, Runner

if TYPE_CHECKING:
    from edgetl.runtime.monitor import DriftMonitor
from edgetl.runtime.sources import image_files

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]


@dataclass
class Prediction:
    """The model's answer for one image. ``source`` is the file path, or ``<image N>`` for an image given in memory
    (N: its position); ``score`` the defect score 1 - P(good); ``ms`` decode + preprocess + infer."""

    source: str
    label: str | None = None
    index: int | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    verdict: Verdict | None = None
    threshold: float | None = None
    ms: float = 0.0
    decode_ms: float = 0.0
    infer_ms: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image was read and the part passes (no verdict counts as passing)."""
        return self.error is None and self.verdict != "reject"

    def row(self) -> dict[str, Any]:
        """One flat row: path, class, score, verdict, ms, error, then the probability of each class."""
        return {
            "path": self.source,
            "class": self.label,
            "score": self.score,
            "verdict": self.verdict,
            "ms": round(self.ms, 3),
            "error": self.error,
            **{f"p_{name}": value for name, value in self.probabilities.items()},
        }


def _source_name(image: ImageInput, position: int) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"<image {position}>"


class LineModel:
    """One precision of a verified bundle, opened for inference (a context manager)."""

    def __init__(
        self, bundle: Bundle, precision: str, runner: Runner, *, rule: RejectRule | None, device: str | None
    ) -> None:
        self.bundle = bundle
        self.precision = precision
        self.runner = runner
        self.rule = rule
        self.device = device
        self.classes = bundle.classes
        self.spec = bundle.spec_of(precision)
        self.drift: DriftMonitor | None = None

    def __enter__(self) -> LineModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend (and the drift embedder)."""
        self.runner.close()
        if self.drift is not None:
            self.drift.close()

    def watch_drift(self, *, window: int = 100, every: int = 1) -> DriftMonitor:
        """From now on, embed every ``every``-th predicted image and score each ``window`` of them against the
        bundle's reference (``model.drift.take_window()``); returns the monitor.

        Raises:
            BundleError: the bundle carries no drift reference.
        """
        if self.drift is None:
            self.drift = self.bundle.drift_monitor(window=window, every=every, threads=1)
        return self.drift

    @property
    def runtime(self) -> str:
        """What runs the model here: onnxruntime-cpu, openvino-CPU, tensorrt."""
        return self.runner.runtime

    @property
    def threshold(self) -> float | None:
        """The reject threshold in use (tuned for this precision, or the one given to :func:`load`)."""
        return None if self.rule is None else self.rule.threshold

    def prepare(self, image: ImageInput) -> np.ndarray:
        """Decode and preprocess one image into the model's input: (1, C, H, W) float32, or (1, H, W, C) uint8
        pixels for a model that normalises in its graph (preprocess.json says which).

        Raises:
            ImageDecodeError: the file or array cannot be used.
        """
        if isinstance(image, (str, os.PathLike)):
            decoded = decode_image(Path(image))
        elif isinstance(image, Image.Image):
            decoded = canonical_image(image)
        elif isinstance(image, np.ndarray):
            decoded = image_from_array(image)
        else:
            raise ImageDecodeError(f"cannot read a {type(image).__name__}; pass a path, a PIL image or a uint8 array")
        return model_input(resized_uint8(decoded, self.spec), self.spec)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an already preprocessed batch, as :meth:`prepare` makes it (the runner's checked ``infer``)."""
        return self.runner.infer(batch)

    def _rule(self, threshold: float | None) -> RejectRule | None:
        if threshold is None:
            return self.rule
        entry = self.bundle.thresholds.get(self.precision)
        return reject_rule(self.classes, entry, good_class=self.bundle.good_class, override=threshold)

    def _predictions(
        self, logits: np.ndarray, sources: Sequence[str], decode_ms: Sequence[float], infer_ms: float, rule: Any
    ) -> list[Prediction]:
        probabilities = softmax(logits)
        scores = None if rule is None else defect_scores(logits, rule.good_index)
        share = infer_ms / len(sources)
        out = []
        for i, source in enumerate(sources):
            index = int(logits[i].argmax())
            score = None if scores is None else float(scores[i])
            out.append(
                Prediction(
                    source=source,
                    label=self.classes[index],
                    index=index,
                    probabilities={name: float(p) for name, p in zip(self.classes, probabilities[i], strict=True)},
                    score=score,
                    verdict=None if rule is None or score is None else rule.verdict(score),
                    threshold=None if rule is None else rule.threshold,
                    ms=decode_ms[i] + share,
                    decode_ms=decode_ms[i],
                    infer_ms=share,
                )
            )
        return out

    def _timed_prepare(self, image: ImageInput) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        x = self.prepare(image)
        ms = (time.perf_counter() - start) * 1e3
        if self.drift is not None:
            self.drift.observe(x)  # timed by the monitor: ``ms`` stays the model's own decode + infer
        return x, ms

    def predict(
        self, images: ImageInput | Sequence[ImageInput], *, threshold: float | None = None, batch_size: int = 1
    ) -> list[Prediction]:
        """Predictions for one image or a list, in order.

        ``threshold`` overrides the tuned reject threshold for this call. ``batch_size`` > 1 infers that many
        images per call (models exported with a dynamic batch axis only).
        """
        items = list(_as_list(images))
        fixed = self.runner.max_batch
        if batch_size < 1 or (fixed is not None and batch_size > fixed):
            raise InputMismatchError(
                f"batch_size {batch_size} is not possible: the model takes batches of {fixed or 'any size'}.",
                hint="export with export.dynamic_batch: true for larger batches." if fixed == 1 else None,
            )
        rule = self._rule(threshold)
        out: list[Prediction | None] = [None] * len(items)
        for start in range(0, len(items), batch_size):
            inputs, positions, times = [], [], []
            for position in range(start, min(start + batch_size, len(items))):
                try:
                    x, ms = self._timed_prepare(items[position])
                except ImageDecodeError as exc:
                    out[position] = Prediction(source=_source_name(items[position], position), error=str(exc))
                    continue
                inputs.append(x)
                positions.append(position)
                times.append(ms)
            if inputs:
                began = time.perf_counter()
                logits = self.runner.infer(np.concatenate(inputs))
                sources = [_source_name(items[i], i) for i in positions]
                done = self._predictions(logits, sources, times, (time.perf_counter() - began) * 1e3, rule)
                for position, prediction in zip(positions, done, strict=True):
                    out[position] = prediction
        return [p for p in out if p is not None]

    def _one(self, image: ImageInput, source: str, rule: RejectRule | None) -> Prediction:
        """Decode, preprocess and infer one image (in a worker thread on concurrent runners)."""
        try:
            x, decode_ms = self._timed_prepare(image)
        except ImageDecodeError as exc:
            return Prediction(source=source, error=str(exc))
        began = time.perf_counter()
        logits = self.runner.infer(x)
        return self._predictions(logits, [source], [decode_ms], (time.perf_counter() - began) * 1e3, rule)[0]

    def predict_iter(
        self, images: Iterable[ImageInput], *, threshold: float | None = None, workers: int = 2
    ) -> Iterator[Prediction]:
        """Predictions in input order, with up to ``2 * workers`` images in flight in ``workers`` threads.

        On runners that take concurrent calls (ONNX Runtime, OpenVINO) each worker decodes and infers its own
        image: with ``load(..., threads=1)`` that is one single-threaded inference stream per worker, the
        highest throughput on a small CPU (no parallel-loop synchronisation, decoding never stalls a parallel
        section). Otherwise (TensorRT) the workers decode ahead while this thread infers.
        """
        rule = self._rule(threshold)
        ahead = max(1, 2 * workers)
        concurrent = self.runner.concurrent
        queue: deque[tuple[str, Future[Any]]] = deque()
        source_iter = iter(enumerate(images))
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="edgetl-predict") as pool:

            def refill() -> None:
                while len(queue) < ahead:
                    item = next(source_iter, None)
                    if item is None:
                        return
                    position, image = item
                    source = _source_name(image, position)
                    job = (
                        pool.submit(self._one, image, source, rule)
                        if concurrent
                        else pool.submit(self._timed_prepare, image)
                    )
                    queue.append((source, job))

            refill()
            while queue:
                source, future = queue.popleft()
                refill()
                if concurrent:
                    yield future.result()
                    continue
                try:
                    x, decode_ms = future.result()
                except ImageDecodeError as exc:
                    yield Prediction(source=source, error=str(exc))
                    continue
                began = time.perf_counter()
                logits = self.runner.infer(x)
                yield self._predictions(logits, [source], [decode_ms], (time.perf_counter() - began) * 1e3, rule)[0]

    def predict_folder(
        self, folder: Path | str, *, threshold: float | None = None, workers: int = 2, recursive: bool = True
    ) -> Iterator[Prediction]:
        """Predictions for every image file in ``folder`` (sorted by path), decoding overlapped with inference."""
        return self.predict_iter(image_files(Path(folder), recursive=recursive), threshold=threshold, workers=workers)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> Sequence[ImageInput]:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        # A 4-D uint8 array is a stack of frames (N, H, W, C); anything else is one frame.
        return list(images) if images.ndim == 4 else [images]
    return images


def load(
    bundle: Path | str,
    *,
    precision: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    threshold: float | None = None,
) -> LineModel:
    """Verify a bundle (sha256 of every file, no unlisted file), then open one precision for inference.

    Args:
        bundle: the bundle folder (runs/<name>/bundle/<profile>/, copied to the line PC or device).
        precision: fp32, fp16 or int8; None: FP32 when the bundle has it, else its most precise model.
        threads: CPU threads of the backend; None: the backend's default (every core).
        device: None for the bundle's own device; an OpenVINO device name; ``cpu`` on a TensorRT bundle runs
            its ONNX model in ONNX Runtime instead of the engine.
        threshold: a reject threshold (defect score) instead of the one tuned for this precision.

    Raises:
        BundleError: the bundle is incomplete, altered, holds unlisted files, or lacks the precision.
        BackendUnavailable: the backend is not installed here (the message says what to install).
    """
    opened = Bundle.open(bundle)
    precision = opened.check_precision(precision)
    rule = reject_rule(
        opened.classes, opened.thresholds.get(precision), good_class=opened.good_class, override=threshold
    )
    runner = opened.runner(precision, threads=threads, device=device)
    return LineModel(opened, precision, runner, rule=rule, device=device)
