"""Progress display for long loops: a live bar on a terminal, plain lines everywhere else.

On a terminal, :func:`progress_bar` draws a tqdm bar redrawn in place (``\\r``). Redirected to a
file or a pipe (a log, ``nohup``, a CI job, a sweep worker's log), those redraws pile up into one
huge line, so there it writes one plain line every ``every`` updates (the caller's log interval)
and one at the end, with no carriage returns or escape codes::

    epoch 1/3: step 50/150 (33%), 41.3 step/s, elapsed 0:00:01, left 0:00:02, d_loss=0.912, g_loss=0.817

Every progress display of ganport goes through this one function (``ganport train``, and so the
runs of ``ganport sweep``); commands that report coarse events (``eval``, ``explore``, the
reference classifier's epochs, the sweep's status) write whole lines through their ``progress``
callbacks and never redraw.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressBar", "progress_bar", "is_terminal"]


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Progress of a loop of ``total`` updates; see the module docstring. Use :func:`progress_bar`.

    Attributes:
        n: updates so far (``initial`` included).
        live: True when drawing a tqdm bar on a terminal, False when writing plain lines.
    """

    def __init__(self, total: int, *, initial: int = 0, desc: str = "", unit: str = "step",
                 file: TextIO | None = None, enabled: bool = True, every: int = 1, live: bool | None = None):
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.file = file if file is not None else sys.stderr
        self.enabled = enabled
        self.every = max(1, int(every))
        self.live = is_terminal(self.file) if live is None else live
        self.postfix: dict[str, Any] = {}
        self._start, self._start_n = time.monotonic(), self.n
        self._last_line_n: int | None = None
        self._bar = None
        if enabled and self.live:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, dynamic_ncols=True, mininterval=0.5,
                             file=self.file, unit=unit)

    def set_description(self, desc: str) -> None:
        """Text before the numbers (``epoch 2/5``)."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc, refresh=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Count ``n`` more updates; ``postfix`` values (``d_loss=...``) replace the shown ones."""
        self.n += n
        if postfix:
            self.postfix = dict(postfix)
        if self._bar is not None:
            if postfix:
                # refresh=False: tqdm's set_postfix would otherwise redraw on every call.
                self._bar.set_postfix(refresh=False, **self.postfix)
            self._bar.update(n)
        elif self.enabled and (self.n % self.every == 0 or self.n >= self.total):
            self._line()

    def line(self) -> str:
        """The plain progress line for the current state."""
        elapsed = time.monotonic() - self._start
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.unit} {self.n}/{self.total}"
                 + (f" ({100 * self.n // self.total}%)" if self.total else ""),
                 f"{rate:.1f} {self.unit}/s", f"elapsed {_clock(elapsed)}"]
        if rate > 0 and self.total > self.n:
            parts.append(f"left {_clock((self.total - self.n) / rate)}")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _line(self) -> None:
        if self._last_line_n == self.n:
            return
        self._last_line_n = self.n
        try:
            print(self.line(), file=self.file, flush=True)
        except (OSError, ValueError):  # a closed pipe must not stop the work
            pass

    def close(self) -> None:
        """Finish: close the bar, or write the final line (unless the last update wrote it)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.n > self._start_n:
            self._line()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, *, initial: int = 0, desc: str = "", unit: str = "step", file: TextIO | None = None,
                 enabled: bool = True, every: int = 1, live: bool | None = None) -> ProgressBar:
    """A progress display: a live bar on a terminal, one plain line per ``every`` updates otherwise.

    Args:
        total: number of updates expected.
        initial: updates already done (a resumed run).
        desc: text before the numbers; change it with :meth:`ProgressBar.set_description`.
        unit: what one update is (``step``, ``epoch``, ``image``).
        file: where to write (default ``sys.stderr``, looked up now).
        enabled: False shows nothing (e.g. on ranks other than 0).
        every: in plain-line mode, write a line every this many updates (the log interval), and
            at the end.
        live: force the live bar (True) or plain lines (False); default: live on a terminal.

    Returns:
        A :class:`ProgressBar`; call ``update(1, **postfix)`` per step and ``close()`` at the end.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with progress_bar(4, desc="demo", file=out, every=2) as bar:
        ...     for _ in range(4):
        ...         bar.update(1, loss="0.5")
        >>> [line.split(",")[0] for line in out.getvalue().splitlines()]
        ['demo: step 2/4 (50%)', 'demo: step 4/4 (100%)']
    """
    return ProgressBar(total, initial=initial, desc=desc, unit=unit, file=file, enabled=enabled, every=every,
                       live=live)
