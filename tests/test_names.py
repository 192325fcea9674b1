"""Names that become paths are checked, and every write stays inside its run or bundle folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hostile import assert_clear_error, file_hashes, invoke

from edgetl.bundle import BundleError, read_manifest
from edgetl.paths import UnsafePathError, inside
from edgetl.run import RunDir


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../victim", "x\\y"])
def test_a_run_name_that_is_a_path_is_refused(image_folder: Path, tmp_path: Path, name: str, monkeypatch):
    runs = tmp_path / "area" / "runs"
    runs.mkdir(parents=True)
    (tmp_path / "area" / "victim.txt").write_text("a user's file")
    monkeypatch.chdir(tmp_path / "area")  # init writes below ./runs
    before = file_hashes(tmp_path)
    for options in (["build", "--runs-dir", runs], ["init"]):
        result = invoke([*options, "--data", image_folder, "--name", name])
        assert_clear_error(result, repr(name), "becomes a folder name")
    assert file_hashes(tmp_path) == before
    assert not list(runs.iterdir())


def test_a_profile_named_like_a_path_is_refused(run_copy, tmp_path: Path):
    copy, outside = run_copy
    victim = copy.parent / "victim" / "fp32"
    victim.mkdir(parents=True)
    (victim / "notes.txt").write_text("a user's file")
    profile = tmp_path / "evil.yaml"
    profile.write_text("name: ../../victim\nbackend: onnxruntime\nprecisions: [fp32]\n")
    before = outside()
    result = invoke(["compile", copy, "--target", profile])
    assert_clear_error(result, str(profile), "'../../victim'", "becomes a folder name")
    assert outside() == before
    assert (victim / "notes.txt").read_text() == "a user's file"


def test_a_symbolic_link_out_of_the_run_is_never_written_through(run_copy, tmp_path: Path):
    copy, outside = run_copy
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(copy / "targets", elsewhere)
    shutil.rmtree(copy / "targets")
    (copy / "targets").symlink_to(elsewhere, target_is_directory=True)
    before = outside()
    result = invoke(["compile", copy, "--target", "cpu"])
    assert_clear_error(result, str(copy / "targets"), "symbolic link leading outside", "replace the link by a real")
    assert outside() == before


@pytest.mark.parametrize("where", ["bench", "train/model.pt", ".edgetl.lock", "export"])
def test_no_stage_writes_through_a_link_planted_in_the_run(run_copy, tmp_path: Path, where: str):
    copy, outside = run_copy
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("a user's file")
    target = copy / where
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    target.symlink_to(victim / "notes.txt" if "." in target.name else victim)
    before = outside()
    for args in (["export", copy], ["bench", copy, "--target", "cpu"]):
        result = invoke(args)
        assert_clear_error(result, str(target), "symbolic link", "run again" if where == ".edgetl.lock" else "link")
    assert outside() == before
    assert (victim / "notes.txt").read_text() == "a user's file"


def test_inside_refuses_dotdot_and_absolute_parts(tmp_path: Path):
    assert inside(tmp_path, "targets", "cpu") == tmp_path / "targets" / "cpu"
    for part in ("..", "../x", "/etc"):
        with pytest.raises(UnsafePathError):
            inside(tmp_path, part)
    with pytest.raises(UnsafePathError, match="profile name"):
        RunDir(tmp_path).target("../../victim", "fp32")
    with pytest.raises(UnsafePathError, match="precision"):
        RunDir(tmp_path).target("cpu", "..")


@pytest.mark.parametrize("label", ["../x", "a/b", "..", "semi;colon", "line\nbreak"])
def test_a_class_name_that_cannot_be_a_folder_is_a_data_error(tmp_path: Path, label: str):
    from conftest import make_image_folder

    images = make_image_folder(tmp_path / "images", per_class=4, size=32)
    rows = [f"good/good_{i:03d}.png,good" for i in range(4)]
    rows += [f'crack/crack_{i:03d}.png,"{label}"' for i in range(4)]
    (images / "manifest.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    result = invoke(["data", "check", images / "manifest.csv", "--out", tmp_path / "check"])
    assert_clear_error(result, "class name", "rename the class")


def test_non_ascii_class_names_still_work(tmp_path: Path):
    from edgetl.paths import class_name_problem

    assert class_name_problem("Riss (länglich)") is None
    assert class_name_problem("欠陥") is None


def _minimal_manifest(folder: Path, **changes) -> None:
    from edgetl.preprocess import PreprocessSpec
    from edgetl.targets.profiles import resolve_profile

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "r.npy", "inputs.npy"):
        (folder / name).write_bytes(b"x")
    digest = hashlib.sha256(b"x").hexdigest()
    manifest = {
        "kind": "edgetl-bundle",
        "files": {"model.onnx": digest, "r.npy": digest, "inputs.npy": digest},
        "profile": resolve_profile("jetson").model_dump(mode="json"),
        "classes": ["crack", "good"],
        "preprocess": PreprocessSpec().model_dump(mode="json"),
        "models": {"fp32": {"file": "model.onnx", "files": ["model.onnx"], "triton": "x_trt_fp32"}},
        "parity": {"inputs": "inputs.npy", "names": [], "references": {"fp32": "r.npy"}, "tolerance": {}},
    }
    for dotted, value in changes.items():
        node = manifest
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models__fp32__triton": "../../../victim"}, "becomes a folder name"),
        ({"models__fp32__files": ["../model.onnx"]}, "points outside the bundle"),
        ({"parity__inputs": "/etc/passwd"}, "points outside the bundle"),
        ({"parity__references": {"fp32": "unlisted.npy"}}, "not among the listed"),
        ({"models": {"../x": {"files": ["model.onnx"], "triton": "t"}}}, "not a valid bundle manifest"),
    ],
)
def test_bundle_manifest_paths_and_names_stay_inside_the_bundle(tmp_path: Path, change, message):
    _minimal_manifest(tmp_path / "bundle", **change)
    with pytest.raises(BundleError, match=message):
        read_manifest(tmp_path / "bundle")


def test_an_unknown_precision_of_a_bundle_is_refused(tmp_path: Path):
    _minimal_manifest(tmp_path / "bundle")
    result = invoke(["compile", tmp_path / "bundle", "--precision", "../../x"])
    assert_clear_error(result, "'../../x'", "--precision takes fp32")
