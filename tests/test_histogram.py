"""Histogram calibration counted image by image gives onnxruntime's own ranges, stride for stride."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.quantize.histogram import histogram_ranges

pytest.importorskip("onnxruntime")


def _model(path: Path) -> None:
    """Conv -> ReLU -> Conv -> Add with a skewed, wide-tailed input, so ranges grow across strides."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {
        "w0": rng.normal(0, 0.7, (4, 1, 3, 3)).astype(np.float32),
        "w1": rng.normal(0, 0.5, (4, 4, 1, 1)).astype(np.float32),
        "shift": np.full((1, 4, 1, 1), -0.3, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1"),
        helper.make_node("Add", ["c1", "shift"], ["out"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 12, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 12, 12])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _feeds(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    # Later images reach further, so both the signed and the absolute histograms grow stride by stride.
    return [{"input": (rng.standard_t(3, (1, 1, 12, 12)) * (1 + i / 8)).astype(np.float32)} for i in range(n)]


class _Reader:
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._items = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def _onnxruntime_ranges(model: Path, feeds: list, tmp: Path, *, method: str, symmetric: bool, stride: int) -> dict:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    calibrator = create_calibrator(
        model,
        list(set(QLinearOpsRegistry) | set(QDQRegistry)),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method={"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method],
        extra_options={"symmetric": symmetric, "percentile": 99.9},
    )
    for start in range(0, len(feeds), stride):
        calibrator.collect_data(_Reader(feeds[start : start + stride]))
    return {name: tuple(float(v) for v in r.range_value) for name, r in calibrator.compute_data().items()}


@pytest.mark.parametrize(("method", "symmetric"), [("entropy", False), ("percentile", False), ("percentile", True)])
def test_ranges_match_onnxruntime_calibrator_stride_for_stride(tmp_path, method, symmetric):
    model = tmp_path / "tiny.onnx"
    _model(model)
    feeds = _feeds(40)  # strides of 16, 16 and 8 images
    expected = _onnxruntime_ranges(model, feeds, tmp_path, method=method, symmetric=symmetric, stride=16)
    cache = tmp_path / "ranges.json"
    histogram_ranges(model, feeds, cache, method=method, symmetric=symmetric, percentile=99.9, stride=16)
    from onnxruntime.quantization.calibrate import load_tensors_data

    got = {name: tuple(float(v) for v in r.range_value) for name, r in load_tensors_data(cache).items()}
    assert set(got) == set(expected) and len(expected) >= 4
    for name, (low, high) in expected.items():
        span = max(high - low, 1e-6)
        # The same bins up to float rounding of their edges (a grown histogram's edges are arange-d there,
        # linspace-d here): a value on an edge may change bins, moving a threshold by about a bin (1/2048).
        assert abs(got[name][0] - low) <= 1e-3 * span and abs(got[name][1] - high) <= 1e-3 * span, name


def test_one_count_serves_every_method_and_is_kept_per_model_and_images(tmp_path, monkeypatch):
    from onnxruntime.quantization.calibrate import load_tensors_data

    from edgetl.quantize import histogram

    model = tmp_path / "tiny.onnx"
    _model(model)
    feeds = _feeds(40)
    counted = []
    collect = histogram.collect_histograms
    monkeypatch.setattr(histogram, "collect_histograms", lambda *a, **k: counted.append(1) or collect(*a, **k))
    store = tmp_path / "calibration" / histogram.STORE
    store.parent.mkdir()
    for method, symmetric in [("percentile", False), ("entropy", False), ("percentile", True)]:
        expected = _onnxruntime_ranges(model, feeds, tmp_path, method=method, symmetric=symmetric, stride=16)
        cache = tmp_path / f"{method}-{symmetric}.json"
        histogram_ranges(
            model, feeds, cache, method=method, symmetric=symmetric, percentile=99.9, stride=16, store=store
        )
        got = {name: tuple(float(v) for v in r.range_value) for name, r in load_tensors_data(cache).items()}
        for name, (low, high) in expected.items():
            span = max(high - low, 1e-6)
            assert abs(got[name][0] - low) <= 1e-3 * span and abs(got[name][1] - high) <= 1e-3 * span, name
    assert len(counted) == 1

    # Other images: counted again (the store is keyed by model and images), and the store now holds those.
    histogram_ranges(
        model, _feeds(24), tmp_path / "other.json", method="entropy", symmetric=False, percentile=99.9, stride=16,
        store=store,
    )  # fmt: skip
    assert len(counted) == 2
    # A damaged store (not an archive, or one cut short) is counted again and replaced, not an error.
    for damaged in (b"not an npz", store.read_bytes()[:200]):
        store.write_bytes(damaged)
        histogram_ranges(
            model, feeds, tmp_path / "again.json", method="entropy", symmetric=False, percentile=99.9, stride=16,
            store=store,
        )  # fmt: skip
    assert len(counted) == 4
    assert histogram.Histograms.load(store, histogram._key(model, feeds, 16)) is not None


def test_tensor_that_is_zero_until_a_later_stride_matches_onnxruntime(tmp_path):
    """Tensors that stay at 0 for a whole first stride (black frames): onnxruntime anchors its bins at the first
    non-zero reach."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    model = tmp_path / "tiny.onnx"
    _model(model)
    feeds = [{"input": np.zeros((1, 1, 12, 12), np.float32)} for _ in range(16)] + _feeds(24)
    # Percentile only: entropy's search is quadratic in the bins, which grow a hundredfold here (in both).
    for symmetric in (False, True):
        expected = _onnxruntime_ranges(model, feeds, tmp_path, method="percentile", symmetric=symmetric, stride=16)
        cache = tmp_path / f"{symmetric}.json"
        histogram_ranges(model, feeds, cache, method="percentile", symmetric=symmetric, percentile=99.9, stride=16)
        got = {name: tuple(float(v) for v in r.range_value) for name, r in load_tensors_data(cache).items()}
        for name, (low, high) in expected.items():
            span = max(high - low, 1e-6)
            assert abs(got[name][0] - low) <= 1e-3 * span and abs(got[name][1] - high) <= 1e-3 * span, name
