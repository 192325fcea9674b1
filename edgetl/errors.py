"""One base class for every failure a user can fix: the CLI prints its message and hint and exits 2.

Each module raises a subclass that also derives from the built-in type callers used to catch before
(``ConfigError`` is a ``ValueError``, ``BackendUnavailable`` a ``RuntimeError``), so library users lose nothing.
Anything that is not an :class:`EdgetlError` is a bug: the CLI shows its traceback and says so.
"""

from __future__ import annotations


class EdgetlError(Exception):
    """A failure with a message that names the file or setting, and a ``hint`` that says how to fix it."""

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        self.hint = hint


class MissingInputError(EdgetlError, FileNotFoundError):
    """A file an earlier stage should have written (or the user should have given) is not there."""


class InvalidFileError(EdgetlError, ValueError):
    """A file edgetl wrote or reads (JSON record, checkpoint, compiled model) is damaged or not what it claims."""


class IntegrityError(EdgetlError, ValueError):
    """An input no longer matches the hash it was recorded with: edited, swapped or damaged since."""
