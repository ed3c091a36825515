"""Keep third-party chatter away from the user: warnings, log records and prints (Python or C).

torch's exporters and loaders print IR dumps, log tracebacks of errors they then raise anyway, and
warn about their own deprecations; onnxruntime logs from C++. None of it tells a ganport user what
to do, and it arrives *before* ganport's one ``error:`` line. Inside :func:`captured_output`
everything the block writes to stdout/stderr (including file descriptors 1 and 2, which C and
C++ code write to directly), every warning and every record of the named loggers below ERROR is
captured instead, and logged at DEBUG (``ganport -vv`` shows it). ganport turns what it needs into
its own message: the block's exception is raised as usual, and :attr:`Captured.text` holds what
was printed.

This module is torch-free (the runtime uses it too).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator

logger = logging.getLogger(__name__)

__all__ = ["Captured", "captured_output", "quiet_loggers"]


@dataclass
class Captured:
    """What a :func:`captured_output` block printed and warned (filled in when the block ends)."""

    text: str = ""
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def quiet_loggers(names: Iterable[str], level: int = logging.ERROR) -> Iterator[None]:
    """Raise the level of the named loggers for the duration of the block."""
    saved = {name: logging.getLogger(name).level for name in names}
    for name in saved:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers, so what C code printed lands in the capture, not after it."""
    try:
        ctypes.CDLL(None).fflush(None)
    except Exception:  # pragma: no cover - no libc (unusual platforms): nothing to flush
        pass


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


@contextlib.contextmanager
def captured_output(what: str, loggers: Iterable[str] = (), fds: bool = True) -> Iterator[Captured]:
    """Capture prints, C-level output, warnings and chatty loggers for the block.

    Args:
        what: what the block does, for the DEBUG log line.
        loggers: logger names quieted to ERROR for the block.
        fds: also redirect file descriptors 1 and 2 (C/C++ output). This is process-wide: use it
            where nothing else runs concurrently (the CLI's export), not inside a server.

    Yields:
        A :class:`Captured`, filled in when the block ends (also when it raises).

    Example:
        >>> with captured_output("demo") as out:
        ...     print("noise")
        >>> out.text
        'noise\\n'
    """
    captured = Captured()
    python_out, python_err = io.StringIO(), io.StringIO()
    saved_fds: dict[int, int] = {}
    sink = None
    if fds:
        try:
            _flush_python_streams()
            _flush_c_stdio()
            sink = tempfile.TemporaryFile()
            for fd in (1, 2):
                saved_fds[fd] = os.dup(fd)
                os.dup2(sink.fileno(), fd)
        except OSError:  # no fd 1/2 (a daemon with closed streams): capture at Python level only
            for fd, copy in saved_fds.items():
                os.dup2(copy, fd)
                os.close(copy)
            saved_fds.clear()
            sink = None
    caught: list[warnings.WarningMessage] = []
    try:
        with quiet_loggers(loggers), warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(python_out), contextlib.redirect_stderr(python_err):
            warnings.simplefilter("always")
            yield captured
    finally:
        if saved_fds:
            _flush_python_streams()
            _flush_c_stdio()
            for fd, copy in saved_fds.items():
                os.dup2(copy, fd)
                os.close(copy)
        c_level = ""
        if sink is not None:
            sink.seek(0)
            c_level = sink.read().decode("utf-8", "replace")
            sink.close()
        captured.text = python_out.getvalue() + python_err.getvalue() + c_level
        seen: set[str] = set()
        for item in caught:
            text = f"{item.category.__name__}: {item.message}"
            if text not in seen:
                seen.add(text)
                captured.warnings.append(text)
        for text in captured.warnings:
            logger.debug("%s: %s", what, text)
        if captured.text.strip():
            logger.debug("%s printed:\n%s", what, captured.text.rstrip()[-20000:])
