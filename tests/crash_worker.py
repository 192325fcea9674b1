"""Child process of the crash-safety tests: runs one stage of a run over and over until it is killed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_stage_forever(run_root: str, stage: str, ready: Any, system_temp: str) -> None:
    """Open the run, signal ``ready``, then repeat ``stage`` (train, export or compile) until killed.

    ``system_temp`` stands in for the system's temporary folder, so the test sees what a killed stage leaves there.
    """
    import tempfile

    from edgetl.pipeline import stage_compile, stage_export, stage_train
    from edgetl.run import open_run
    from edgetl.targets.profiles import resolve_profile

    tempfile.tempdir = system_temp
    run, config = open_run(Path(run_root))
    ready.set()
    while True:
        if stage == "train":
            stage_train(config, run, progress=False)
        elif stage == "export":
            stage_export(config, run)
        else:
            stage_compile(config, run, resolve_profile("cpu"))
