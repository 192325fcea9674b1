"""Histogram calibration (entropy, percentile) through onnxruntime's calibrators, counted image by image.

onnxruntime's HistogramCollector stacks each stride of activations, flattens the stack (two copies of every
activation of 16 images) and, once a tensor's range has grown, counts it against an explicit edge array, which
numpy does by sorting. On 300 MobileNetV2 images that was 50-75 s, most of it copying and sorting. The collector
here keeps onnxruntime's histograms and its range-growing rule (so its percentile and entropy thresholds, and its
calibration cache, are reused as they are), but counts each image's activations in place, on uniform bins.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.quantize.calibration import Feeds

__all__ = ["histogram_ranges"]


def _parts(arrays: Any) -> list[np.ndarray]:
    """One flat view per image of a stride's activations (no copies for contiguous outputs)."""
    items = arrays if isinstance(arrays, list) else [arrays]
    return [np.ravel(np.asarray(a)) for a in items]


def _extremes(parts: list[np.ndarray]) -> tuple[Any, Any]:
    """NaN-ignoring min and max over every part, as arrays of the parts' dtype (0 when all are empty)."""
    filled = [p for p in parts if p.size]
    if not filled:
        zero = np.array(0, dtype=parts[0].dtype if parts else np.float32)
        return zero, zero
    return min(np.nanmin(p) for p in filled), max(np.nanmax(p) for p in filled)


def _counts(parts: list[np.ndarray], bins: int, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
    """np.histogram of the concatenated parts on ``bins`` uniform bins over [lo, hi], summed part by part."""
    total: np.ndarray | None = None
    edges: np.ndarray | None = None
    for part in parts or [np.zeros(0, dtype=np.float32)]:
        counts, edges = np.histogram(part, bins, range=(lo, hi))
        total = counts if total is None else total + counts
    assert total is not None and edges is not None
    return total, edges


def _collector_class() -> type:
    from onnxruntime.quantization.calibrate import HistogramCollector

    class PartwiseCollector(HistogramCollector):
        """onnxruntime's HistogramCollector, counting each image's activations in place."""

        def collect_value(self, name_to_arr: dict[str, Any]) -> None:
            # Signed histogram over [-t, t] (entropy; percentile without symmetric ranges). When a later stride
            # exceeds t, the histogram grows by whole bins on both sides, so earlier counts keep their bins.
            for tensor, arrays in name_to_arr.items():
                parts = _parts(arrays)
                low, high = _extremes(parts)
                reach = np.array(max(abs(low), abs(high)), dtype=np.asarray(low).dtype)
                entry = self.histogram_dict.get(tensor)
                if entry is None:
                    hist, edges = _counts(parts, self.num_bins, -reach, reach)
                    self.histogram_dict[tensor] = (hist, edges, low, high, reach)
                    continue
                old, old_edges, old_low, old_high, old_reach = entry
                if reach <= old_reach:
                    hist, _ = _counts(parts, len(old), -old_reach, old_reach)
                    hist, edges, new_reach = hist + old, old_edges, old_reach
                elif old_reach == 0:
                    hist, edges = _counts(parts, len(old), -reach, reach)
                    hist, new_reach = hist + old, reach
                else:
                    width = 2 * old_reach / len(old)
                    grow = int((reach - old_reach) // width + 1)
                    new_reach = grow * width + old_reach
                    hist, edges = _counts(parts, len(old) + 2 * grow, -new_reach, new_reach)
                    hist[grow : len(hist) - grow] += old
                self.histogram_dict[tensor] = (hist, edges, min(old_low, low), max(old_high, high), new_reach)

        def collect_absolute_value(self, name_to_arr: dict[str, Any]) -> None:
            # Histogram of |x| (percentile with symmetric ranges): bins of the first stride's width, appended on
            # the right when a later stride reaches further.
            for tensor, arrays in name_to_arr.items():
                signed = _parts(arrays)
                low, high = _extremes(signed)
                parts = [np.abs(p) for p in signed]
                _, reach = _extremes(parts)
                entry = self.histogram_dict.get(tensor)
                if entry is None:
                    floor, _ = _extremes(parts)
                    lo, hi = (floor, reach) if floor < reach else (floor - 0.5, reach + 0.5)
                    hist, edges = _counts(parts, self.num_bins, lo, hi)
                    self.histogram_dict[tensor] = (hist, edges.astype(parts[0].dtype), low, high)
                    continue
                old, old_edges, old_low, old_high = entry
                if reach > old_edges[-1]:
                    width = old_edges[1] - old_edges[0]
                    extra = np.arange(old_edges[-1] + width, reach + width, width)
                    old_edges = np.hstack((old_edges, extra)).astype(old_edges.dtype)
                hist, _ = _counts(parts, len(old_edges) - 1, old_edges[0], old_edges[-1])
                hist[: len(old)] += old
                self.histogram_dict[tensor] = (hist, old_edges, min(old_low, low), max(old_high, high))

    return PartwiseCollector


def histogram_ranges(
    prepared: Path,
    batches: list[dict[str, np.ndarray]],
    cache: Path,
    *,
    method: str,
    symmetric: bool,
    percentile: float,
    stride: int,
) -> None:
    """Calibrate ``prepared`` with onnxruntime's ``method`` calibrator and write its calibration cache to ``cache``.

    The same tensors, options and strides as ``quantize_static`` would use; only the counting differs (see the
    module's docstring). ``batches``: one input feed per calibration image.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    methods = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="edgetl-calib-") as tmp:
        calibrator = create_calibrator(
            prepared,
            list(set(QLinearOpsRegistry) | set(QDQRegistry)),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=methods[method],
            extra_options={"symmetric": symmetric, "percentile": percentile},
        )
        calibrator.collector = _collector_class()(
            method=calibrator.method,
            symmetric=calibrator.symmetric,
            num_bins=calibrator.num_bins,
            num_quantized_bins=calibrator.num_quantized_bins,
            percentile=calibrator.percentile,
            scenario=calibrator.scenario,
        )
        for start in range(0, len(batches), stride):
            calibrator.collect_data(Feeds(batches[start : start + stride]))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache)
