"""Chain of custody: each stage refuses inputs that no longer match the hashes they were recorded with."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hostile import assert_clear_error, invoke
from PIL import Image


def _flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def own_images(run_copy, tiny_run, tmp_path: Path):
    """The run copy with its split.csv pointing at a private copy of the images (so they can be edited)."""
    copy, outside = run_copy
    _, _, _, images, _ = tiny_run
    mine = tmp_path / "images"
    shutil.copytree(images, mine)
    split = copy / "data" / "split.csv"
    rows = list(csv.DictReader(io.StringIO(split.read_text())))
    for row in rows:
        row["path"] = str(mine / Path(row["path"]).relative_to(images.resolve()))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    split.write_text(buffer.getvalue())
    return copy, outside, rows


def test_a_flipped_byte_in_the_exported_onnx_is_refused_by_compile_and_bench(run_copy):
    copy, outside = run_copy
    _flip(copy / "export" / "model.onnx")
    before = outside()
    for args in (["compile", copy, "--target", "cpu"], ["bench", copy, "--target", "cpu"]):
        result = invoke(args)
        assert_clear_error(result, str(copy / "export" / "model.onnx"), "parity.json", f"edgetl export {copy}")
    assert outside() == before


def test_an_image_edited_after_the_split_is_refused_before_it_is_read(own_images):
    copy, outside, rows = own_images
    test_image = Path(next(r["path"] for r in rows if r["split"] == "test"))
    train_image = Path(next(r["path"] for r in rows if r["split"] == "train"))
    for image in (test_image, train_image):
        pixels = np.asarray(Image.open(image)).copy()
        pixels[:4, :4] = 0
        Image.fromarray(pixels).save(image)
    before = outside()
    for args, image in (
        (["bench", copy, "--target", "cpu"], test_image),
        (["train", copy], train_image),
        (["calibrate", copy], train_image),
    ):
        result = invoke(args)
        assert_clear_error(result, str(image), "split.csv", f"edgetl data split {copy}")
    assert outside() == before


def test_an_emptied_artifact_file_list_is_refused(run_copy):
    copy, outside = run_copy
    record = copy / "targets" / "cpu" / "int8" / "artifact.json"
    artifact = json.loads(record.read_text())
    artifact["files"] = {}
    record.write_text(json.dumps(artifact))
    # The swap the empty list would have hidden: another model under the INT8 name.
    shutil.copyfile(copy / "targets" / "cpu" / "fp32" / "model.onnx", copy / "targets" / "cpu" / "int8" / "model.onnx")
    before = outside()
    result = invoke(["bench", copy, "--target", "cpu"])
    assert_clear_error(result, str(record), "model.onnx", "edgetl compile")
    assert outside() == before


def test_an_artifact_compiled_from_another_onnx_is_refused(run_copy):
    copy, _ = run_copy
    record = copy / "targets" / "cpu" / "fp32" / "artifact.json"
    artifact = json.loads(record.read_text())
    artifact["source_onnx_sha256"] = "0" * 64
    record.write_text(json.dumps(artifact))
    result = invoke(["bench", copy, "--target", "cpu"])
    assert_clear_error(result, str(copy / "targets" / "cpu" / "fp32"), f"edgetl compile {copy} --target cpu")


def test_a_changed_checkpoint_is_refused_and_its_hash_is_recorded(run_copy):
    copy, outside = run_copy
    from edgetl.files import sha256_file

    meta = json.loads((copy / "train" / "meta.json").read_text())
    parity = json.loads((copy / "export" / "parity.json").read_text())
    assert meta["checkpoint_sha256"] == parity["checkpoint_sha256"] == sha256_file(copy / "train" / "model.pt")
    _flip(copy / "train" / "model.pt", 0.9)
    before = outside()
    for args in (["export", copy], ["bench", copy, "--target", "cpu"]):
        result = invoke(args)
        assert_clear_error(result, str(copy / "train" / "model.pt"), f"edgetl train {copy}")
    assert outside() == before
