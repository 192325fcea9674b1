"""One writer per run: every stage that writes holds the run's lock (``runs/<name>/.edgetl.lock``) while it runs.

The lock is an advisory ``flock`` on a file that stays in the run folder; the file names the holder (pid, host,
command, stage, start time), so a second writer is refused with who holds it. While it is held, temporary files go to a
scratch folder inside the run (:func:`edgetl.files.scratch_tempdir`). The kernel drops the lock when its
process dies, so a lock left by a killed process on this host is taken over, with a note. A lock file naming
another host is never taken over: edgetl cannot see that host's processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from edgetl.errors import EdgetlError
from edgetl.files import scratch_tempdir
from edgetl.paths import UnsafePathError, escaping_links

LOCK_FILE = ".edgetl.lock"
P = ParamSpec("P")
R = TypeVar("R")

# Locks this process holds: resolved folder -> [file descriptor, depth]. Stages called by a holder (build) nest.
_held: dict[Path, list[int]] = {}


class RunLockedError(EdgetlError, RuntimeError):
    """Another process is writing this run (or bundle) folder."""


def _command() -> str:
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in {"cli.py", "__main__.py"}:  # python -m edgetl.cli
        program = "edgetl"
    return shlex.join([program, *sys.argv[1:]])


def _holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 65536, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another edgetl process"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')} ('{holder.get('command')}', stage "
        f"{holder.get('stage')}, since {holder.get('started')})"
    )


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _open(folder: Path, stage: str) -> int:
    path = folder / LOCK_FILE
    while True:
        try:
            # O_NOFOLLOW: a lock file planted as a symbolic link must not make edgetl truncate what it points to.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunLockedError(
                    f"{path} is a symbolic link; edgetl does not write through links in a run folder",
                    hint=f"delete the link {path} and run again",
                ) from exc
            raise RunLockedError(
                f"cannot take the lock of {folder} for {stage}: {exc.strerror} ({path}); edgetl writes its results "
                "into this folder, so it must be writable",
                hint=f"make {folder} writable (e.g. chmod u+w), or copy the run to a writable place",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{folder} is being written by {_describe(holder)}; two writers would mix their results, so "
                f"this {stage} does not start",
                hint="wait until that command ends, or write to another run (--name, or a copy of the folder)",
            ) from None
        except OSError as exc:
            if exc.errno not in {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}:
                os.close(fd)
                raise
            holder = _holder(fd)  # no flock on this file system: the recorded pid decides
            if holder and holder.get("host") == socket.gethostname() and _pid_alive(holder.get("pid")):
                os.close(fd)
                raise RunLockedError(f"{folder} is being written by {_describe(holder)}.") from None
        # A releasing holder may have removed the file between our open and flock: lock the file that is there.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(folder: Path, *, stage: str, scratch: bool = True) -> Iterator[None]:
    """Hold the write lock of a run (or bundle) folder; nested calls in one process share it.

    ``scratch``: temporary files go to a scratch folder inside ``folder`` meanwhile (off for a bundle, which
    holds only the files its manifest lists).

    Raises:
        RunLockedError: another live process holds it, or a lock file names another host.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunLockedError(
            f"cannot create {folder}: {exc.strerror or exc}",
            hint="check the path (--name, runs_dir) and that its parent folder is writable",
        ) from exc
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = _open(folder, stage)
    try:
        links_out = escaping_links(folder)
        if links_out:
            raise UnsafePathError(
                f"{links_out[0]} is a symbolic link leading outside {folder} (to {links_out[0].resolve()}); edgetl "
                "only writes inside its run or bundle folder",
                hint=f"replace the link by a real file or folder ({len(links_out)} such links in {folder})",
            )
        previous = _holder(fd)
        if previous and previous.get("host") != socket.gethostname():
            raise RunLockedError(
                f"{folder / LOCK_FILE} says {_describe(previous)} writes this run; edgetl cannot see that host's "
                "processes, so it does not take the lock over",
                hint=f"if nothing runs there any more, delete {folder / LOCK_FILE} and run again",
            )
        if previous:
            print(
                f"note: taking over the lock of {folder}: {_describe(previous)} ended without releasing it "
                "(killed?); its finished artifacts are kept",
                file=sys.stderr,
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command(),
            "stage": stage,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        _held[key] = [fd, 1]
        with scratch_tempdir(folder) if scratch else contextlib.nullcontext():
            yield
    finally:
        if _held.get(key, [None])[0] == fd:
            del _held[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                # A command that failed before writing anything leaves no empty run folder behind.
                with contextlib.suppress(OSError):
                    (folder / LOCK_FILE).unlink()
                    folder.rmdir()
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _folder_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Path:
    from edgetl.config import BuildConfig
    from edgetl.run import RunDir

    values = [*args, *kwargs.values()]
    for value in values:
        if isinstance(value, RunDir):
            return value.root
    for value in values:
        if isinstance(value, BuildConfig):
            return value.run_dir
    raise TypeError("writes_run needs a RunDir or a BuildConfig argument")


def writes_run(stage: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a stage ``fn(config, run, ...)`` so that it runs holding its run's lock."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            with run_lock(_folder_of(args, kwargs), stage=stage):
                return fn(*args, **kwargs)

        return locked

    return decorate
