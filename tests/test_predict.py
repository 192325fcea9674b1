"""`edgetl predict`: rows and summary, bad images as rows, --fail-on-reject, refused bundles, --watch."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetl.cli import app
from edgetl.runtime import load
from edgetl.runtime.watch import FolderWatch

runner = CliRunner()


def _bundle(tiny_run, name: str = "cpu") -> Path:
    return tiny_run[1].root / "bundle" / name


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_rows_and_summary_for_files_folders_and_lists(tiny_run, tmp_path: Path):
    images = tiny_run[3]
    listed = tmp_path / "list.csv"
    listed.write_text("path,label\n" + f"{images / 'crack' / 'crack_000.png'},crack\n" + "nowhere.png,good\n")
    broken = tmp_path / "broken.png"
    broken.write_bytes((images / "good" / "good_000.png").read_bytes()[:50])
    out = tmp_path / "results.csv"
    result = runner.invoke(
        app,
        ["predict", str(_bundle(tiny_run)), str(images / "good"), str(broken), str(listed), "--precision", "int8",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 12 + 1 + 2
    assert list(rows[0])[:6] == ["path", "class", "score", "verdict", "ms", "error"]
    assert {"p_crack", "p_good"} <= set(rows[0])
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"broken.png", "nowhere.png"}
    assert "cannot decode" in errors["broken.png"] and "file not found" in errors["nowhere.png"]
    good = [r for r in rows if not r["error"]]
    assert all(r["verdict"] in ("ok", "reject") and float(r["ms"]) > 0 for r in good)
    said = " ".join(result.output.split())
    assert "int8 on onnxruntime-cpu" in said and "reject when 1 - P(good) >=" in said
    table = {m[1]: int(m[2]) for m in re.finditer(r"│ ([a-z ]+?)\s+│\s+(\d+) │", result.output)}
    assert table["total"] == 15 and table["error"] == 2
    assert table.get("ok", 0) + table.get("reject", 0) == 13
    assert table.get("class crack", 0) + table.get("class good", 0) == 13
    assert table.get("reject", 0) == sum(r["verdict"] == "reject" for r in rows)
    assert "ms per image" in said


def test_drift_windows_are_printed_with_their_verdict(tiny_run, tmp_path: Path):
    images = tiny_run[3]
    out = tmp_path / "results.csv"
    args = ["predict", str(_bundle(tiny_run)), str(images), "--out", str(out), "--drift", "--drift-window", "10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    # 24 images: two full windows; the 4 left over are too few to score.
    assert said.count("drift over 10 images:") == 2 and "drift: 2 window(s) scored" in said
    assert len(_rows(out)) == 24
    refused = runner.invoke(app, [*args[:-1], "3"])
    assert refused.exit_code == 2 and "at least 10 images" in refused.output


def test_jsonl_rows_are_the_python_apis_predictions(tiny_run, tmp_path: Path):
    images = tiny_run[3]
    out = tmp_path / "results.jsonl"
    result = runner.invoke(app, ["predict", str(_bundle(tiny_run, "intel-cpu")), str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with load(_bundle(tiny_run, "intel-cpu")) as model:
        expected = model.predict(sorted(images.rglob("*.png")))
    assert [r["path"] for r in rows] == [p.source for p in expected]
    assert [(r["class"], r["score"], r["verdict"]) for r in rows] == [(p.label, p.score, p.verdict) for p in expected]


def test_rows_go_to_stdout_without_out(tiny_run):
    images = tiny_run[3]
    result = runner.invoke(app, ["predict", str(_bundle(tiny_run)), str(images / "crack")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 12 and all(r["class"] in ("crack", "good") for r in rows)


def test_fail_on_reject_and_threshold_override(tiny_run, tmp_path: Path):
    good = tiny_run[3] / "good"
    bundle = str(_bundle(tiny_run))
    everything = runner.invoke(app, ["predict", bundle, str(good), "--threshold", "0", "--fail-on-reject"])
    assert everything.exit_code == 1 and "reject rule: 1 - P(good) >= 0" in everything.output
    nothing = runner.invoke(app, ["predict", bundle, str(good), "--threshold", "1", "--fail-on-reject"])
    assert nothing.exit_code == 0, nothing.output
    unreadable = tmp_path / "x.png"
    unreadable.write_text("not an image")
    error = runner.invoke(app, ["predict", bundle, str(unreadable), "--threshold", "1", "--fail-on-reject"])
    assert error.exit_code == 1  # an image that cannot be read never passes a scripted check
    bad = runner.invoke(app, ["predict", bundle, str(good), "--threshold", "7"])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output


def test_a_tampered_or_padded_bundle_is_refused_before_anything_runs(tiny_run, tmp_path: Path):
    images = tiny_run[3]
    copy = tmp_path / "cpu"
    shutil.copytree(_bundle(tiny_run), copy)
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    out = tmp_path / "r.csv"
    result = runner.invoke(app, ["predict", str(copy), str(images), "--precision", "int8", "--out", str(out)])
    assert result.exit_code == 2 and "model.int8.onnx differs from the bundle manifest" in result.output
    assert not out.exists()
    shutil.rmtree(copy)
    shutil.copytree(_bundle(tiny_run), copy)
    (copy / "model.onnx.backup").write_bytes(b"x")
    result = runner.invoke(app, ["predict", str(copy), str(images)])
    assert result.exit_code == 2 and "does not list" in result.output and "model.onnx.backup" in result.output


def test_predict_needs_something_to_read(tiny_run):
    result = runner.invoke(app, ["predict", str(_bundle(tiny_run))])
    assert result.exit_code == 2 and "--watch" in result.output


def _write_slowly(folder: Path, source: Path, name: str, *, pause: float) -> None:
    data = source.read_bytes()
    with open(folder / name, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        time.sleep(pause)  # a camera writer pausing mid-file
        handle.write(data[len(data) // 2 :])


def test_watch_handles_each_new_file_once_even_half_written(tiny_run, tmp_path: Path):
    images = tiny_run[3]
    camera = tmp_path / "camera"
    camera.mkdir()
    shutil.copy(images / "good" / "good_000.png", camera / "before.png")  # already there: not a new part

    def camera_software() -> None:
        time.sleep(1.0)
        _write_slowly(camera, images / "crack" / "crack_001.png", "part_1.png", pause=1.2)
        shutil.copy(images / "good" / "good_001.png", camera / ".part_2.png.tmp")  # write, then rename
        (camera / ".part_2.png.tmp").rename(camera / "part_2.png")
        (camera / "part_3.png").write_bytes(b"garbage from a broken camera")
        (camera / "notes.txt").write_text("not an image")

    writer = threading.Thread(target=camera_software)
    writer.start()
    out = tmp_path / "watch.csv"
    result = runner.invoke(
        app,
        ["predict", str(_bundle(tiny_run)), "--watch", str(camera), "--out", str(out), "--count", "3",
         "--settle", "0.3", "--retry-for", "2", "--idle-exit", "30"],
    )  # fmt: skip
    writer.join()
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [Path(r["path"]).name for r in rows] == ["part_1.png", "part_2.png", "part_3.png"]
    assert rows[0]["class"] in ("crack", "good") and not rows[0]["error"]  # the half-written file, once complete
    assert not rows[1]["error"] and "cannot decode" in rows[2]["error"]
    assert "watching" in result.output and "part_1.png" in result.output


def test_ctrl_c_ends_a_watch_with_its_summary(tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    camera = tmp_path / "camera"
    camera.mkdir()

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as the real one

    monkeypatch.setattr(FolderWatch, "files", interrupted)
    result = runner.invoke(app, ["predict", str(_bundle(tiny_run)), "--watch", str(camera)])
    assert result.exit_code == 0, result.output
    assert "watch stopped" in result.output and "total" in result.output


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_folder_watch_waits_until_a_file_settles_and_hands_it_out_once(tmp_path: Path):
    clock = _Clock()
    (tmp_path / "old.png").write_bytes(b"old")
    watch = FolderWatch(tmp_path, settle=0.5, retry_for=5.0, clock=clock)
    part = tmp_path / "part.png"
    part.write_bytes(b"")
    assert watch.scan() == []
    clock.now += 1
    assert watch.scan() == []  # empty: the writer has not started
    part.write_bytes(b"half")
    assert watch.scan() == []  # changed: wait for it to settle
    clock.now += 0.3
    assert watch.scan() == []
    clock.now += 0.3
    assert watch.scan() == [part]
    assert watch.retry_later(part)  # failed to decode, young: again once it settles anew
    assert watch.scan() == []
    clock.now += 0.6
    assert watch.scan() == [part]
    watch.done(part)
    clock.now += 1
    assert watch.scan() == []
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "frame.tmp").write_bytes(b"x")
    clock.now += 1
    assert watch.scan() == []


def test_folder_watch_gives_up_retrying_and_exits_when_idle(tmp_path: Path):
    clock = _Clock()
    watch = FolderWatch(tmp_path, settle=0.1, retry_for=2.0, clock=clock)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    watch.scan()
    clock.now += 1
    assert watch.scan() == [bad] and watch.retry_later(bad)
    clock.now += 1.5
    assert watch.scan() == [bad] and not watch.retry_later(bad)  # 2.5 s after it appeared: an error row now
    watch.done(bad)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    assert list(watch.files(idle_exit=3.0, sleep=sleep)) == []
    assert clock.now - 102.5 >= 3.0
