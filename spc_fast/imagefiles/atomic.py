"""Atomic file writes: a temporary file in the target's folder, renamed over the target in one step.

A reader never sees a partly written file, a failed write leaves nothing behind, and a replaced file keeps
its permissions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from spc_fast.imagefiles.opening import ImageError


def _write_error(path: Path, error: OSError) -> ImageError:
    return ImageError(
        f"{path}: cannot write the file ({error.strerror or error}); choose a writable folder with free space"
    )


def _create_temporary(path: Path) -> tuple[int, Path]:
    """An open descriptor and the name of a new, empty temporary file beside ``path``."""
    folder = path.absolute().parent
    for _ in range(100):
        temporary = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
        except OSError as error:
            raise _write_error(path, error) from error
    raise ImageError(f"{path}: could not create a temporary file in {folder}; remove stale .tmp files there")


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Run ``write(file)`` on a temporary binary file beside ``path``, then rename it over ``path`` in one
    step; on any failure the temporary file is removed and an OSError becomes an ``ImageError``."""
    path = Path(path)
    fd, temporary = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)  # keep the permissions of a replaced file
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise
