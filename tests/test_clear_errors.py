"""Every failure a user can meet is one message naming the file and the fix, exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hostile import assert_clear_error, invoke

from edgetl.files import sha256_file


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _drop_recorded_checkpoint_hash(run: Path) -> None:
    """So the checkpoint is loaded (and refused by the loader) rather than refused by its hash first."""
    meta = json.loads((run / "train" / "meta.json").read_text())
    meta.pop("checkpoint_sha256")
    (run / "train" / "meta.json").write_text(json.dumps(meta))


def test_a_truncated_checkpoint(run_copy):
    copy, outside = run_copy
    checkpoint = copy / "train" / "model.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:2000])
    before = outside()
    result = invoke(["bench", copy, "--target", "cpu"])
    assert_clear_error(result, str(checkpoint), f"edgetl train {copy}")
    _drop_recorded_checkpoint_hash(copy)
    for args in (["export", copy], ["bench", copy, "--target", "cpu"]):
        assert_clear_error(invoke(args), str(checkpoint), "not a loadable edgetl checkpoint", "edgetl train")
    assert outside() == before


def test_a_checkpoint_whose_pickle_would_run_code(run_copy, tmp_path: Path):
    copy, outside = run_copy
    evil = _RunsCode()
    evil.marker = str(tmp_path / "pwned")
    torch.save({"format": "edgetl-checkpoint-v1", "state_dict": {}, "meta": {"x": evil}}, copy / "train" / "model.pt")
    _drop_recorded_checkpoint_hash(copy)
    before = outside()
    for args in (["export", copy], ["bench", copy, "--target", "cpu"]):
        result = invoke(args)
        assert_clear_error(result, str(copy / "train" / "model.pt"), "weights_only=True", "edgetl train")
    assert not (tmp_path / "pwned").exists()
    assert outside() == before


@pytest.mark.parametrize(
    ("target", "name"), [("cpu", "model.onnx"), ("intel-cpu", "model.bin"), ("intel-cpu", "model.xml")]
)
def test_a_truncated_compiled_model_whose_record_was_rewritten_to_match(run_copy, target: str, name: str):
    copy, outside = run_copy
    folder = copy / "targets" / target / "fp32"
    model = folder / name
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    before = outside()
    assert_clear_error(invoke(["bench", copy, "--target", target]), str(model), "artifact.json", "edgetl compile")
    record = json.loads((folder / "artifact.json").read_text())
    record["files"][name] = sha256_file(model)
    (folder / "artifact.json").write_text(json.dumps(record))
    result = invoke(["bench", copy, "--target", target])
    assert_clear_error(result, str(folder), "edgetl compile")
    assert outside() == before


@pytest.mark.parametrize("text", ['{"profile": "cpu", "back', "[1, 2]", '{"profile": 1}', ""])
def test_an_invalid_artifact_record(run_copy, text: str):
    copy, outside = run_copy
    record = copy / "targets" / "cpu" / "fp32" / "artifact.json"
    record.write_text(text)
    before = outside()
    assert_clear_error(invoke(["bench", copy, "--target", "cpu"]), str(record))
    assert outside() == before


@pytest.mark.parametrize("text", ['{"kind": "edgetl-bundle", "fil', "[]", '{"kind": "edgetl-bundle"}'])
def test_a_truncated_bundle_manifest(tmp_path: Path, text: str):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(text)
    for command in ("verify", "compile", "bench"):
        assert_clear_error(invoke([command, bundle]), str(bundle / "manifest.json"), "copy the bundle again")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("backend: [onnxruntime\n  x: : :", "not valid YAML"),
        ("- backend\n- onnxruntime\n", "must hold a mapping"),
        ("just words", "must hold a mapping"),
        ("backend: tpu\n", "backend"),
    ],
)
def test_a_malformed_or_list_typed_profile(run_copy, tmp_path: Path, text: str, says: str, image_folder: Path):
    copy, outside = run_copy
    profile = tmp_path / "mine.yaml"
    profile.write_text(text)
    before = outside()
    assert_clear_error(invoke(["compile", copy, "--target", profile]), str(profile), says, "edgetl targets")
    result = invoke(["build", "--data", image_folder, "--target", profile, "--runs-dir", tmp_path / "runs"])
    assert_clear_error(result, str(profile), says)
    assert outside() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda a: a.pop("latency_ms"), "latency_ms"),
        (lambda a: a["metrics"].pop("accuracy"), "metrics.accuracy"),
        (lambda a: a.pop("target"), "target"),
        (lambda a: a["latency_ms"].__setitem__("p50", "fast"), "latency_ms.p50"),
    ],
)
def test_a_report_with_missing_fields_in_compare(run_copy, tmp_path: Path, change, field: str):
    copy, _ = run_copy
    report = json.loads((copy / "report.json").read_text())
    change(report["artifacts"][0])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(report))
    result = invoke(["compare", copy, other])
    assert_clear_error(result, str(other), f"artifacts.0.{field}", "edgetl bench")


def test_data_check_out_pointing_at_an_existing_file(image_folder: Path, tmp_path: Path):
    taken = tmp_path / "notes.txt"
    taken.write_text("a user's notes")
    for out in (taken, taken / "sub"):
        result = invoke(["data", "check", image_folder, "--out", out])
        assert_clear_error(result, str(taken), "is a file, not a folder", "give a folder path")
    assert taken.read_text() == "a user's notes"


@pytest.mark.parametrize(
    ("record", "text", "command"),
    [
        ("train/meta.json", "{}", "calibrate"),
        ("train/meta.json", '{"classes": ["a"]}', "compile"),
        ("data/dataset.json", "{}", "calibrate"),
        ("data/dataset.json", "[]", "export"),
        ("data/split.csv", "a,b\n1,2\n", "calibrate"),
        ("data/split.csv", "path,label,split,group,slice,sha256\n/x.png,elsewhere,train,,,00\n", "export"),
        ("export/parity.json", "[]", "compile"),
    ],
)
def test_a_damaged_run_record(run_copy, record: str, text: str, command: str):
    copy, outside = run_copy
    (copy / record).write_text(text)
    before = outside()
    args = [command, copy, *(["--target", "cpu"] if command == "compile" else [])]
    assert_clear_error(invoke(args), str(copy / Path(record).parent), "edgetl")
    assert outside() == before


def test_ctrl_c_is_one_line_with_the_command_that_continues(run_copy, monkeypatch):
    copy, _ = run_copy
    import edgetl.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(edgetl.pipeline, "stage_train", interrupted)
    result = invoke(["train", copy])
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"interrupted: edgetl train stopped; finished artifacts are kept and nothing is left "
                     f"half-written. To continue: edgetl train {copy} --resume"]  # fmt: skip
    monkeypatch.setattr(edgetl.pipeline, "stage_export", interrupted)
    result = invoke(["export", copy])
    assert result.exit_code == 130 and result.output.strip().endswith(f"To continue: edgetl export {copy}")
