"""Atomic writes and content hashes: a killed run never leaves a half-written artifact.

Every artifact is written to a temporary name beside its target (``.<name>.<pid>.<random>.tmp``), fsynced and
renamed over the target. A full disk becomes :class:`DiskFullError` naming the file; a process killed mid-write
leaves only such temporary names, which :func:`remove_stale_temps` removes (the next command on a run does).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgetl.errors import EdgetlError, InvalidFileError

_CHUNK = 1 << 20
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_OLD_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.old$")


class DiskFullError(EdgetlError, OSError):
    """The disk (or quota) filled up while writing an artifact; the previous version is kept."""


class NotWritableError(EdgetlError, OSError):
    """A file cannot be written where edgetl must write it (a read-only folder, a file where a folder should be)."""


_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR}


def _not_writable(target: Path, exc: BaseException) -> NotWritableError | None:
    """The user-facing error for a write refused by the file system, or None for other failures."""
    if not isinstance(exc, OSError) or exc.errno not in _NOT_WRITABLE:
        return None
    if exc.errno in {errno.EEXIST, errno.ENOTDIR}:
        blocker = next((p for p in [target.parent, *target.parent.parents] if p.exists() and not p.is_dir()), None)
        if blocker is None:
            return None
        return NotWritableError(
            f"cannot write {target}: {blocker} is a file, not a folder",
            hint=f"give a folder path instead, or move {blocker} away",
        )
    return NotWritableError(
        f"cannot write {target}: {exc.strerror or exc} (is {target.parent} read-only?); files written before this one "
        f"are complete and the previous {target.name} (if any) is unchanged",
        hint=f"make {target.parent} writable (e.g. chmod u+w), or copy the run to a writable place and run again",
    )


def require_writable(*folders: Path) -> None:
    """Refuse up front (before minutes of work) when a folder that will be written is read-only."""
    for folder in folders:
        existing = next((p for p in [Path(folder), *Path(folder).parents] if p.exists()), None)
        if existing is not None and not os.access(existing, os.W_OK):
            raise NotWritableError(
                f"{existing} is not writable, and edgetl writes its results there",
                hint=f"make {existing} writable (e.g. chmod u+w), or copy the run to a writable place and run again",
            )


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def link_or_copy(source: Path, dest: Path) -> None:
    """Make ``dest`` hold ``source``'s bytes: a hard link where the file system allows one, else a copy.

    Bundles share their models with the run's artifacts this way, so the bytes are stored once. Every edgetl
    write replaces a file by renaming a new one over it, which leaves the other name's bytes as they were.
    """
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def disk_bytes(paths: Iterable[Path], *, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes of the regular files among ``paths``, each file counted once however many hard links name it
    (symlinks are not followed); ``seen`` carries the counted files across calls."""
    seen = set() if seen is None else seen
    total = 0
    for path in paths:
        stat = path.lstat()
        key = (stat.st_dev, stat.st_ino)
        if not path.is_symlink() and path.is_file() and key not in seen:
            seen.add(key)
            total += stat.st_size
    return total


def is_inside(path: Path, root: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root`` (symlinks resolved)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _is_disk_full(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return True
        if "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _disk_full(target: Path, exc: BaseException) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(target.parent).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on the disk while writing {target} ({free} in {target.parent}). Free some space, or set "
        f"runs_dir to another disk, and run again; the previous {target.name} (if any) is unchanged",
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    The caller writes the temporary file (by any library); it is fsynced and renamed over the target
    only when the block exits without an exception, and removed otherwise.

    Raises:
        DiskFullError: the disk filled up; ``target`` is unchanged and the temporary file removed.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.chmod(0o666 & ~_umask())  # mkstemp's 0600 would make artifacts unreadable to other users
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except Exception as exc:
        if _is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise _disk_full(target, exc) from exc
        refused = None if isinstance(exc, EdgetlError) else _not_writable(target, exc)
        if refused is not None:
            raise refused from exc
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def write_text_atomic(target: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_text_atomic(target, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, with an error that names the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidFileError(f"{path} is not valid JSON ({exc}); re-run the stage that writes it.") from exc


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}:
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it replaces ``target``.

    An existing ``target`` survives until the new folder is complete and the two are swapped in one step
    (on Linux), so a killed run leaves either the old folder or the new one.

    Raises:
        DiskFullError: the disk filled up; ``target`` is unchanged and the temporary folder removed.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync_file(file)
        _fsync_dir(tmp)
        if not target.exists():
            os.replace(tmp, target)
        elif not _exchange(tmp, target):
            # Without an atomic swap: move the old folder aside under a name remove_stale_temps restores.
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    except Exception as exc:
        if _is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise _disk_full(target, exc) from exc
        refused = None if isinstance(exc, EdgetlError) else _not_writable(target, exc)
        if refused is not None:
            raise refused from exc
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def scratch_tempdir(folder: Path) -> Iterator[Path | None]:
    """Point :mod:`tempfile` at a scratch folder inside ``folder`` while the block runs; yields it (None: not made).

    Libraries write their temporaries through :mod:`tempfile` (onnxruntime's quantizer, edgetl's own scratch
    models). Inside the run they count against the run's disk, and a killed command leaves them under a name
    :func:`remove_stale_temps` clears, not in the system's temporary folder.
    """
    try:
        # Absolute, like the system's: a subprocess started in another folder gets temporary paths from us.
        scratch = Path(tempfile.mkdtemp(prefix=f".scratch.{os.getpid()}.", suffix=".tmp", dir=Path(folder).absolute()))
    except OSError:
        yield None  # a full disk surfaces at the first real write, with the error that names it
        return
    previous, environ = tempfile.tempdir, dict(os.environ)
    tempfile.tempdir = str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = previous
        # A library that pinned a path inside the scratch in the environment (torch's inductor cache folder)
        # would write into this run folder later, from another command of this process or its children.
        for key, value in list(os.environ.items()):
            if value.startswith(str(scratch)) and environ.get(key) != value:
                if key in environ:
                    os.environ[key] = environ[key]
                else:
                    del os.environ[key]
        shutil.rmtree(scratch, ignore_errors=True)


def remove_stale_temps(root: Path) -> list[Path]:
    """Remove temporary files and folders left below ``root`` by killed writers; returns what was removed.

    Names of live processes are left alone. An old folder moved aside by an interrupted :func:`atomic_dir`
    is put back when its replacement never arrived.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.rglob(".*"), key=lambda p: len(p.parts), reverse=True):
        temp, old = _TEMP_RE.match(path.name), _OLD_RE.match(path.name)
        match = temp or old
        if match is None or _pid_alive(int(match["pid"])) or not path.exists():
            continue
        if old is not None and not (path.parent / old["name"]).exists():
            os.replace(path, path.parent / old["name"])
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
