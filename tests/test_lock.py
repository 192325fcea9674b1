"""One writer per run: a second writer is refused with who holds the lock; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hostile import assert_clear_error, invoke

from edgetl.lock import LOCK_FILE, RunLockedError, run_lock

HOLD = textwrap.dedent(
    """
    import sys
    from edgetl.lock import run_lock
    sys.argv = ["edgetl", "train", sys.argv[1]]
    with run_lock(sys.argv[2], stage="train"):
        print("held", flush=True)
        sys.stdin.read()
    """
)


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that holds the lock of ``folder`` until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_who_holds_the_lock(run_copy):
    copy, outside = run_copy
    config = (copy / "config.yaml").read_bytes()
    inside = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    holder = _holder(copy)
    try:
        before = outside()
        for args in (
            ["train", copy],
            ["export", copy],
            ["compile", copy, "--target", "cpu"],
            ["bench", copy, "--target", "cpu"],
            ["data", "split", copy],
            ["build", "--config", copy / "config.yaml", "--runs-dir", copy.parent, "--name", copy.name, "--force"],
        ):
            result = invoke(args)
            assert_clear_error(result, str(copy), f"pid {holder.pid}", socket.gethostname(), "edgetl train", "wait")
        assert outside() == before
        assert (copy / "config.yaml").read_bytes() == config
        assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != LOCK_FILE} == inside
    finally:
        holder.communicate("")
    assert json.loads((copy / LOCK_FILE).read_text() or "{}") == {}


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(run_copy):
    copy, _ = run_copy
    holder = _holder(copy)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((copy / LOCK_FILE).read_text())["pid"] == holder.pid  # the killed holder could not clean up
    result = invoke(["data", "split", copy])
    assert result.exit_code == 0, result.output
    assert "taking over the lock" in result.output and f"pid {holder.pid}" in result.output


def test_a_lock_naming_another_host_is_not_taken_over(tmp_path: Path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host", "command": "edgetl build"}))
    with pytest.raises(RunLockedError, match="another-host") as info, run_lock(tmp_path, stage="train"):
        pass
    assert "delete" in (info.value.hint or "")


def test_stages_of_one_process_nest_and_a_failed_first_command_leaves_no_folder(tmp_path: Path):
    run = tmp_path / "runs" / "new"
    with run_lock(run, stage="build"), run_lock(run, stage="train"):
        assert json.loads((run / LOCK_FILE).read_text())["stage"] == "build"
    assert not run.exists()


def test_temporary_files_of_a_locked_stage_stay_inside_its_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    run, bundle = Path("runs") / "line3", tmp_path / "bundle"  # a relative run folder, as runs_dir's default
    before = tempfile.gettempdir()
    with run_lock(run, stage="compile"):
        scratch = Path(tempfile.mkdtemp())
        assert scratch.is_absolute(), "a subprocess started elsewhere must find the paths it is given"
        assert scratch.parent.parent == run.absolute() and scratch.parent.name.startswith(".scratch.")
        with run_lock(run, stage="bench"):
            assert Path(tempfile.gettempdir()) == scratch.parent
        os.environ["EDGETL_TEST_CACHE"] = str(scratch)  # as torch pins its inductor cache folder
    assert tempfile.gettempdir() == before
    assert "EDGETL_TEST_CACHE" not in os.environ
    assert not run.exists()  # the scratch went with the stage, so the unused run folder did too
    with run_lock(bundle, stage="compile", scratch=False):  # a bundle holds only what its manifest lists
        assert tempfile.gettempdir() == before


def test_build_into_a_run_being_written_does_not_touch_it(image_folder: Path, tmp_path: Path):
    run = tmp_path / "runs" / "line3"
    holder = _holder(run)
    try:
        result = invoke(["build", "--data", image_folder, "--runs-dir", tmp_path / "runs", "--name", "line3"])
        assert_clear_error(result, str(run), f"pid {holder.pid}")
        theirs = f".scratch.{holder.pid}."  # the holder's own scratch folder
        assert [p.name for p in run.iterdir() if not p.name.startswith(theirs)] == [LOCK_FILE]
    finally:
        holder.communicate("")
    assert not run.exists()  # the holder made the folder and wrote nothing: it leaves none
