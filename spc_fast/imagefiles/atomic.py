"""Atomic file writes: a temporary file in the target's folder, published under the target's name in one step.

A reader never sees a partly written file, and a failed or interrupted write (any exception, Ctrl-C or a
SIGTERM handler's SystemExit included) removes its temporary. Without overwrite the temporary is published
with ``os.link``, which fails when the target exists, so of two runs racing for one name exactly one wins and
nothing is replaced; with overwrite ``os.replace`` swaps the file in and keeps the replaced file's permissions.

Temporaries are named ``.<target name>.spc-fast-<pid>-<random>.tmp``. A run killed outright (SIGKILL, power
loss) leaves its temporary behind; ``remove_stale_temporaries`` removes those of our naming whose writing
process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from spc_fast.imagefiles.opening import ImageError

_TEMPORARY = re.compile(r"\..+\.spc-fast-(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
# Errors of a file system without hard links (FAT, exFAT, some network shares).
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS)
_NO_EXCLUSIVE_RENAME = (errno.EINVAL, errno.ENOSYS)  # renameat2 or its flag unsupported here
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def already_exists(path: Path) -> ImageError:
    """The error for an output whose name is taken: the run never replaces a file unless told to."""
    return ImageError(f"{path}: already exists; pass --overwrite to replace it, or --skip-existing to keep it")


def _write_error(path: Path, error: OSError) -> ImageError:
    return ImageError(
        f"{path}: cannot write the file ({error.strerror or error}); choose a writable folder with free space"
    )


def _create_temporary(path: Path, names: list[Path]) -> int:
    """An open descriptor of a new, empty temporary file beside ``path``. Its name is appended to ``names``
    before the file exists: a signal handler may raise (Ctrl-C, SIGTERM) between any two bytecodes, and the
    name must be known wherever that happens."""
    folder = path.absolute().parent
    for _ in range(100):
        names.append(folder / f".{path.name}.spc-fast-{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(names[-1], flags, 0o666)
        except FileExistsError:
            names.pop()  # another writer's: not ours to remove
        except OSError as error:
            raise _write_error(path, error) from error
    raise ImageError(f"{path}: could not create a temporary file in {folder}; check the folder")


def _rename_without_replacing(temporary: Path, path: Path) -> None:
    """``renameat2(RENAME_NOREPLACE)``: the no-clobber publish where hard links are missing (Linux only)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    code = 0
    if renameat2 is not None:
        code = renameat2(_AT_FDCWD, os.fsencode(temporary), _AT_FDCWD, os.fsencode(path), _RENAME_NOREPLACE)
        code = ctypes.get_errno() if code != 0 else 0
    if renameat2 is None or code in _NO_EXCLUSIVE_RENAME:
        raise ImageError(
            f"{path}: this folder's file system cannot create a file without the risk of replacing one "
            "(no hard links); write to another folder, or pass --overwrite"
        )
    if code:
        raise OSError(code, os.strerror(code), str(path))


def _publish(temporary: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        with contextlib.suppress(OSError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)  # keep the permissions of a replaced file
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path, follow_symlinks=False)
    except FileExistsError:
        raise already_exists(path) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        try:
            _rename_without_replacing(temporary, path)
        except FileExistsError:
            raise already_exists(path) from None
        return
    os.unlink(temporary)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, overwrite: bool = False) -> None:
    """Run ``write(file)`` on a temporary binary file beside ``path``, then publish it as ``path`` in one step.

    Without ``overwrite`` an existing ``path`` is never replaced: the publish fails (``ImageError``: already
    exists), also when another process created ``path`` while this one was writing. On any failure or
    interruption the temporary file is removed; an OSError becomes an ``ImageError``.
    """
    path = Path(path)
    names: list[Path] = []
    try:
        fd = _create_temporary(path, names)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        _publish(names[-1], path, overwrite)
    except BaseException as error:
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise


@functools.cache
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def _process_start(pid: int) -> float | None:
    """When the process ``pid`` started (seconds since the epoch, about 1 s precision); None when no process
    runs under ``pid`` (zombies included); -inf when it runs but its start time is unknown."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # a process of another user
    except OSError:
        return float("-inf")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (command)"
        if fields[0] in ("Z", "X"):
            return None
        return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in clock ticks
    except (OSError, ValueError, IndexError):
        return float("-inf")


def _is_stale(entry: os.DirEntry, pid: int) -> bool:
    """A temporary is stale when the process named in it is gone, or when the process now running under that
    pid started more than a second after the temporary was last written (the pid was reused)."""
    started = _process_start(pid)
    return started is None or started > entry.stat(follow_symlinks=False).st_mtime + 1.0


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of our naming in ``folder`` (regular files only) whose writing process is gone;
    returns the paths removed. Other files, and temporaries of running processes, are left alone.

    The rule reads this machine's process table: do not point runs on two machines at one folder at once."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        try:
            if match and entry.is_file(follow_symlinks=False) and _is_stale(entry, int(match["pid"])):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # removed meanwhile by another run, or not ours to remove (permissions): left alone
    return removed
