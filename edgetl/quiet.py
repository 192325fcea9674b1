"""Third-party noise (nncf's INFO lines, torch's CUDA_HOME warning, onnxruntime's calibration prints) stays off the
terminal unless ``--verbose``.

The CLI calls :func:`quiet_third_party` once; library users keep their own logging untouched. nncf sets its logger
up when it is imported, so the backend that imports it calls :func:`after_nncf_import`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator

_state = {"quiet": False}
# Loggers that are plain ``logging.getLogger(__name__)`` ones, safe to configure before their library is imported.
_PLAIN_LOGGERS = ("torch.utils.cpp_extension",)


def quiet_third_party(*, verbose: bool) -> None:
    """Silence known third-party chatter (warnings and INFO lines) unless ``verbose``."""
    _state["quiet"] = not verbose
    if verbose:
        return
    for name in _PLAIN_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*CUDA_HOME.*")
    if "nncf" in sys.modules:
        after_nncf_import()


def after_nncf_import() -> None:
    """Lower nncf's own logger to warnings when the CLI runs quiet (call right after ``import nncf``)."""
    if not _state["quiet"]:
        return
    from nncf.common.logging.logger import set_log_level

    set_log_level(logging.WARNING)


@contextlib.contextmanager
def prints_muted() -> Iterator[None]:
    """Drop what a library prints to stdout inside the block when the CLI runs quiet (onnxruntime's histogram
    calibration prints a few lines per stride)."""
    if not _state["quiet"]:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield
