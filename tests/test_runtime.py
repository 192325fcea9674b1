"""The line runtime: no training stack, the bench's verdicts, every kind of image input, runner conformance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image

from edgetl.data.dataset import load_split
from edgetl.runtime import BundleError, InputMismatchError, load, read_manifest
from edgetl.runtime.bundle import Bundle
from edgetl.runtime.drift import LARGE_SHIFT, NO_SHIFT, SHIFT

TRAINING_STACK = ("torch", "torchvision", "nncf", "sklearn", "matplotlib")


def _bundle(tiny_run, name: str = "cpu") -> Path:
    return tiny_run[1].root / "bundle" / name


def _test_samples(tiny_run):
    dataset = load_split(tiny_run[1].data)
    return dataset, dataset.split("test")


def test_runtime_and_a_prediction_need_no_training_stack(tiny_run):
    """In a process where torch, torchvision, nncf, sklearn, matplotlib (and onnx, openvino, tensorrt) cannot be
    imported, the runtime loads a bundle and predicts; it loads no build-side edgetl module either."""
    _, samples = _test_samples(tiny_run)
    blocked = (*TRAINING_STACK, "onnx", "openvino", "tensorrt")
    code = (
        "import json, sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # import fails: ImportError\n"
        "from edgetl.runtime import load\n"
        f"with load({str(_bundle(tiny_run))!r}, precision='int8') as model:\n"
        "    monitor = model.watch_drift(window=10)\n"
        f"    p = model.predict({str(samples[0].path)!r})[0]\n"
        f"    model.predict({[str(s.path) for s in samples] * 10!r}[:9])\n"
        "    drift = monitor.take_window().verdict\n"
        "edgetl = sorted(m for m in sys.modules if m.startswith('edgetl'))\n"
        "print(json.dumps({'label': p.label, 'verdict': p.verdict, 'drift': drift, 'edgetl': edgetl}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["label"] in ("crack", "good") and result["verdict"] in ("ok", "reject")
    assert result["drift"] in (NO_SHIFT, SHIFT, LARGE_SHIFT)
    allowed = {"edgetl", "edgetl.errors", "edgetl.files"}
    assert [m for m in result["edgetl"] if m not in allowed and not m.startswith("edgetl.runtime")] == []


def test_drift_on_the_line_embeds_as_the_reference_did_and_sees_a_new_lamp(tiny_run, tmp_path: Path):
    """The bundle's embedder computes, from the runtime's preprocessing, the very embeddings its reference was
    made of (the train + validation images); new parts of the kind it was trained on score no shift, the same
    kind of parts under an inverted, flat lamp score a shift with a larger MMD."""
    dataset = load_split(tiny_run[1].data)
    own = [s.path for s in dataset.split("train") + dataset.split("val")]
    same = sorted(make_image_folder(tmp_path / "same", per_class=20, size=40, seed=5).rglob("*.png"))
    lamp = []
    for i, path in enumerate(sorted(make_image_folder(tmp_path / "raw", per_class=20, size=40, seed=6).rglob("*.png"))):
        pixels = 255.0 - np.asarray(Image.open(path).convert("L"), np.float32) * 0.6
        lamp.append(tmp_path / f"lamp_{i:03d}.png")
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="L").save(lamp[-1])
    manifest = read_manifest(_bundle(tiny_run))
    assert manifest["drift"]["reference"] in manifest["files"] and manifest["drift"]["embedder"] in manifest["files"]
    with load(_bundle(tiny_run), precision="int8") as model:
        monitor = model.watch_drift(window=40)
        sample = monitor.reference.sample
        mine = np.concatenate([monitor.embed(model.prepare(p)) for p in own])
        nearest = np.sqrt(((mine[:, None, :] - sample[None, :, :]) ** 2).sum(-1)).min(1)
        assert int((nearest < 1e-3).sum()) >= len(sample), np.sort(nearest)[: len(sample)]
        labels = [p.label for p in model.predict(same)]
        quiet = monitor.take_window()
        model.predict(lamp)
        moved = monitor.take_window()
        assert monitor.take_window() is None and monitor.embedded == 80
    assert quiet is not None and moved is not None
    assert quiet.verdict == NO_SHIFT, quiet
    assert moved.verdict in (SHIFT, LARGE_SHIFT) and moved.mmd2 > quiet.mmd2, moved
    assert len(labels) == 40  # drift never changes what is predicted


def test_a_bundle_without_a_drift_reference_says_how_to_get_one(tiny_run):
    bundle = Bundle.open(_bundle(tiny_run))
    bundle.manifest = {k: v for k, v in bundle.manifest.items() if k != "drift"}
    with pytest.raises(BundleError, match="carries no drift reference") as err:
        bundle.drift_monitor(window=10)
    assert "edgetl bundle" in (err.value.hint or "")


def test_import_edgetl_imports_no_backend():
    code = (
        "import sys, edgetl\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'nncf', 'onnx', 'sklearn') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy, sorted(m for m in sys.modules if m.startswith('edgetl')))\n"
        "assert callable(edgetl.bench)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY [] ['edgetl']" in out


@pytest.mark.parametrize(("profile", "precision"), [("cpu", "fp32"), ("cpu", "int8"), ("intel-cpu", "int8")])
def test_predict_gives_the_bench_verdicts(tiny_run, profile: str, precision: str):
    """Accuracy, defect recall and false rejects of the bundle on the test images are the report's, exactly."""
    _, _, report, _, _ = tiny_run
    _, samples = _test_samples(tiny_run)
    entry = next(a for a in report["artifacts"] if a["target"] == profile and a["precision"] == precision)
    with load(_bundle(tiny_run, profile), precision=precision) as model:
        assert model.threshold == entry["threshold"]["threshold"]
        predictions = model.predict([s.path for s in samples])
    truth = np.array([s.label for s in samples])
    labels = np.array([p.label for p in predictions])
    assert float(np.mean(labels == truth)) == entry["metrics"]["accuracy"]
    rejected = np.array([p.verdict == "reject" for p in predictions])
    defect = truth != "good"
    binary = entry["metrics"]["binary"]
    assert float(rejected[defect].mean()) == binary["defect_recall"]
    assert float(rejected[~defect].mean()) == binary["false_reject"]
    assert all(p.score == pytest.approx(1 - p.probabilities["good"]) for p in predictions)
    # Image by image: the bench's arithmetic on the bench's inputs (its worker's runner, its reject rule).
    from edgetl.bench.accuracy import defect_scores
    from edgetl.data.inputs import split_inputs
    from edgetl.targets import Artifact, get_target

    artifact = Artifact.read(tiny_run[1].target(profile, precision))
    x, _, _ = split_inputs(load_split(tiny_run[1].data), model.spec, "test")
    with get_target(artifact.backend).load(artifact, threads=2) as runner:
        logits = np.concatenate([runner.infer(x[i : i + 1]) for i in range(len(x))])
    bench_verdicts = np.where(defect_scores(logits, 1) >= entry["threshold"]["threshold"], "reject", "ok")
    assert [p.verdict for p in predictions] == bench_verdicts.tolist()


