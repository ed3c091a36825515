"""Atomic file writes, and the cleanup of what a killed writer leaves behind.

Used for checkpoints, classifier caches and sweep state: write to a temp file in the same
directory, flush and fsync it, rename it over the destination, then fsync the directory so the
rename itself survives a power cut. Export stages whole package directories the same way.

A process killed with SIGKILL (or a power cut) mid-write leaves its temp file or staging folder
behind. Every temp name ganport makes says who made it::

    .<target>.<host>-<pid>.<random>.tmp        atomic_write (e.g. .step_000500.pt.3f9a1c-4242.k2j4h6g8.tmp)
    .<target>.<host>-<pid>.<random>.partial    export staging folder next to the package
    .<target>.<host>-<pid>.<random>.old        export: the package being replaced, moved aside

(``host`` is 6 hex digits of a hash of the host name, ``random`` the 8 characters tempfile adds.)
:func:`clean_debris` removes such entries when they are stale, and nothing else:

* made on this host by a process that no longer exists (its pid is gone): stale at once;
* made on another host (a shared file system), or named the way ganport did before owners were
  recorded (``.<target>.<random>.tmp``), so the owner cannot be checked: stale once nothing in it
  has been modified for :data:`STALE_AFTER` seconds (one hour: far longer than any checkpoint
  write, and an export that long is protected by its pid check on its own host);
* made by a process that is alive (even if the pid was reused by another program): kept.

A stale ``.old`` folder whose package is missing (the kill fell between the two renames of a
replacing export) is renamed back into place instead of deleted: the previous package survives.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

logger = logging.getLogger(__name__)

__all__ = ["atomic_write", "owner_tag", "temp_prefix", "clean_debris", "STALE_AFTER", "DEBRIS_KINDS"]

#: Seconds without modification after which debris whose owner cannot be checked is stale.
STALE_AFTER = 3600.0
#: Suffixes of ganport's temp entries: files (``tmp``) and export folders (``partial``, ``old``).
DEBRIS_KINDS = ("tmp", "partial", "old")

_DEBRIS = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.)?"
                     r"(?P<random>[a-z0-9_]{8})\.(?P<kind>tmp|partial|old)$")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def owner_tag() -> str:
    """``<host>-<pid>`` of this process, as recorded in its temp names."""
    return f"{_host_tag()}-{os.getpid()}"


def temp_prefix(target: str) -> str:
    """Prefix for ``tempfile.mkstemp``/``mkdtemp`` of a temp entry for ``target``."""
    return f".{target}.{owner_tag()}."


def _umask() -> int:
    """The process umask: from ``/proc/self/status`` on Linux (setting the umask to read it would
    race with other threads creating files), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file atomically.

    Stale temp files of earlier, killed writers in the same directory are removed first (see
    :func:`clean_debris`).

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
    clean_debris(path.parent, kinds=("tmp",))
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask), so a
        # server running as another user can read what was written.
        os.fchmod(fd, 0o666 & ~_umask())
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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:  # EPERM: alive, owned by someone else
        return exc.errno != errno.ESRCH
    return True


def _last_modified(path: Path) -> float:
    """Newest mtime of a file, or of a folder and everything in it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
    return newest


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is ganport debris that no live writer owns (rules in the module docstring)."""
    match = _DEBRIS.match(path.name)
    if match is None:
        return False
    if match["pid"] is not None and match["host"] == _host_tag():
        return not _pid_alive(int(match["pid"]))
    now = time.time() if now is None else now
    try:
        return now - _last_modified(path) > STALE_AFTER
    except OSError:
        return False


def clean_debris(directory: str | os.PathLike, kinds: Iterable[str] = DEBRIS_KINDS) -> list[Path]:
    """Remove stale temp files/folders of ganport's own naming from ``directory`` (not recursive).

    Args:
        directory: where to look; a missing or unreadable directory is left alone.
        kinds: which suffixes to consider (``tmp`` files; ``partial``/``old`` export folders).

    Returns:
        The entries removed (or, for an ``.old`` whose package is missing, restored).

    Example:
        >>> clean_debris("runs/cgan/checkpoints")  # doctest: +SKIP
        [PosixPath('runs/cgan/checkpoints/.step_000500.pt.3f9a1c-4242.k2j4h6g8.tmp')]
    """
    directory = Path(directory)
    wanted = set(kinds)
    removed: list[Path] = []
    try:
        entries = [entry for entry in directory.iterdir() if entry.name.startswith(".")]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _DEBRIS.match(entry.name)
        if match is None or match["kind"] not in wanted:
            continue
        folder = match["kind"] in ("partial", "old")
        if entry.is_symlink() or folder != entry.is_dir():
            continue  # ganport makes regular files and real folders only: this is not ours
        if not is_stale(entry, now):
            continue
        try:
            target = directory / match["target"]
            if match["kind"] == "old" and not target.exists():
                os.replace(entry, target)
                logger.warning("restored %s from %s (an export that replaced it was interrupted)", target, entry.name)
            elif folder:
                shutil.rmtree(entry)
                logger.info("removed %s, left by an interrupted export", entry)
            else:
                entry.unlink()
                logger.info("removed %s, left by an interrupted write", entry)
        except OSError as exc:
            logger.warning("cannot remove stale %s: %s", entry, exc.strerror or exc)
            continue
        removed.append(entry)
    return removed
