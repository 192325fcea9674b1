"""Helpers of the hardening tests: a private copy of the tiny run, hashes of everything around it, CLI checks."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

runner = CliRunner()


def file_hashes(root: Path, *, exclude: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every file below ``root``, leaving out the folders in ``exclude``."""
    skip = [p.resolve() for p in exclude]
    out = {}
    for path in sorted(Path(root).rglob("*")):
        resolved = path.resolve()
        if path.is_symlink() or not path.is_file() or any(resolved.is_relative_to(s) for s in skip):
            continue
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path: Path):
    """A private copy of the tiny run (runs/tiny) and a function giving the hashes of every file around it.

    Yields (copy, outside) where ``outside()`` hashes the test's tmp folder (less the copy) and the tiny run's
    images and original run folder.
    """
    _, run, _, images, _ = tiny_run
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(run.root, copy, symlinks=True)

    def outside() -> dict[str, str]:
        return {
            **file_hashes(tmp_path, exclude=(copy,)),
            **file_hashes(images),
            **file_hashes(run.root),
        }

    return copy, outside


def invoke(args: list[str]):
    """Run the edgetl CLI in this process; returns the click result."""
    from edgetl.cli import app

    return runner.invoke(app, [str(a) for a in args])


def assert_clear_error(result, *needles: str) -> None:
    """Exit code 2, no traceback, and every needle (file name, fix) in the output."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    assert "weights_only=False" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
