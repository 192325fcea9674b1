"""A failed --force keeps the run's record; a partial bench merges into the report; a read-only run loses nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import yaml
from hostile import assert_clear_error, file_hashes, invoke


def test_a_force_rebuild_whose_data_check_fails_keeps_the_run_as_it_was(run_copy, tiny_run, tmp_path: Path):
    copy, outside = run_copy
    _, _, _, images, _ = tiny_run
    bad = tmp_path / "bad-images"
    shutil.copytree(images, bad)
    (bad / "good" / "good_000.png").write_bytes(b"not an image")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["root"] = str(bad)
    config["train"]["epochs"] = 1
    new_config = tmp_path / "new.yaml"
    new_config.write_text(yaml.safe_dump(config))
    record = {k: v for k, v in file_hashes(copy).items() if not Path(k).name.startswith("check.")}
    before = outside()
    result = invoke(["build", "--config", new_config, "--runs-dir", copy.parent, "--name", copy.name, "--force"])
    assert_clear_error(result, "good_000.png", "cannot decode")
    assert {k: v for k, v in file_hashes(copy).items() if not Path(k).name.startswith("check.")} == record
    assert outside() == before


def test_a_partial_bench_keeps_the_other_targets_rows(run_copy):
    copy, _ = run_copy
    for target in ("intel-cpu", "cpu"):  # whatever the shared run's report holds now, two partial benches
        result = invoke(["bench", copy, "--target", target, "--iterations", "4", "--warmup", "0"])
        assert result.exit_code == 0, result.output
    first = json.loads((copy / "report.json").read_text())
    rows = {(a["target"], a["precision"]): a for a in first["artifacts"]}
    assert {t for t, _ in rows} == {"cpu", "intel-cpu"}
    result = invoke(["bench", copy, "--target", "cpu", "--iterations", "3", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    after = json.loads((copy / "report.json").read_text())
    merged = {(a["target"], a["precision"]): a for a in after["artifacts"]}
    assert set(merged) == set(rows)
    assert all(merged[k] == rows[k] for k in rows if k[0] == "intel-cpu")  # kept as measured
    assert merged["cpu", "fp32"]["latency_ms"]["iterations"] == 3  # measured again now
    # A TensorRT target cannot run on this CPU: nothing is measured and nothing is lost.
    result = invoke(["bench", copy, "--target", "jetson"])
    assert result.exit_code == 0, result.output
    again = json.loads((copy / "report.json").read_text())["artifacts"]
    assert again == after["artifacts"]


def test_a_read_only_run_is_refused_before_measuring(run_copy, monkeypatch):
    copy, outside = run_copy
    report = (copy / "report.json").read_bytes()
    real_access = os.access

    def read_only(path, mode, **kwargs):  # what a read-only mount (or chmod a-w as a normal user) answers
        return not (Path(path) == copy and mode & os.W_OK) and real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", read_only)
    before = outside()
    result = invoke(["bench", copy, "--target", "cpu"])
    assert_clear_error(result, str(copy), "not writable", "chmod u+w")
    assert "measured" not in result.output
    assert (copy / "report.json").read_bytes() == report
    assert outside() == before


def test_a_side_file_that_cannot_be_written_never_loses_the_measurements(run_copy, monkeypatch):
    copy, _ = run_copy
    created = json.loads((copy / "report.json").read_text())["created"]
    real_replace = os.replace

    def read_only_thresholds(src, dst, *args, **kwargs):
        if Path(dst).name == "threshold.json":
            raise OSError(errno.EROFS, "Read-only file system", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", read_only_thresholds)
    result = invoke(["bench", copy, "--target", "cpu", "--iterations", "3", "--warmup", "0"])
    assert_clear_error(result, "threshold.json", "Read-only file system", "files written before this one are complete")
    after = json.loads((copy / "report.json").read_text())
    assert after["created"] != created or any(a["latency_ms"]["iterations"] == 3 for a in after["artifacts"])