def test_paths_pil_images_and_arrays_agree(tiny_run, tmp_path: Path):
    _, samples = _test_samples(tiny_run)
    path = samples[0].path
    rgb = tmp_path / "rgb.png"
    Image.open(path).convert("RGB").save(rgb)  # grey replicated: luma gives the same pixels back
    with load(_bundle(tiny_run), precision="fp32") as model:
        by_path, by_pil, by_array, by_rgb = model.predict(
            [path, Image.open(path), np.asarray(Image.open(path)), np.asarray(Image.open(rgb))]
        )
        # A 4-D uint8 array is a stack of frames (N, H, W, C).
        stack = model.predict(np.stack([np.asarray(Image.open(s.path))[:, :, None] for s in samples[:3]]))
    assert by_path.source == str(path) and by_pil.source == "<image 1>"
    for other in (by_pil, by_array, by_rgb):
        assert other.probabilities == by_path.probabilities and other.verdict == by_path.verdict
    assert [p.source for p in stack] == ["<image 0>", "<image 1>", "<image 2>"]
    assert stack[0].probabilities == by_path.probabilities


def test_bad_images_are_rows_with_errors_in_order(tiny_run, tmp_path: Path):
    _, samples = _test_samples(tiny_run)
    broken = tmp_path / "broken.png"
    broken.write_bytes(samples[0].path.read_bytes()[:60])  # truncated mid-file
    images = [samples[0].path, tmp_path / "missing.png", broken, np.zeros((4, 4), np.float32), samples[1].path]
    with load(_bundle(tiny_run)) as model:
        for predictions in (model.predict(images), list(model.predict_iter(images, workers=2))):
            assert [p.error is None for p in predictions] == [True, False, False, False, True]
            assert "file not found" in str(predictions[1].error) and "cannot decode" in str(predictions[2].error)
            assert "uint8" in str(predictions[3].error)
            assert predictions[1].verdict is None and not predictions[1].ok
            assert predictions[4].source == str(samples[1].path)


