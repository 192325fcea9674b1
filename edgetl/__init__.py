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


def __getattr__(name: str) -> Any:
    # The bench package, callable: edgetl.bench("runs/line3", threads=2) measures a run again (edgetl.bench.run).
    # Imported on first use, so `import edgetl.runtime` on a line PC loads nothing of the build side.
    if name == "bench":
        import edgetl.bench

        return edgetl.bench
    raise AttributeError(f"module 'edgetl' has no attribute {name!r}")


__all__ = ["__version__", "bench", "build"]
