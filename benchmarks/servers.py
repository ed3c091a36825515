"""Servers for the benchmarks: the real ganport gRPC server, in-process or as ``ganport serve``.

* :func:`inprocess_server`: :func:`ganport.runtime.server.create_server` on a free loopback port
  with already-loaded Generators, plus a :class:`~ganport.runtime.server.client.GanportClient`.
  Used where the comparison is against the same Generator in-process (serving, word).
* :class:`ServeProcess`: ``python -m ganport serve`` as a subprocess, for measurements that need
  a separate process: start-up time, resident memory, and load from many client threads without
  the server sharing the client's GIL (batching). Its Prometheus metrics are read over HTTP.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

_SERVING_LINE = re.compile(r"serving (\d+) model\(s\) on (\S+):(\d+)")
#: ``ganport serve --metrics-port`` prints this before the serving line.
_METRICS_LINE = re.compile(r"metrics on http://\S+:(\d+)/metrics")


def wait_serving(client: Any, timeout: float = 120.0, poll: float = 0.02) -> float:
    """Poll the health service until SERVING; returns the ``time.perf_counter()`` when it was."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if client.health() == "SERVING":
                return time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - grpc.RpcError while the port is not up yet
            last = exc
        time.sleep(poll)
    raise TimeoutError(f"server not SERVING after {timeout:.0f} s (last error: {last})")


@contextlib.contextmanager
def inprocess_server(models: Mapping[str, Any], **options: Any) -> Iterator[tuple[Any, Any]]:
    """Start ``create_server`` on ``127.0.0.1:0`` for ``{name: Generator}``; yield ``(server, client)``.

    Args:
        models: the loaded Generators, served under their keys.
        **options: ``create_server`` keyword arguments (``max_batch``, ``max_delay_ms``...).
    """
    from ganport.runtime.server import create_server
    from ganport.runtime.server.client import GanportClient

    server, port = create_server("127.0.0.1:0", dict(models), **options)
    server.start()
    client = GanportClient(f"127.0.0.1:{port}", timeout=120.0)
    try:
        wait_serving(client)
        yield server, client
    finally:
        client.close()
        server.stop(grace=2.0)


class ServeProcess:
    """``python -m ganport serve MODELS --port 0 ...`` in a subprocess.

    Args:
        models_dir: a model package or a folder of packages.
        args: extra ``ganport serve`` flags (``--backend``, ``--max-batch``...).
        python: the interpreter (another venv's, e.g. the torch-free runtime one).
        cwd: working directory; keep it outside the source tree so ``python -m ganport`` imports
            the installed package, not the checkout's ``ganport/`` folder.
        log_path: where the server's stderr goes.
        timeout: seconds to wait for start-up.

    Attributes (after :meth:`start`):
        pid, target (``127.0.0.1:PORT``), metrics_port, startup (seconds from spawn to the
        "serving" line and to health SERVING).
    """

    def __init__(self, models_dir: Path, args: Sequence[str] = (), *, python: str | Path = sys.executable,
                 cwd: Path | None = None, log_path: Path | None = None, timeout: float = 180.0):
        self.command = [str(python), "-m", "ganport", "serve", str(models_dir), "--host", "127.0.0.1",
                        "--port", "0", *args]
        self.cwd = cwd
        self.log_path = log_path
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.target = ""
        self.metrics_port: int | None = None
        self.startup: dict[str, float] = {}
        self._lines: queue.Queue = queue.Queue()

    def start(self) -> "ServeProcess":
        """Spawn the server, wait for its "serving" line, then for health SERVING."""
        from ganport.runtime.server.client import GanportClient

        log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        spawned = time.perf_counter()
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=self.cwd,
                                     env=env)
        if log is not subprocess.DEVNULL:
            log.close()  # the child holds its own descriptor
        threading.Thread(target=self._pump, daemon=True, name="serve-stdout").start()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty as exc:
                self.stop()
                raise TimeoutError(f"{' '.join(self.command)} did not start in {self.timeout:.0f} s") from exc
            if line is None:
                code = self.proc.wait()
                raise RuntimeError(f"ganport serve exited with {code} before serving; see {self.log_path}")
            metrics = _METRICS_LINE.search(line)
            if metrics:
                self.metrics_port = int(metrics.group(1))
            match = _SERVING_LINE.search(line)
            if match:
                line_at = time.perf_counter()
                self.target = f"127.0.0.1:{match.group(3)}"
                break
        with GanportClient(self.target, timeout=10.0) as client:
            serving_at = wait_serving(client, timeout=max(1.0, deadline - time.monotonic()))
        self.startup = {"to_serving_line_s": line_at - spawned, "to_health_serving_s": serving_at - spawned}
        return self

    def _pump(self) -> None:
        """Forward the server's stdout lines to the start-up queue (None at EOF)."""
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def memory(self) -> dict[str, float]:
        """The server's resident memory (:func:`proc_memory`)."""
        return proc_memory(self.pid)

    def loaded(self, needles: Sequence[str]) -> dict[str, bool]:
        """Which of ``needles`` (e.g. ``libtorch``) appear among the process's mapped files."""
        maps = Path(f"/proc/{self.pid}/maps").read_text()
        return {needle: needle in maps for needle in needles}

    def metrics_text(self) -> str:
        """The server's Prometheus metrics (needs ``--metrics-port``)."""
        if self.metrics_port is None:
            raise RuntimeError("the server was started without --metrics-port")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            return reply.read().decode("utf-8")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the server drains and exits 0), SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("ganport serve (pid %d) ignored SIGTERM for %.0f s; killing it", self.pid, timeout)
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


#: ``/proc/PID/status`` fields -> :func:`proc_memory` keys.
_MEMORY_FIELDS = {"VmRSS": "rss_mib", "VmHWM": "peak_rss_mib", "RssAnon": "rss_anon_mib", "RssFile": "rss_file_mib"}


def proc_memory(pid: int) -> dict[str, float]:
    """Resident memory of one process from ``/proc/PID/status``, MiB ({} once it is gone).

    ``rss_mib`` (VmRSS) = ``rss_anon_mib`` (RssAnon: the process's own heap and stacks) +
    ``rss_file_mib`` (RssFile: mapped pages of its shared libraries) + shared memory;
    ``peak_rss_mib`` is VmHWM. RssFile is not the process's own: the same library files mapped
    by two processes can differ by 15 MiB with the page cache's folio sizes (seen on Linux 6.18
    with identical wheels in two venvs), which is why the anonymous part is reported apart.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in lines:
        key = line.split(":", 1)[0]
        if key in _MEMORY_FIELDS:
            values[_MEMORY_FIELDS[key]] = int(line.split()[1]) / 1024.0  # kB -> MiB
    return values


def prometheus_value(text: str, metric: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels`` (0.0 when absent).

    Example:
        >>> prometheus_value('a_sum{model="m"} 2.5\\na_sum{model="n"} 1', "a_sum", {"model": "m"})
        2.5
    """
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in (labels or {}).items()]
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(metric):
            continue
        name, _, rest = line.partition("{") if "{" in line.split(" ", 1)[0] else (line.split(" ", 1)[0], "", "")
        if name != metric:
            continue
        if all(w in rest for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total
