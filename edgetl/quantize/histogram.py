"""Histogram calibration (entropy, percentile) for onnxruntime's quantizer, counted once for every method.

onnxruntime's calibrators run the model and count every activation once per method (and np.histogram counts by
sorting once a range has grown): on 300 MobileNetV2 images that was 50-70 s a method, and a build calibrated up
to three times (percentile for ONNX Runtime, percentile and entropy for TensorRT). Here the activations are
counted once, image by image, on a fine signed histogram per tensor (:data:`FINE_BINS` bins over [-r, r], grown
by whole bins when a later stride reaches further: onnxruntime's rule). Each method's own histogram is derived
from it: entropy's 128 and percentile's 2048 signed bins (fine bins summed, the coarse histogram's growth replayed
from the strides' reaches), or for symmetric percentile the histogram of |x| (the signed one folded at 0, bins of
the same width as onnxruntime's). onnxruntime's own HistogramCollector then computes the thresholds, and its
calibration cache is written as before. The bins are onnxruntime's up to float rounding of their edges: on the
ELPV model, percentile ranges came out the same and entropy's the same for 98 of 101 tensors; entropy's search
moved the other three by 1-4 % of their span, over a few dozen of 14-43 million values that sat on an edge.

The fine histograms are kept beside the calibration set (:data:`STORE`), keyed by the model that ran, the images
and onnxruntime's version, so every layout and ladder rung of a run reuses one pass.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.files import atomic_path
from edgetl.quantize.calibration import Feeds
from edgetl.quiet import prints_muted

__all__ = ["FINE_BINS", "STORE", "Histograms", "collect_histograms", "histogram_ranges", "method_histograms"]

# onnxruntime's defaults: entropy 128 bins, percentile 2048 (symmetric: 2048 over |x|, i.e. half the signed width).
# 4096 signed bins hold all three exactly (sums of 32 or 2 fine bins; |x| folds 4096 into 2048).
FINE_BINS = 4096
_BINS = {"entropy": 128, "percentile": 2048}
_QUANTIZED_BINS = 128
STORE = "histograms.npz"
_FORMAT = "edgetl-histograms-2"


@dataclass
class _Tensor:
    """One tensor's fine signed histogram, grown as onnxruntime grows its own."""

    counts: np.ndarray | None = None  # None until a stride reaches past 0
    reach: Any = None  # the grid covers [-reach, reach]
    zeros: int = 0  # values of strides seen before the grid existed (all 0)
    low: Any = None
    high: Any = None
    reaches: list[Any] = field(default_factory=list)

    def add(self, parts: list[np.ndarray]) -> None:
        extremes = [(p.min(), p.max()) for p in parts if p.size]
        if any(np.isnan(lo) or np.isnan(hi) for lo, hi in extremes):  # NaNs are left out, as np.histogram does
            parts = [p[~np.isnan(p)] for p in parts]
            extremes = [(p.min(), p.max()) for p in parts if p.size]
        dtype = parts[0].dtype if parts else np.dtype(np.float32)
        low = min((e[0] for e in extremes), default=dtype.type(0))
        high = max((e[1] for e in extremes), default=dtype.type(0))
        reach = np.array(max(abs(low), abs(high)), dtype=dtype)
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        self.reaches.append(reach)
        if self.counts is None:
            if reach == 0:
                self.zeros += sum(p.size for p in parts)
                return
            self.reach = reach  # the first non-zero reach anchors the grid
            self.counts = np.zeros(FINE_BINS, dtype=np.int64)
            self.counts[FINE_BINS // 2] += self.zeros
        elif reach > self.reach:
            width = 2 * self.reach / len(self.counts)
            grow = int((reach - self.reach) // width + 1)
            self.reach = grow * width + self.reach
            self.counts = np.pad(self.counts, grow)
        bins = len(self.counts)
        scale = np.float32(bins / (2 * float(self.reach)))
        shift = np.float32(float(self.reach) * scale)
        for part in parts:
            index = (part * scale + shift).astype(np.intp)
            np.clip(index, 0, bins - 1, out=index)
            self.counts += np.bincount(index, minlength=bins)


class _FineCollector:
    """Stands in for onnxruntime's HistogramCollector while its calibrator runs the model: counts fine bins."""

    def __init__(self) -> None:
        self.tensors: dict[str, _Tensor] = {}

    def collect(self, name_to_arr: dict[str, Any]) -> None:
        for name, arrays in name_to_arr.items():
            items = arrays if isinstance(arrays, list) else [arrays]
            self.tensors.setdefault(name, _Tensor()).add([np.ravel(np.asarray(a)) for a in items])


@dataclass
class Histograms:
    """Fine signed histograms of every calibrated tensor, and what each method's histogram is derived from."""

    key: str
    names: list[str]
    counts: list[np.ndarray]
    reach: np.ndarray  # final fine reach
    low: np.ndarray
    high: np.ndarray
    reaches: np.ndarray  # (tensors, strides): each stride's reach

    def anchor(self, i: int) -> float:
        """Tensor ``i``'s first non-zero stride reach, where its bins are anchored (0: never non-zero)."""
        return float(next((r for r in self.reaches[i] if r), 0.0))

    def save(self, path: Path) -> None:
        arrays = {
            "format": np.array(_FORMAT),
            "key": np.array(self.key),
            "names": np.array(self.names),
            "sizes": np.array([len(c) for c in self.counts], dtype=np.int64),
            "counts": np.concatenate(self.counts) if self.counts else np.zeros(0, np.int64),
            "reach": self.reach,
            "low": self.low,
            "high": self.high,
            "reaches": self.reaches,
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path, key: str) -> Histograms | None:
        """The histograms in ``path`` when they were counted for ``key``; None when absent, stale or unreadable."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) != _FORMAT or str(data["key"]) != key:
                    return None
                sizes = data["sizes"]
                counts = np.split(data["counts"], np.cumsum(sizes)[:-1]) if len(sizes) else []
                return cls(
                    key=key,
                    names=[str(n) for n in data["names"]],
                    counts=[np.asarray(c) for c in counts],
                    reach=data["reach"],
                    low=data["low"],
                    high=data["high"],
                    reaches=data["reaches"],
                )
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
            return None


def _key(prepared: Path, batches: list[dict[str, np.ndarray]], stride: int) -> str:
    digest = hashlib.sha256()
    digest.update(prepared.read_bytes())
    for batch in batches:
        for name in sorted(batch):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(batch[name]).data)
    version = importlib.metadata.version("onnxruntime")
    digest.update(f"{_FORMAT} onnxruntime {version} stride {stride} bins {FINE_BINS}".encode())
    return digest.hexdigest()


def collect_histograms(
    prepared: Path, batches: list[dict[str, np.ndarray]], *, stride: int, key: str = ""
) -> Histograms:
    """Run ``prepared`` (augmented by onnxruntime's calibrator, the tensors quantize_static calibrates) on
    ``batches`` (one feed per image), ``stride`` images at a time, and count their activations; ``key``: what
    they were counted for (see :meth:`Histograms.load`)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    collector = _FineCollector()
    with tempfile.TemporaryDirectory(prefix="edgetl-calib-") as tmp, prints_muted():
        calibrator = create_calibrator(
            prepared,
            list(set(QLinearOpsRegistry) | set(QDQRegistry)),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
        )
        calibrator.collector = collector
        for start in range(0, len(batches), stride):
            calibrator.collect_data(Feeds(batches[start : start + stride]))
        del calibrator
    names = sorted(collector.tensors)
    tensors = [collector.tensors[n] for n in names]
    strides = max((len(t.reaches) for t in tensors), default=0)
    return Histograms(
        key=key,
        names=names,
        counts=[t.counts if t.counts is not None else np.array([t.zeros], dtype=np.int64) for t in tensors],
        reach=np.array([float(t.reach) if t.reach is not None else 0.0 for t in tensors], dtype=np.float64),
        low=np.array([t.low for t in tensors], dtype=np.float32),
        high=np.array([t.high for t in tensors], dtype=np.float32),
        reaches=np.array([[float(r) for r in t.reaches] + [0.0] * (strides - len(t.reaches)) for t in tensors]),
    )


def _signed(h: Histograms, i: int, bins: int) -> tuple[Any, ...]:
    """onnxruntime's signed histogram of tensor ``i`` with ``bins`` starting bins: (hist, edges, min, max, reach)."""
    low, high = np.float32(h.low[i]), np.float32(h.high[i])
    if h.anchor(i) == 0:  # never non-zero: np.histogram over (0, 0) widens the range to (-0.5, 0.5)
        hist = np.zeros(bins, dtype=np.int64)
        hist[bins // 2] = int(h.counts[i].sum())
        return hist, np.linspace(-0.5, 0.5, bins + 1, dtype=np.float32), low, high, np.float32(0)
    # Replay onnxruntime's growth of a ``bins``-bin histogram from the strides' reaches.
    reach, count = np.float32(h.anchor(i)), bins
    for r in h.reaches[i]:
        r = np.float32(r)
        if r > reach:
            width = 2 * reach / count
            grow = int((r - reach) // width + 1)
            reach, count = grow * width + reach, count + 2 * grow
    fine = h.counts[i]
    ratio = FINE_BINS // bins
    offsets = np.arange(len(fine)) - len(fine) // 2  # fine bin j covers [j w, (j + 1) w)
    index = np.clip(np.floor_divide(offsets, ratio) + count // 2, 0, count - 1)
    hist = np.bincount(index, weights=fine, minlength=count).round().astype(np.int64)
    return hist, np.linspace(-reach, reach, count + 1, dtype=np.float32), low, high, np.float32(reach)


def _absolute(h: Histograms, i: int) -> tuple[Any, ...]:
    """The histogram of |x| of tensor ``i`` (onnxruntime's symmetric percentile form): (hist, edges, min, max)."""
    low, high = np.float32(h.low[i]), np.float32(h.high[i])
    if h.anchor(i) == 0:
        hist = np.zeros(FINE_BINS // 2, dtype=np.int64)
        hist[0] = int(h.counts[i].sum())
        return hist, np.linspace(-0.5, 0.5, len(hist) + 1, dtype=np.float32), low, high
    fine = h.counts[i]
    half = len(fine) // 2
    hist = fine[half:] + fine[:half][::-1]
    return hist, np.linspace(0, h.reach[i], half + 1, dtype=np.float32), low, high


def method_histograms(h: Histograms, *, method: str, symmetric: bool) -> dict[str, tuple[Any, ...]]:
    """Each tensor's histogram as onnxruntime's ``method`` calibrator would have built it (its histogram_dict)."""
    if method == "percentile" and symmetric:
        return {name: _absolute(h, i) for i, name in enumerate(h.names)}
    return {name: _signed(h, i, _BINS[method]) for i, name in enumerate(h.names)}


def histogram_ranges(
    prepared: Path,
    batches: list[dict[str, np.ndarray]],
    cache: Path,
    *,
    method: str,
    symmetric: bool,
    percentile: float,
    stride: int,
    store: Path | None = None,
) -> None:
    """Calibrate ``prepared`` with onnxruntime's ``method`` thresholds and write its calibration cache to ``cache``.

    ``batches``: one input feed per calibration image, counted ``stride`` images at a time. ``store``: a file
    (:data:`STORE` in the calibration folder) the fine histograms are read from when they were counted for this
    model and these images, and written to otherwise.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, TensorsData, save_tensors_data

    key = _key(prepared, batches, stride)
    histograms = Histograms.load(store, key) if store is not None and store.is_file() else None
    if histograms is None:
        histograms = collect_histograms(prepared, batches, stride=stride, key=key)
        if store is not None:
            histograms.save(store)
    collector = HistogramCollector(
        method=method,
        symmetric=symmetric,
        num_bins=_BINS[method],
        num_quantized_bins=_QUANTIZED_BINS,
        percentile=percentile,
        scenario="same",
    )
    collector.histogram_dict = method_histograms(histograms, method=method, symmetric=symmetric)
    methods = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    with prints_muted():
        ranges = TensorsData(methods[method], collector.compute_collection_result())
    save_tensors_data(ranges, cache)
