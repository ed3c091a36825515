"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Used for checkpoints, classifier caches and sweep state: write to a temp file in the same
directory, flush and fsync it, rename it over the destination, then fsync the directory so the
rename itself survives a power cut.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file atomically.

    Args:
        path: destination; its parent directory is created when missing.
        write: called with the open binary temp file; writes the whole content.

    Returns:
        The destination path.

    Example:
        >>> atomic_write("state.json", lambda f: f.write(b"{}"))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