def test_folder_iterator_overlaps_decoding_and_keeps_order(tiny_run):
    images = tiny_run[3]
    with load(_bundle(tiny_run), precision="int8") as model:
        folder = list(model.predict_folder(images, workers=2))
        files = sorted(p for p in images.rglob("*.png"))
        one_by_one = model.predict(files)
    assert [p.source for p in folder] == [str(f) for f in files]
    assert [p.probabilities for p in folder] == [p.probabilities for p in one_by_one]
    assert all(p.ms >= p.infer_ms > 0 and p.decode_ms > 0 for p in folder)


def test_threshold_override_and_batch_sizes(tiny_run):
    _, samples = _test_samples(tiny_run)
    paths = [s.path for s in samples]
    with load(_bundle(tiny_run), threshold=0.0) as model:
        assert {p.verdict for p in model.predict(paths)} == {"reject"}
        assert {p.verdict for p in model.predict(paths, threshold=1.0)} == {"ok"}
        assert model.threshold == 0.0
        # The tiny run exports a dynamic batch axis (the default): batches give the same verdicts as single images.
        singles = [p.verdict for p in model.predict(paths, threshold=0.5)]
        assert [p.verdict for p in model.predict(paths, threshold=0.5, batch_size=4)] == singles
        with pytest.raises(InputMismatchError, match="batch_size 0"):
            model.predict(paths, batch_size=0)
    with pytest.raises(BundleError, match="has no fp16 model"):
        load(_bundle(tiny_run), precision="fp16")


