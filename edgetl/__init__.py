"""edgetl: fine-tune a compact backbone on inspection images, compile it for edge targets, measure it.

Library use without the CLI::

    from edgetl.config import load_build_config
    import edgetl
    report = edgetl.build(load_build_config("examples/elpv.yaml"))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def build(config: Any, *, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the whole chain (see :func:`edgetl.pipeline.build`)."""
    from edgetl.pipeline import build as _build

    return _build(config, force=force, progress=progress)


def bench(run_dir: Any, *, targets: list[str] | None = None) -> dict[str, Any]:
    """Measure a run's compiled artifacts again (see :func:`edgetl.pipeline.stage_bench`)."""
    from edgetl.pipeline import open_run, stage_bench
    from edgetl.targets.profiles import resolve_profile

    run, config = open_run(run_dir)
    profiles = [resolve_profile(t) for t in (targets or config.targets)]
    return stage_bench(config, run, profiles)


__all__ = ["__version__", "bench", "build"]
