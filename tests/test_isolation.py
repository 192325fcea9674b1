"""Nothing in a run folder changes which code runs: bench workers start isolated, outside the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hostile import invoke

from edgetl.bench.harness import worker_command

PLANT = """
import pathlib
pathlib.Path({marker!r}).write_text("imported from the run folder")
raise ImportError("planted module")
"""


def test_a_module_planted_in_the_run_folder_is_never_imported(run_copy, tmp_path: Path, monkeypatch):
    copy, outside = run_copy
    marker = tmp_path / "planted-ran"
    for folder in (copy, copy / "bench", copy / "targets" / "cpu" / "int8", copy / "targets" / "cpu"):
        for name in ("numpy.py", "onnxruntime.py", "sitecustomize.py"):
            (folder / name).write_text(PLANT.format(marker=str(marker)))
    (copy / "edgetl").mkdir()
    (copy / "edgetl" / "__init__.py").write_text(PLANT.format(marker=str(marker)))
    monkeypatch.chdir(copy)
    before = outside()
    result = invoke(["bench", copy, "--target", "cpu", "--iterations", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert outside() == before


def test_the_worker_import_path_holds_nothing_from_the_run(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    probe = tmp_path / "probe.json"
    command = worker_command(tmp_path / "request.json", untrusted=run)
    assert command[1] == "-I"
    # Run the worker's start-up line with a probe instead of the worker.
    start = command[3].split("; from edgetl")[0]
    code = f"{start}; import json, os; json.dump([sys.path, os.getcwd()], open({str(probe)!r}, 'w'))"
    subprocess.run([sys.executable, "-I", "-c", code, command[4]], cwd=run, check=True, env={"PYTHONPATH": str(run)})
    path, _ = json.loads(probe.read_text())
    assert all(entry and not entry.startswith(str(run)) for entry in path)
    import edgetl

    assert str(Path(edgetl.__file__).resolve().parent.parent) == path[0]
