"""Shared pieces of every benchmark: the run context, timing, percentiles, tables, results.

There is one of each helper, used by all benchmarks:

* :func:`time_calls`: call a function repeatedly, bounded by time *and* count, after warm-up;
  returns a :class:`Timing` (per-call latencies and wall time);
* :func:`percentiles`: p50/p95/p99 of a list of samples;
* :func:`make_table` / :func:`render_table`: one aligned text table format for every benchmark;
* :func:`new_result` / :func:`finish_result` / :func:`write_result`: the JSON result skeleton
  (machine info, settings, rows, tables, headline figures, notes).

A benchmark module exposes ``run(ctx: BenchContext) -> dict`` and nothing else is required.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: The repository root (benchmarks/ lives directly under it).
ROOT = Path(__file__).resolve().parent.parent
#: Default folder for the JSON results.
RESULTS_DIR = ROOT / "benchmarks" / "results"
#: The torch-free runtime venv as users install it (`make runtime-venv`: pip install '.[cpu]').
RUNTIME_VENV = ".venv-runtime"
#: Version of the JSON layout written by :func:`write_result`.
RESULT_SCHEMA = 1
#: Distributions whose versions are recorded with every result.
_VERSIONED = ("ganport", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "grpcio", "protobuf", "numpy")


# ------------------------------------------------------------------------------------ context

@dataclass
class BenchContext:
    """What every benchmark gets from the runner.

    Args:
        quick: tiny settings (a smoke run, seconds per benchmark); numbers are not meaningful.
        threads: CPU threads for inference and training (onnxruntime intra-op threads and
            ``torch.set_num_threads``), the same for every backend so ratios are fair.
        workdir: scratch folder for checkpoints, packages, runs and venvs (deleted by the runner).
        zoo: the :class:`benchmarks.models.ModelZoo` shared by all benchmarks of one run, so every
            benchmark measures the very same model packages.
    """

    quick: bool
    threads: int
    workdir: Path
    zoo: Any = None
    _cuda: bool | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.zoo is None:
            from benchmarks.models import ModelZoo

            self.zoo = ModelZoo(self.workdir / "models")

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` under ``--quick``, else ``full`` (keeps the two settings side by side)."""
        return quick if self.quick else full

    @property
    def cuda(self) -> bool:
        """True when torch sees a CUDA device (GPU rows are measured only then)."""
        if self._cuda is None:
            self._cuda = cuda_available()
        return self._cuda


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# ------------------------------------------------------------------------------------ timing

@dataclass
class Timing:
    """Result of :func:`time_calls`.

    Attributes:
        latencies: seconds of each measured call, in order.
        wall: seconds from the first measured call's start to the last one's end.
    """

    latencies: list[float]
    wall: float

    @property
    def calls(self) -> int:
        return len(self.latencies)

    def rate(self, items_per_call: float = 1.0) -> float:
        """Items per second over the wall time (e.g. images/s with ``items_per_call=batch``)."""
        return self.calls * items_per_call / self.wall if self.wall > 0 else float("nan")

    def summary(self, items_per_call: float = 1.0, unit: str = "images_per_s") -> dict[str, float]:
        """JSON-able figures: calls, seconds, rate and latency percentiles in milliseconds."""
        return {"calls": self.calls, "seconds": round(self.wall, 4), unit: self.rate(items_per_call),
                **percentiles(self.latencies, scale=1000.0, suffix="_ms")}


def time_calls(fn: Callable[[], Any], *, seconds: float, max_calls: int, min_calls: int = 1,
               warmup: int = 1, start_barrier: threading.Barrier | None = None) -> Timing:
    """Call ``fn()`` until ``seconds`` have passed (after at least ``min_calls``) or ``max_calls``.

    The one timing loop of the benchmarks: bounded in time and in count, warm-up calls first
    (not measured), each call timed with ``time.perf_counter``. Functions must be synchronous
    (every ganport call returns host numpy arrays, so GPU work has finished when they return).

    Args:
        fn: the call to time.
        seconds: measure at least this long (unless ``max_calls`` is reached first).
        max_calls: never more measured calls than this.
        min_calls: at least this many measured calls, even past ``seconds``.
        warmup: unmeasured calls first (session start-up, allocator, caches).
        start_barrier: wait on this barrier after warm-up (concurrent clients start together).

    Returns:
        A :class:`Timing`.

    Example:
        >>> t = time_calls(lambda: sum(range(100)), seconds=0.01, max_calls=50)
        >>> 1 <= t.calls <= 50
        True
    """
    for _ in range(warmup):
        fn()
    if start_barrier is not None:
        start_barrier.wait()
    latencies: list[float] = []
    start = time.perf_counter()
    end = start
    while len(latencies) < max_calls:
        t0 = time.perf_counter()
        fn()
        end = time.perf_counter()
        latencies.append(end - t0)
        if len(latencies) >= min_calls and end - start >= seconds:
            break
    return Timing(latencies, end - start)


def percentiles(values: Sequence[float], qs: Iterable[float] = (50, 95, 99), scale: float = 1.0,
                suffix: str = "") -> dict[str, float]:
    """Percentiles of ``values`` (linear interpolation), keyed ``p50``, ``p95``... plus ``suffix``.

    Example:
        >>> percentiles([1, 2, 3, 4], qs=(50,))
        {'p50': 2.5}
    """
    qs = tuple(qs)
    if len(values) == 0:
        return {f"p{q:g}{suffix}": float("nan") for q in qs}
    points = np.percentile(np.asarray(values, dtype=np.float64) * scale, qs)
    return {f"p{q:g}{suffix}": float(p) for q, p in zip(qs, points)}


