"""Footprint: install size of the torch-free runtime vs the full environment; ``ganport serve``'s
resident memory and start-up time per backend.

* Install size: ``site-packages`` of ``.venv-runtime`` (the edge install, ``pip install '.[cpu]'``,
  no torch) against ``.venv`` (training, export, runtime, tests). Without ``.venv-runtime`` a
  runtime venv is built in the scratch folder (``python -m venv`` + ``pip install '.[cpu]'``,
  needs PyPI, minutes), except under ``--quick``, where it is skipped. Sizes are on-disk blocks
  (as ``du``) and apparent bytes, with the largest packages.
* Server: ``ganport serve`` with the glyph cGAN package, started as a subprocess; time from spawn
  to health SERVING, then, after a few batch-64 requests, resident memory (VmRSS) and peak
  (VmHWM) from ``/proc/PID/status``, and whether libtorch was mapped into the process. Measured
  for the ONNX backend (in the runtime venv too when there is one) and for ``--backend
  torchscript`` (the cost of importing torch).

Triton is measured by the ``peer`` benchmark (:mod:`benchmarks.peer`).
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (ROOT, BenchContext, headline, make_table, new_result, python_for,
                               triton_status)
from benchmarks.servers import ServeProcess

logger = logging.getLogger(__name__)

MODEL = "mlp28"
MIB = 2**20
#: Libraries looked for in the server's memory map.
LIBRARIES = ("libtorch", "onnxruntime")


def run(ctx: BenchContext) -> dict[str, Any]:
    """Install sizes and server memory/start-up; returns the result dict."""
    settings = {"model": MODEL, "threads": ctx.threads, "repeats": ctx.pick(1, 3),
                "warm_requests": ctx.pick(3, 20), "build_runtime_venv": not ctx.quick}
    result = new_result("footprint", ctx, settings)
    full = ROOT / ".venv" if (ROOT / ".venv").is_dir() else Path(sys.prefix)
    runtime = _runtime_venv(ctx, result)
    envs = {"full (.venv)": full, **({"runtime (no torch)": runtime} if runtime else {})}
    sizes = {label: _environment_size(path) for label, path in envs.items()}
    result["environments"] = sizes
    result["tables"].append(make_table(
        "footprint: installed environments (MiB on disk)",
        ["environment", "site-packages", "whole venv", "files", "torch", "largest packages"],
        [[label, s["site_packages"]["disk_bytes"] / MIB, s["venv"]["disk_bytes"] / MIB, s["site_packages"]["files"],
          s["has_torch"], ", ".join(f"{p['name']} {p['disk_bytes'] / MIB:.0f}" for p in s["largest"][:4])]
         for label, s in sizes.items()]))
    if runtime:
        ratio = sizes["runtime (no torch)"]["site_packages"]["disk_bytes"] / sizes["full (.venv)"]["site_packages"]["disk_bytes"]
        result["headline"].append(headline(
            "runtime / full site-packages size", ratio, "x",
            detail=f"{sizes['runtime (no torch)']['site_packages']['disk_bytes'] / MIB:,.0f} vs "
                   f"{sizes['full (.venv)']['site_packages']['disk_bytes'] / MIB:,.0f} MiB"))

    package = ctx.zoo.package(MODEL, ("onnx", "torchscript"))
    servers = [("onnx", "full (.venv)", python_for(full))]
    if runtime:
        servers.append(("onnx", "runtime (no torch)", python_for(runtime)))
    servers.append(("torchscript", "full (.venv)", python_for(full)))
    for backend, env, python in servers:
        result["rows"].append(_measure_server(ctx, package, backend, env, python, settings))
    result["tables"].append(make_table(
        f"footprint: ganport serve with one model ({MODEL}), median of {settings['repeats']} start(s)",
        ["backend", "environment", "start -> SERVING s", "RSS MiB", "peak RSS MiB", "libtorch mapped"],
        [[r["backend"], r["environment"], r["to_health_serving_s"], r["rss_mib"], r["peak_rss_mib"],
          r["libtorch_mapped"]] for r in result["rows"]]))
    onnx, torchscript = result["rows"][0], result["rows"][-1]
    result["headline"].append(headline("serve RSS, onnx backend", onnx["rss_mib"], "MiB",
                                       detail=f"torchscript: {torchscript['rss_mib']:.0f} MiB"))
    result["headline"].append(headline("serve start -> SERVING, onnx backend", onnx["to_health_serving_s"], "s",
                                       detail=f"torchscript: {torchscript['to_health_serving_s']:.2f} s"))
    result["triton"] = triton_status()
    result["notes"].append(f"Triton: {result['triton']['reason']}.")
    return result


def _runtime_venv(ctx: BenchContext, result: dict[str, Any]) -> Path | None:
    """``.venv-runtime`` if present; else build one in the scratch folder (not under --quick)."""
    existing = ROOT / ".venv-runtime"
    if python_for(existing).exists():
        result["settings"]["runtime_venv"] = str(existing)
        return existing
    if ctx.quick:
        result["notes"].append("no .venv-runtime and --quick: the runtime environment was not built or measured "
                               "(`make runtime-venv` builds it)")
        return None
    venv = ctx.workdir / "venv-runtime"
    logger.info("building a runtime-only venv in %s (pip install '.[cpu]'; minutes)", venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(python_for(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check", ".[cpu]"],
                       cwd=ROOT, check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        result["notes"].append(f"could not build a runtime venv ({exc}); {detail.strip()[-300:]}")
        return None
    result["settings"]["runtime_venv"] = f"built for this run: pip install '.[cpu]' in {venv}"
    return venv


def _tree_size(path: Path) -> dict[str, int]:
    """Apparent bytes, on-disk bytes (512-byte blocks, as du) and file count under ``path``."""
    apparent = disk = files = 0
    for directory, _dirs, names in os.walk(path):
        for name in names:
            try:
                stat = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            apparent += stat.st_size
            disk += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
            files += 1
    return {"bytes": apparent, "disk_bytes": disk, "files": files}


def _environment_size(venv: Path) -> dict[str, Any]:
    """Sizes of a venv, its site-packages and its largest top-level entries; whether torch is in it."""
    python = python_for(venv)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    entries = []
    for entry in site.iterdir():
        size = _tree_size(entry) if entry.is_dir() and not entry.is_symlink() else \
            {"bytes": entry.lstat().st_size, "disk_bytes": entry.lstat().st_blocks * 512, "files": 1}
        entries.append({"name": entry.name, **size})
    entries.sort(key=lambda e: e["disk_bytes"], reverse=True)
    return {"venv_path": str(venv), "site_packages_path": str(site), "venv": _tree_size(venv),
            "site_packages": _tree_size(site), "has_torch": (site / "torch").is_dir(),
            "largest": [e for e in entries if not e["name"].endswith((".dist-info", ".pth"))][:8]}


def _measure_server(ctx: BenchContext, package: Path, backend: str, env: str, python: Path,
                    settings: dict[str, Any]) -> dict[str, Any]:
    """Start ``ganport serve`` ``repeats`` times; median start-up, memory after warm requests."""
    from ganport.runtime.server.client import GanportClient

    runs = []
    for attempt in range(settings["repeats"]):
        logger.info("ganport serve --backend %s in %s (start %d)", backend, env, attempt + 1)
        log = ctx.workdir / f"serve-footprint-{backend}-{len(runs)}-{attempt}.log"
        with ServeProcess(package, ["--backend", backend, "--threads", str(ctx.threads)], python=python,
                          cwd=ctx.workdir, log_path=log) as server:
            with GanportClient(server.target, timeout=120.0) as client:
                for seed in range(settings["warm_requests"]):
                    client.generate(MODEL, 64, seed=seed)
            runs.append({**server.startup, **server.memory(), **{
                f"{lib}_mapped": mapped for lib, mapped in server.loaded(LIBRARIES).items()}})
    row = {"backend": backend, "environment": env, "python": str(python), "starts": runs}
    for key in ("to_serving_line_s", "to_health_serving_s", "rss_mib", "peak_rss_mib"):
        row[key] = statistics.median(r[key] for r in runs)
    row["libtorch_mapped"] = any(r["libtorch_mapped"] for r in runs)
    row["onnxruntime_mapped"] = any(r["onnxruntime_mapped"] for r in runs)
    return row
