"""Watch a folder that a camera's software drops images into: each new file once, and never half-written.

A file is handed on when its size and modification time have not changed for ``settle`` seconds (and it is not
empty). A file that still fails to decode then (a writer that pauses mid-file) is tried again when it next looks
settled, until ``retry_for`` seconds after it first appeared; only then does it become an error row. Hidden files
and other extensions (``.tmp``, ``.part``: the write-then-rename hand-off) are ignored until renamed. Polling, not
inotify: it works the same on network shares, where camera PCs often write.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgetl.errors import MissingInputError
from edgetl.runtime.sources import is_image_name


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    unchanged_since: float
    first_seen: float


class FolderWatch:
    """New image files of one folder (not its subfolders), each handed out once it has settled."""

    def __init__(
        self,
        folder: Path,
        *,
        settle: float = 0.5,
        poll: float = 0.2,
        retry_for: float = 10.0,
        include_existing: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not Path(folder).is_dir():
            raise MissingInputError(f"--watch {folder}: no such folder; create it or point at the camera's folder.")
        self.folder = Path(folder)
        self.settle, self.poll, self.retry_for = settle, poll, retry_for
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._done: set[str] = set() if include_existing else set(self._names())
        self.last_activity = clock()

    def _names(self) -> list[str]:
        with os.scandir(self.folder) as entries:
            return [e.name for e in entries if is_image_name(Path(e.name)) and e.is_file()]

    def scan(self) -> list[Path]:
        """One look at the folder: the files that have settled since the last look, sorted by name."""
        now = self._clock()
        ready = []
        for name in sorted(self._names()):
            if name in self._done:
                continue
            try:
                stat = (self.folder / name).stat()
            except FileNotFoundError:  # renamed or removed between listing and stat
                self._pending.pop(name, None)
                continue
            seen = self._pending.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._pending[name] = _Pending(stat.st_size, stat.st_mtime_ns, now, seen.first_seen if seen else now)
                self.last_activity = now
                continue
            if stat.st_size > 0 and now - seen.unchanged_since >= self.settle:
                ready.append(self.folder / name)
        return ready

    def done(self, path: Path) -> None:
        """The file was handled (a prediction or, finally, an error row): never hand it out again."""
        self._done.add(path.name)
        self._pending.pop(path.name, None)
        self.last_activity = self._clock()

    def retry_later(self, path: Path) -> bool:
        """The file failed to decode: True when it is young enough to be tried again once it settles anew."""
        seen = self._pending.get(path.name)
        now = self._clock()
        if seen is None or now - seen.first_seen >= self.retry_for:
            return False
        seen.unchanged_since = now
        self.last_activity = now
        return True

    def files(self, *, idle_exit: float | None = None, sleep: Callable[[float], None] = time.sleep) -> Iterator[Path]:
        """Settled new files as they come; ends after ``idle_exit`` seconds without any change (None: never)."""
        while True:
            ready = self.scan()
            yield from ready
            if idle_exit is not None and not ready and self._clock() - self.last_activity >= idle_exit:
                return
            if not ready:
                sleep(self.poll)