def test_tampered_bundle_is_refused_before_anything_loads(tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import edgetl.runtime.onnxruntime as ort_runner

    def never(*args, **kwargs):
        raise AssertionError("a backend was loaded from a tampered bundle")

    monkeypatch.setattr(ort_runner.OnnxRuntimeRunner, "__init__", never)
    copy = tmp_path / "cpu"
    shutil.copytree(_bundle(tiny_run), copy)
    thresholds = json.loads((copy / "thresholds.json").read_text())
    thresholds["int8"]["threshold"] = 0.99  # a hand-edited threshold
    (copy / "thresholds.json").write_text(json.dumps(thresholds))
    with pytest.raises(BundleError, match=r"thresholds\.json differs from the bundle manifest"):
        load(copy, precision="int8")


def test_tensorrt_bundle_without_engine_says_compile_or_cpu(trt_run):
    _, run, _ = trt_run
    folder = run.root / "bundle" / "jetson-orin-nano"
    with pytest.raises(BundleError, match="edgetl compile") as info:
        load(folder, precision="int8")
    assert "cpu" in str(info.value.hint)
    with load(folder, precision="int8", device="cpu") as model:
        assert model.runtime == "onnxruntime-cpu" and model.threshold is not None
        (prediction,) = model.predict(np.full((40, 40), 150, np.uint8))
    assert prediction.label in ("crack", "good") and prediction.verdict in ("ok", "reject")


def test_reject_score_is_the_bench_arithmetic_bit_for_bit():
    from edgetl.bench.accuracy import defect_scores as bench_scores
    from edgetl.runtime.decision import defect_scores

    logits = np.random.default_rng(0).normal(scale=6, size=(500, 3)).astype(np.float32)
    for good in range(3):
        assert np.array_equal(defect_scores(logits, good), bench_scores(logits, good))
        single = np.concatenate([defect_scores(logits[i : i + 1], good) for i in range(len(logits))])
        assert np.array_equal(single, bench_scores(logits, good))


class RunnerConformance:
    """What every runner must do (NNCF-style template tests): each backend subclass names its bundle."""

    profile: str
    precision: str = "fp32"
    device: str | None = None

    @pytest.fixture
    def bundle(self, tiny_run) -> Bundle:
        return Bundle.open(_bundle(tiny_run, self.profile))

    def test_parity_inputs_give_the_reference_logits(self, bundle: Bundle):
        parity = bundle.manifest["parity"]
        inputs = np.load(bundle.folder / parity["inputs"], allow_pickle=False)
        reference = np.load(bundle.folder / parity["references"][self.precision], allow_pickle=False)
        with bundle.runner(self.precision, device=self.device) as runner:
            logits = np.concatenate([runner.infer(inputs[i : i + 1]) for i in range(len(inputs))])
        assert logits.dtype == np.float32 and logits.shape == reference.shape
        np.testing.assert_allclose(logits, reference, atol=parity["tolerance"][self.precision])

    def test_a_batch_gives_each_image_its_batch_1_logits(self, bundle: Bundle):
        # A backend may pick other kernels per batch size; the line's batch-1 answer must not depend on it.
        parity = bundle.manifest["parity"]
        inputs = np.load(bundle.folder / parity["inputs"], allow_pickle=False)[:4]
        with bundle.runner(self.precision, device=self.device) as runner:
            single = np.concatenate([runner.infer(inputs[i : i + 1]) for i in range(len(inputs))])
            batched = runner.infer(inputs)
        np.testing.assert_allclose(batched, single, atol=parity["tolerance"][self.precision])
        assert np.array_equal(batched.argmax(1), single.argmax(1))

    def test_wrong_dtype_and_shape_are_refused_with_what_it_takes(self, bundle: Bundle):
        # CPU bundles take uint8 NHWC pixels by default (export.uint8_input); TensorRT bundles float NCHW. The
        # input is per precision: one whose pixel rewrite failed its check keeps float input.
        spec = bundle.spec_of(self.precision)
        pixels = spec.takes_pixels
        dtype, shape = (np.uint8, (32, 32, 1)) if pixels else (np.float32, (1, 32, 32))
        assert spec.layout == ("NHWC" if pixels else "NCHW")
        with bundle.runner(self.precision, device=self.device) as runner:
            assert runner.input_shape == (None, *shape)  # a dynamic batch axis: the default export
            good = np.zeros((1, *shape), dtype)
            assert runner.infer(good).shape == (1, 2)
            assert runner.infer(np.zeros((4, *shape), dtype)).shape == (4, 2)
            with pytest.raises(InputMismatchError, match=f"{np.dtype(dtype)} input, not float64"):
                runner.infer(good.astype(np.float64))
            wrong = (1, 32, 32, 3) if pixels else (1, 3, 32, 32)
            wanted = r"\(N, 32, 32, 1\)" if pixels else r"\(N, 1, 32, 32\)"
            with pytest.raises(InputMismatchError, match=rf"shape {wanted}, not \({', '.join(map(str, wrong))}\)"):
                runner.infer(np.zeros(wrong, dtype))
            with pytest.raises(InputMismatchError):
                runner.infer(np.zeros((1, 32, 32), dtype))


class TestOnnxRuntimeRunner(RunnerConformance):
    profile = "cpu"


class TestOnnxRuntimeInt8Runner(RunnerConformance):
    profile = "cpu"
    precision = "int8"


class TestOpenVinoRunner(RunnerConformance):
    profile = "intel-cpu"
    precision = "fp16"


class TestOpenVinoInt8Runner(RunnerConformance):
    profile = "intel-cpu"
    precision = "int8"
