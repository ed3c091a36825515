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

* Extras: what each extra of ``pyproject.toml`` adds on disk on top of the always-installed
  core (numpy, pillow), from the distributions installed in ``.venv`` (which has them all):
  the closure of each extra's requirements (``importlib.metadata``), minus the core's closure,
  summed over each distribution's files (its RECORD). Also ``embed`` (the embed-only install,
  no server) against ``cpu`` (runtime + server), the saving the ``embed`` extra offers.

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

from benchmarks.common import (ROOT, RUNTIME_VENV, BenchContext, headline, make_table, new_result, python_for,
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

    extras = extra_costs()
    result["extras"] = extras
    result["tables"].append(make_table(
        "footprint: what each extra adds to the core (numpy, pillow), installed MiB",
        ["extra", "adds MiB", "distributions it adds"],
        [[e["extra"], e["adds_bytes"] / MIB, ", ".join(f"{d} {b / MIB:.1f}" for d, b in e["largest"][:6])]
         for e in extras["rows"]]))
    embed, cpu = extras["installs"]["embed"], extras["installs"]["cpu"]
    result["headline"].append(headline(
        "embed-only install / cpu install", embed / cpu, "x",
        detail=f"{embed / MIB:,.0f} vs {cpu / MIB:,.0f} MiB: 'ganport[embed]' saves {(cpu - embed) / MIB:,.0f} MiB"))

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


#: The core distributions and extras measured (``dev`` is the test tooling, not an install option).
EXTRAS_MEASURED = ("embed", "serve", "cpu", "train", "export")


def _requirement_closure(roots: list[str]) -> set[str]:
    """Normalised names of the installed distributions ``roots`` (requirement strings) pull in."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in roots]
    while todo:
        requirement, _ = todo.pop()
        name = canonicalize_name(requirement.name)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency not installed here (e.g. onnxruntime-gpu)
        extras = set(requirement.extras)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras or {""}):
                if child.marker is not None and not extras and "extra" in str(child.marker):
                    continue
                todo.append((child, name))
    return {key.split("[")[0] for key in seen}


def _dist_bytes(name: str) -> int:
    """Bytes of an installed distribution's files (as its RECORD lists them, measured on disk)."""
    import importlib.metadata as metadata

    total = 0
    for file in metadata.distribution(name).files or []:
        try:
            total += Path(file.locate()).stat().st_size
        except OSError:
            pass
    return total


def extra_costs() -> dict[str, Any]:
    """Installed bytes each extra adds to the core, and the embed vs cpu install sizes.

    Runs in the full environment (every extra installed). ``ganport`` itself is counted in the
    core (its own files, the built-in model included).
    """
    core = _requirement_closure(["ganport"])
    sizes: dict[str, int] = {}

    def size(names: set[str]) -> int:
        for name in names - set(sizes):
            sizes[name] = _dist_bytes(name)
        return sum(sizes[name] for name in names)

    rows, installs = [], {}
    for extra in EXTRAS_MEASURED:
        closure = _requirement_closure([f"ganport[{extra}]"])
        added = closure - core
        installs[extra] = size(closure)
        rows.append({"extra": extra, "adds_bytes": size(added),
                     "largest": sorted(((n, sizes[n]) for n in added), key=lambda item: -item[1])})
    return {"core_bytes": size(core), "core": sorted(core), "rows": rows, "installs": installs}


def _runtime_venv(ctx: BenchContext, result: dict[str, Any]) -> Path | None:
    """``.venv-runtime`` if present; else build one in the scratch folder (not under --quick)."""
    existing = ROOT / RUNTIME_VENV
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
