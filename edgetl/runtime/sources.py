"""What ``edgetl predict`` reads: image files, folders of them, and lists of them (a CSV manifest or a text file)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgetl.errors import EdgetlError
from edgetl.runtime.preprocess import IMAGE_EXTENSIONS

LIST_EXTENSIONS = frozenset({".csv", ".txt", ".lst"})


class SourceError(EdgetlError, ValueError):
    """A list of images that cannot be read; the message names the file."""


def is_image_name(path: Path) -> bool:
    """An image file name edgetl reads (by extension), not hidden (a camera's temporary file)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_files(folder: Path, *, recursive: bool = True) -> list[Path]:
    """Every image file in ``folder`` (hidden ones skipped), sorted by path."""
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in pattern if is_image_name(p) and p.is_file() and not _hidden(p, folder))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def listed_images(path: Path) -> list[Path]:
    """The images a list file names, relative to the list's folder.

    A ``.csv`` is a manifest with a ``path`` column (the data manifest's format; other columns are ignored);
    a ``.txt`` / ``.lst`` names one image per line (blank lines and ``#`` comments skipped).
    """
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path} cannot be read as a list of images ({exc}).") from exc
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "path" not in rows[0]:
            raise SourceError(f"{path} has no 'path' column; a manifest needs columns path[,label,...].")
        names = [row["path"].strip() for row in rows if (row.get("path") or "").strip()]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [Path(name) if Path(name).is_absolute() else base / name for name in names]


def expand_sources(paths: Sequence[Path]) -> Iterator[Path]:
    """Image paths from the command line's PATH arguments, in the order given.

    A folder gives its images (recursively, sorted), a list file its entries, anything else is taken as an
    image: a missing or unreadable one becomes a row with an error, not a stop.
    """
    for path in paths:
        if path.is_dir():
            yield from image_files(path)
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            yield from listed_images(path)
        else:
            yield path