# ------------------------------------------------------------------------------------ tables

def fmt(value: Any) -> str:
    """One table cell: thousands separators for big numbers, 2-3 significant digits for small ones.

    Example:
        >>> [fmt(v) for v in (123456.7, 12.345, 0.01234, None, True, "x")]
        ['123,457', '12.3', '0.0123', '-', 'yes', 'x']
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value != value:  # NaN
            return "-"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def make_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
               note: str | None = None) -> dict[str, Any]:
    """A table for the JSON result and the console: cells are formatted once with :func:`fmt`."""
    return {"title": title, "columns": list(columns), "rows": [[fmt(cell) for cell in row] for row in rows],
            "note": note}


def render_table(table: dict[str, Any]) -> str:
    """Render a :func:`make_table` table as aligned text (text left-aligned, numbers right)."""
    columns, rows = table["columns"], table["rows"]
    widths = [max([len(str(c))] + [len(str(r[i])) for r in rows]) for i, c in enumerate(columns)]

    def numeric(text: str) -> bool:
        return text.replace(",", "").replace(".", "").replace("-", "").replace("x", "").replace("%", "").isdigit()

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if numeric(str(c)) else str(c).ljust(w)
                         for c, w in zip(cells, widths)).rstrip()

    out = [table["title"], line(columns), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    if table.get("note"):
        out.append(f"  note: {table['note']}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ results

def headline(name: str, value: float | None, unit: str = "", target: str | None = None,
             met: bool | None = None, detail: str = "") -> dict[str, Any]:
    """One headline figure (a ratio against a target, usually) for the runner's summary."""
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, "detail": detail}


def new_result(name: str, ctx: BenchContext, settings: dict[str, Any]) -> dict[str, Any]:
    """The skeleton every benchmark fills in: name, machine, settings, rows, tables, headline."""
    return {"benchmark": name, "schema": RESULT_SCHEMA, "quick": ctx.quick, "machine": machine_info(),
            "settings": settings, "rows": [], "tables": [], "headline": [], "notes": [],
            "started": _now(), "_t0": time.perf_counter()}


def finish_result(result: dict[str, Any]) -> dict[str, Any]:
    """Stamp the elapsed time and the load average at the end (the machine may be shared)."""
    result["elapsed_s"] = round(time.perf_counter() - result.pop("_t0"), 2)
    machine = result["machine"]
    machine["load_average_end"] = _load_average()
    loads = [values[0] for values in (machine["load_average_start"], machine["load_average_end"]) if values]
    cpus = machine.get("cpus_usable") or 1
    if loads and max(loads) > cpus:
        result["notes"].append(
            f"the machine was busy (1-minute load average up to {max(loads):.1f} on {cpus} CPUs): absolute numbers "
            f"are low and noisy, and multi-threaded torch suffers most from the contention")
    return result


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<out_dir>/<benchmark>.json`` (pretty, with NaN written as null)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['benchmark']}.json"
    path.write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, Path):
        return str(value)
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------------ machine

_MACHINE_CACHE: dict[str, Any] = {}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, library versions, GPU, git commit, date and current load."""
    if not _MACHINE_CACHE:
        _MACHINE_CACHE.update({
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gib": _memory_gib(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": {name: _version(name) for name in _VERSIONED},
            "gpu": _gpu_info(),
            "onnxruntime_providers": _ort_providers(),
            "git": _git_state(),
        })
    return {**_MACHINE_CACHE, "date": _now(), "load_average_start": _load_average()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _gpu_info() -> dict[str, Any] | None:
    if not cuda_available():
        return None
    import torch

    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"name": torch.cuda.get_device_name(index), "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}


def _ort_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def _git_state() -> dict[str, Any] | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        commit = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit or None, "dirty": bool(dirty)}


def triton_status() -> dict[str, Any]:
    """Where the Triton comparison lives (never a measured number in the benchmark that calls this).

    Triton is measured side by side with ganport by the ``peer`` benchmark (PyTriton 0.7.0, which
    bundles tritonserver, in ``build/peer-venv``; see :mod:`benchmarks.peer`). This records that, and
    whether a standalone Triton (Docker engine, ``tritonserver`` binary or wheel) is on the machine.
    """
    docker = shutil.which("docker")
    engine = False
    if docker:
        try:
            engine = subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError):
            engine = False
    tritonserver = shutil.which("tritonserver")
    try:
        import importlib.util

        wheel = importlib.util.find_spec("tritonserver") is not None
    except (ImportError, ValueError):
        wheel = False
    return {
        "measured": False,
        "docker_cli": docker is not None, "docker_engine": engine,
        "tritonserver_binary": tritonserver is not None, "tritonserver_python_wheel": wheel,
        "reason": "Triton is measured by the `peer` benchmark (PyTriton 0.7.0 serving the same model.onnx, "
                  "`make bench-peer`), not here",
        "how": "`python -m benchmarks.run --only peer`; or by hand: `ganport export CKPT -o PKG --format onnx "
               "triton` writes a Triton model repository (config.pbtxt with dynamic batching) for a full "
               "tritonserver (`tritonserver --model-repository PKG/triton`)",
    }


def python_for(venv: Path) -> Path:
    """The interpreter of a virtual environment."""
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
