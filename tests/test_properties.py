"""Property tests: any image, manifest or config gives a result or a clear error, never a traceback."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgetl.config import BuildConfig, ConfigError, build_config_from_dict, load_build_config
from edgetl.data.check import inspect_image
from edgetl.data.dataset import DataError, Sample, read_manifest
from edgetl.preprocess import ImageDecodeError, PreprocessSpec, decode_image, preprocess_file

# Derandomized (the same examples every run) and no example database; EDGETL_HYPOTHESIS_EXAMPLES=1000 digs deeper.
FAST = settings(
    max_examples=int(os.environ.get("EDGETL_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    derandomize="EDGETL_HYPOTHESIS_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# mode -> numpy dtype and channel count used to build the pixels
MODES = {
    "1": (np.bool_, 1),
    "L": (np.uint8, 1),
    "LA": (np.uint8, 2),
    "P": (np.uint8, 1),
    "RGB": (np.uint8, 3),
    "RGBA": (np.uint8, 4),
    "CMYK": (np.uint8, 4),
    "YCbCr": (np.uint8, 3),
    "I;16": (np.uint16, 1),
    "I": (np.int32, 1),
    "F": (np.float32, 1),
}
FORMATS = {"png": "PNG", "tif": "TIFF", "bmp": "BMP", "jpg": "JPEG"}


@st.composite
def image_files(draw: st.DrawFn) -> tuple[bytes, str, str, np.ndarray]:
    mode = draw(st.sampled_from(sorted(MODES)))
    suffix = draw(st.sampled_from(sorted(FORMATS)))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    dtype, channels = MODES[mode]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype is np.float32:
        pixels = rng.normal(0, 1000, (height, width)).astype(np.float32)
    elif dtype is np.bool_:
        pixels = rng.integers(0, 2, (height, width)).astype(bool)
    else:
        info = np.iinfo(dtype)
        low = draw(st.sampled_from([int(info.min), 0]))
        high = min(int(info.max), 200_000) if dtype is np.int32 else int(info.max)
        pixels = rng.integers(low, high + 1, (height, width, channels), dtype=np.int64).astype(dtype)
        pixels = pixels[:, :, 0] if channels == 1 else pixels
    if mode in {"L", "I;16", "I", "F"}:
        image = Image.fromarray(pixels)
    elif mode in {"1", "P"}:
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).convert(mode)
        if mode == "P" and draw(st.booleans()):
            image.info["transparency"] = 0
    else:
        image = Image.fromarray(pixels) if mode in {"LA", "RGB", "RGBA"} else Image.fromarray(pixels[:, :, :3])
        image = image if image.mode == mode else image.convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=FORMATS[suffix])
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)
    return buffer.getvalue(), suffix, mode, pixels


@FAST
@given(image_files(), st.sampled_from([1, 3]), st.integers(4, 24), st.integers(1, 32))
def test_any_image_decodes_by_the_rule_or_is_rejected_with_a_reason(file, channels, side, min_size):
    data, suffix, mode, pixels = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x.{suffix}"
        path.write_bytes(data)
        reason, info = inspect_image(Sample(path, "a"), min_size=min_size)
        assert (reason is None) == bool(info)
        assert reason is None or (isinstance(reason, str) and reason)
        try:
            image = decode_image(path)
        except ImageDecodeError as exc:
            assert reason is not None and str(exc)
            return
        assert image.mode in {"L", "RGB"}
        if mode == "I;16" and suffix in {"png", "tif"}:
            expected = np.rint(pixels.astype(np.float64) / 257).astype(np.uint8)
            np.testing.assert_array_equal(np.asarray(image), expected)  # scaled, never clipped
        spec = PreprocessSpec.for_channels(channels, input_size=side)  # type: ignore[arg-type]
        x = preprocess_file(path, spec)
        assert x.shape == (1, channels, side, side) and x.dtype == np.float32 and np.isfinite(x).all()


@FAST
@given(st.binary(max_size=300), st.sampled_from(["png", "jpg", "tif", "bmp"]))
def test_arbitrary_bytes_with_an_image_extension_are_rejected_with_a_reason(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x.{suffix}"
        path.write_bytes(data)
        reason, _ = inspect_image(Sample(path, "a"), min_size=1)
        assert reason is None or reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
SECTIONS = ["name", "runs_dir", "targets", "data", "model", "train", "export", "calibration", "bench", "other"]
KEYS = ["root", "manifest", "seed", "epochs", "arch", "strategy", "input_size", "gray", "test_fraction", "augment"]


@st.composite
def configs(draw: st.DrawFn) -> object:
    raw = draw(
        st.dictionaries(
            st.sampled_from(SECTIONS),
            json_values | st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5),
            max_size=6,
        )
    )
    if draw(st.booleans()):
        raw["data"] = {draw(st.sampled_from(["root", "manifest"])): draw(st.text(max_size=30))}
    return raw


@FAST
@given(configs())
def test_any_config_dict_gives_a_config_or_a_config_error(raw):
    try:
        assert isinstance(build_config_from_dict(raw), BuildConfig)  # type: ignore[arg-type]
    except ConfigError as exc:
        assert "is not a valid edgetl config" in str(exc)


@FAST
@given(st.one_of(configs().map(lambda raw: yaml.safe_dump(raw)), st.text(max_size=200)))
def test_any_yaml_file_gives_a_config_or_an_error_naming_the_file(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            assert isinstance(load_build_config(path), BuildConfig)
        except ConfigError as exc:
            assert "run.yaml" in str(exc)


csv_cells = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


@FAST
@given(
    st.one_of(
        st.lists(st.lists(csv_cells, min_size=1, max_size=6), max_size=6).map(
            lambda rows: "\n".join(",".join(r) for r in [["path", "label", "split", "group"], *rows])
        ),
        st.text(max_size=200),
    ),
    st.binary(max_size=8),
)
def test_any_manifest_gives_samples_or_a_data_error_naming_it(text, tail):
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "m.csv"
        manifest.write_bytes(text.encode("utf-8") + tail)
        try:
            samples = read_manifest(manifest)
        except DataError as exc:
            assert "m.csv" in str(exc)
            return
        assert samples and all(s.label and s.split in {"", "train", "val", "test"} for s in samples)


@FAST
@given(json_values)
def test_any_artifact_json_gives_an_artifact_or_an_error_naming_it(payload):
    from edgetl.targets import Artifact

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "artifact.json").write_text(json.dumps(payload), encoding="utf-8")
        try:
            Artifact.read(Path(folder))
        except ValueError as exc:
            assert "artifact.json" in str(exc)


@pytest.mark.parametrize("text", ["path,label\n\x00a.png,x\n", "path,label\n" + "a" * 200_000 + ",x\n"])
def test_nul_bytes_and_huge_fields_in_a_manifest_are_data_errors(tmp_path: Path, text: str):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(DataError, match="m.csv"):
        read_manifest(manifest)
