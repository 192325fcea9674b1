"""Latency and accuracy measurement of compiled artifacts.

``edgetl.bench(run_dir)`` is this package called as a function: the package and the library call share the name,
so the module itself is made callable (it forwards to :func:`run`).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any


def run(
    run_dir: Path | str,
    *,
    targets: list[str] | None = None,
    acceptance: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Measure a run's compiled artifacts again (see :func:`edgetl.bench.stage.bench_stage`); returns the report.

    ``settings`` override the run's ``bench`` config (threads, deadline_ms, max_false_reject, iterations, ...),
    ``acceptance`` its ``acceptance`` criteria (min_defect_recall, max_p99_ms, ...).
    A run folder is what is measured today; a bundle folder will be accepted here once bundles exist.
    """
    from edgetl.bench.stage import bench_stage
    from edgetl.config import AcceptanceConfig, BenchConfig, ConfigError
    from edgetl.run import open_run
    from edgetl.targets.profiles import resolve_profile

    run_folder, config = open_run(Path(run_dir))
    try:
        bench_config = BenchConfig.model_validate({**config.bench.model_dump(), **settings})
    except ValueError as exc:
        raise ConfigError(f"bench settings: {exc}") from exc
    try:
        acceptance_config = AcceptanceConfig.model_validate({**config.acceptance.model_dump(), **(acceptance or {})})
    except ValueError as exc:
        raise ConfigError(f"acceptance criteria: {exc}") from exc
    config = config.model_copy(update={"bench": bench_config, "acceptance": acceptance_config})
    profiles = [resolve_profile(t) for t in (targets or config.targets)]
    return bench_stage(config, run_folder, profiles)


class _CallableModule(types.ModuleType):
    def __call__(self, run_dir: Path | str, **kwargs: Any) -> dict[str, Any]:
        return run(run_dir, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
