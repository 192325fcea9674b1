"""Names that become paths, and writes that must stay inside their run or bundle folder.

A run name, a profile name or a precision becomes a folder (``runs/<name>/targets/<profile>/<precision>``), so each
is held to one rule: letters, digits, ``_``, ``-`` and ``.``, not starting with a dot (which refuses ``.``, ``..``,
hidden names and separators). Class names may be any text (they are folder names of an ImageFolder already), but
never a path: no separator, no ``.`` or ``..``, no control character.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from edgetl.errors import EdgetlError
from edgetl.files import is_inside

NAME_RULE = "letters, digits, '_', '-' and '.', not starting with '.'"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class UnsafePathError(EdgetlError, ValueError):
    """A name that would become a path outside its folder, or a write that would leave its run or bundle."""


def check_name(value: str, *, what: str) -> str:
    """Return ``value`` when it is usable as a folder name (run, profile, precision); raise otherwise."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise UnsafePathError(
            f"{what} {value!r} cannot be used: it becomes a folder name, so it may only hold {NAME_RULE} "
            "(at most 128 characters)"
        )
    return value


def _name(value: str) -> str:
    return check_name(value, what="name")


# A pydantic field type: ``name: PlainName``.
PlainName = Annotated[str, AfterValidator(_name)]


def class_name_problem(label: str) -> str | None:
    """Why a class name cannot be written as a folder or a label-file line, or None when it can."""
    if label in {"", ".", ".."} or label != label.strip():
        return "it is empty, '.' or '..', or starts or ends with a space"
    if any(ch in label for ch in "/\\;") or any(unicodedata.category(ch).startswith("C") for ch in label):
        return "it holds a path separator, ';' (the DeepStream label separator) or a control character"
    return None


def inside(root: Path, *parts: str) -> Path:
    """``root / parts`` after checking that it stays inside ``root`` (symbolic links followed).

    Raises:
        UnsafePathError: a part is absolute or ``..``, or a symbolic link on the way leads out of ``root``.
    """
    root = Path(root)
    for part in parts:
        pure = Path(part)
        if pure.is_absolute() or ".." in pure.parts:
            raise UnsafePathError(f"{part!r} would leave {root}; edgetl only writes inside its run or bundle folder")
    path = root.joinpath(*parts)
    if not is_inside(path, root):
        raise UnsafePathError(
            f"{path} leads outside {root} (to {path.resolve()}, through a symbolic link); edgetl only writes inside "
            "its run or bundle folder",
            hint=f"replace the link by a real folder, or move the whole run folder: {root}",
        )
    return path


def escaping_links(root: Path) -> list[Path]:
    """Symbolic links below ``root`` (not followed) whose target lies outside it: a write through one would leave."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if path.is_symlink() and not is_inside(path, root):
                found.append(path)
    return sorted(found)
