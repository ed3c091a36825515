"""ganport against a real Triton peer, side by side in one run: ``python -m benchmarks.run --only peer``.

The peer is Triton Inference Server as PyTriton 0.7.0 ships it (tritonserver 2.51, Python backend),
serving the **same** ``model.onnx`` of the same ganport package through onnxruntime inside the
PyTriton callable (:mod:`benchmarks.peer_triton`), dynamic batching with ``max_batch_size`` 64 and a
2 ms queue delay, onnxruntime with the same intra-op thread count as ganport and intra-op spinning
off (``GANPORT_BENCH_PEER_SPIN=1`` keeps onnxruntime's default spinning). It runs in its own
venv, ``build/peer-venv``, made from Debian's ``/usr/bin/python3.11`` (:mod:`benchmarks.peer_env`;
built here when missing, except under ``--quick``). Set ``GANPORT_BENCH_PEER=off`` to skip the
peer, or to a Python interpreter to use another peer environment.

ganport runs as ``ganport serve`` subprocesses (:class:`benchmarks.servers.ServeProcess`) with its
default settings (``--threads`` only when it is not the core count, ``--metrics-port``), plus one with
``--max-batch 1`` for the sequential comparison. Both servers are driven by the same
multi-process closed-loop load generator (:mod:`benchmarks.load`): ``tritonclient.grpc`` for
both (ganport's KServe v2 service), and ganport's native ``Generate`` (raw uint8) for ganport.
Rounds are interleaved (ganport, Triton, ganport, Triton..., the order rotated each round) so
machine noise hits both; figures aggregate all rounds.

Loads, per model (MLP cGAN 28x28, DCGAN 64x64):

* ``32 x 1``: 32 client processes, one image per request;
* ``1 x 64``: one client, 64 images per request;
* ``1 x 1``: one client, one image at a time (ganport default vs ``--max-batch 1`` vs Triton).

A second phase measures the ``32 x 1`` load with both servers given two model instances of
``threads / 2`` intra-op threads each (``ganport serve --instances 2``; two PyTriton callables, one
onnxruntime session each), so each ganport configuration is compared with Triton configured alike.

Plus cold start (spawn to the model answering ready: ganport's health SERVING, Triton's
``is_model_ready``) and resident memory with one model after warm requests (ganport: the
process; Triton: the sum over its process tree: the PyTriton process, tritonserver and the
Python backend stub). Mean batch sizes come from the servers' Prometheus metrics
(``ganport_batch_size`` sum/count; Triton ``nv_inference_count`` / ``nv_inference_exec_count``).

When the peer cannot be built or started the benchmark says why in one line and still reports
ganport's own figures.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import ROOT, RUNTIME_VENV, BenchContext, headline, make_table, new_result, percentiles, python_for
from benchmarks.load import LoadPool, Point
from benchmarks.models import MODELS
from benchmarks.peer_env import PEER_VENV, PeerUnavailable, ensure_peer_venv
from benchmarks.servers import ServeProcess, proc_memory, prometheus_value

logger = logging.getLogger(__name__)

PEER_SCRIPT = ROOT / "benchmarks" / "peer_triton.py"
MAX_BATCH = 64
QUEUE_DELAY_US = 2000
#: Targets from issue 11 (ganport vs the Triton peer, same run).
TARGETS = {"many_mlp28": 1.2, "many_dcgan64": 1.1, "native_vs_kserve": 1.0, "sequential_vs_mb1": 1.3,
           "cold_start_s": 1.5, "rss_mib": 110.0}
_READY_LINE = re.compile(r"peer serving (\S+) on (\S+):(\d+) \(http (\d+), metrics (\d+)\)")
MIB = 2**20


# ------------------------------------------------------------------------------- the peer server

def peer_python(ctx: BenchContext) -> Path:
    """The peer venv's interpreter; raises :class:`PeerUnavailable` with the reason."""
    choice = os.environ.get("GANPORT_BENCH_PEER", "").strip()
    if choice.lower() in ("off", "0", "no", "none", "skip"):
        raise PeerUnavailable(f"skipped (GANPORT_BENCH_PEER={choice})")
    if choice:
        if not Path(choice).exists():
            raise PeerUnavailable(f"GANPORT_BENCH_PEER={choice}: no such interpreter")
        return Path(choice)
    # --quick never spends a minute or two installing; `make peer-venv` builds it beforehand.
    return ensure_peer_venv(PEER_VENV, build=not ctx.quick)


class PeerProcess:
    """``peer_triton.py PACKAGE`` in the peer venv, as a subprocess in its own session.

    Args:
        python: the peer venv's interpreter.
        package: the ganport model package (its ``model.onnx`` is served).
        scratch: a folder for PyTriton's workspace (``PYTRITON_HOME``) and ``TMPDIR``; removed at stop.
        log_path: where the peer's output goes.
        threads, max_batch, queue_delay_us, spin: see :mod:`benchmarks.peer_triton`.

    Attributes (after :meth:`start`): ``target``, ``metrics_port``, ``startup`` (seconds from spawn
    to the ready line and to ``is_model_ready``).
    """

    def __init__(self, python: Path, package: Path, scratch: Path, *, log_path: Path, threads: int,
                 max_batch: int = MAX_BATCH, queue_delay_us: int = QUEUE_DELAY_US, spin: bool = False,
                 instances: int = 1, timeout: float = 180.0):
        self.command = [str(python), str(PEER_SCRIPT), str(package), "--threads", str(threads),
                        "--max-batch", str(max_batch), "--queue-delay-us", str(queue_delay_us),
                        "--instances", str(instances), *(["--spin"] if spin else [])]
        self.model = package.name
        self.scratch = scratch
        self.log_path = log_path
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.target = ""
        self.metrics_port: int | None = None
        self.startup: dict[str, float] = {}
        self._lines: queue.Queue = queue.Queue()
        self._backend_dirs: set[Path] = set()

    def start(self) -> "PeerProcess":
        """Spawn the peer, wait for its ready line, then for ``is_model_ready``; raises PeerUnavailable."""
        tmp = self.scratch / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp),
               "PYTRITON_HOME": str(self.scratch / "pytriton")}
        env.pop("PYTHONPATH", None)
        spawned = time.perf_counter()
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=self.scratch, env=env, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True, name="peer-stdout").start()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise PeerUnavailable(f"the Triton peer did not start in {self.timeout:.0f} s; see {self.log_path}") \
                    from None
            if line is None:
                code = self.proc.wait()
                raise PeerUnavailable(f"the Triton peer exited with {code} before serving: "
                                      f"{self._last_error()} (log: {self.log_path})")
            match = _READY_LINE.search(line)
            if match:
                line_at = time.perf_counter()
                self.target = f"127.0.0.1:{match.group(3)}"
                self.metrics_port = int(match.group(5))
                break
        import tritonclient.grpc as triton

        client = triton.InferenceServerClient(self.target)
        try:
            while not _safe(lambda: client.is_model_ready(self.model)):
                if time.monotonic() > deadline:
                    self.stop()
                    raise PeerUnavailable(f"the Triton peer never reported {self.model} ready")
                time.sleep(0.02)
            ready_at = time.perf_counter()
        finally:
            client.close()
        self.startup = {"to_ready_line_s": line_at - spawned, "to_model_ready_s": ready_at - spawned}
        for pid in self.tree():
            # The Python backend copies the model to /tmp/folderXXXXXX (not $TMPDIR): note it to remove.
            for arg in _cmdline(pid):
                found = re.match(r"(/tmp/folder[^/]+)/", arg)
                if found:
                    self._backend_dirs.add(Path(found.group(1)))
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "w") as log, self.proc.stdout:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                self._lines.put(line)
        self._lines.put(None)

    def _last_error(self) -> str:
        try:
            lines = [line.strip() for line in Path(self.log_path).read_text().splitlines() if line.strip()]
        except OSError:
            return "no log"
        errors = [line for line in lines if "Error" in line or "error" in line or line.startswith("E")]
        return ((errors or lines or ["no output"])[-1])[:300]

    def tree(self) -> list[int]:
        """The peer's pid and every descendant's."""
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def memory(self) -> dict[str, Any]:
        """:func:`proc_memory`'s figures summed over the process tree, and each process's VmRSS."""
        total = {"rss_mib": 0.0, "peak_rss_mib": 0.0, "rss_anon_mib": 0.0, "rss_file_mib": 0.0}
        processes = []
        for pid in self.tree():
            values = proc_memory(pid)
            for key in total:
                total[key] += values.get(key, 0.0)
            processes.append({"pid": pid, "name": Path(_cmdline(pid)[0]).name if _cmdline(pid) else "?",
                              "rss_mib": round(values.get("rss_mib", 0.0), 1)})
        return {**total, "processes": processes}

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            return reply.read().decode("utf-8")

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM (PyTriton stops tritonserver), then SIGKILL to the session's processes; clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("the Triton peer (pid %d) ignored SIGTERM for %.0f s; killing it", self.proc.pid, timeout)
        if self.proc is not None:
            # Its own session: the group id is its pid; whatever of it is left (tritonserver, stub) goes.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(1.0)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for directory in self._backend_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(self.scratch / "tmp", ignore_errors=True)
        shutil.rmtree(self.scratch / "pytriton", ignore_errors=True)

    def __enter__(self) -> "PeerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - not up yet
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


# ------------------------------------------------------------------------------- the benchmark

def run(ctx: BenchContext) -> dict[str, Any]:
    """Both servers, the same loads, interleaved rounds; returns the result dict."""
    names = ctx.pick(["mlp28"], ["mlp28", "dcgan64"])
    many = ctx.pick(4, 32)
    settings = {
        "models": {n: MODELS[n].description for n in names}, "threads": ctx.threads,
        "rounds": ctx.pick(1, 3), "many_clients": many,
        "seconds": {"many": ctx.pick(1.0, 4.0), "batch64": ctx.pick(0.5, 3.0), "sequential": ctx.pick(0.5, 3.0)},
        "max_calls_per_client": ctx.pick(300, 20000), "startup_repeats": ctx.pick(1, 3),
        "ganport": "ganport serve subprocess, default batching flags, --metrics-port 0, --threads only when "
                   "--threads is not the core count (else the server's defaults: threads and --instances "
                   "auto) (+ one with --max-batch 1)",
        "peer": f"PyTriton 0.7.0 (tritonserver 2.51, Python backend) in {PEER_VENV.relative_to(ROOT)}: the same "
                f"model.onnx through onnxruntime in the callable; max_batch_size {MAX_BATCH}, dynamic batching "
                f"max_queue_delay {QUEUE_DELAY_US} us; onnxruntime intra-op threads {ctx.threads}, one inter-op "
                f"thread, intra-op spinning {'on (GANPORT_BENCH_PEER_SPIN)' if _peer_spin() else 'off'}",
        "load": "benchmarks.load: client processes (spawn), closed loop; tritonclient.grpc for both servers, "
                "GanportClient.generate (raw uint8) for ganport's native API",
    }
    result = new_result("peer", ctx, settings)
    try:
        python: Path | None = peer_python(ctx)
        reason = None
    except PeerUnavailable as exc:
        python, reason = None, str(exc)
    if python is not None:
        settings["peer_python"] = str(python)
    settings["peer_queue_delay_us"] = QUEUE_DELAY_US
    state = {"python": python, "reason": reason}

    _startup_and_memory(ctx, result, state)
    with LoadPool(many) as pool:
        for name in names:
            _measure_model(ctx, result, pool, name, state)
            pool.close_clients()
    if state["reason"]:
        line = f"Triton peer not measured: {state['reason']}"
        print(f"  peer: {line}", flush=True)
        result["notes"].insert(0, line)
        result["peer"] = {"measured": False, "reason": state["reason"]}
    else:
        result["peer"] = {"measured": True, "python": str(state["python"])}
    return result


def _peer_spin() -> bool:
    """``GANPORT_BENCH_PEER_SPIN=1``: the peer keeps onnxruntime's default intra-op spinning."""
    return os.environ.get("GANPORT_BENCH_PEER_SPIN", "").strip().lower() in ("1", "yes", "on", "true")


def _start_peer(ctx: BenchContext, state: dict[str, Any], package: Path, tag: str, *,
                threads: int | None = None, instances: int = 1) -> PeerProcess | None:
    """Start the peer for ``package``, or record why it cannot start (then never try again)."""
    if state["python"] is None or state["reason"]:
        return None
    scratch = ctx.workdir / f"peer-{tag}"
    scratch.mkdir(parents=True, exist_ok=True)
    peer = PeerProcess(state["python"], package, scratch, log_path=ctx.workdir / f"peer-{tag}.log",
                       threads=threads or ctx.threads, spin=_peer_spin(), instances=instances)
    try:
        return peer.start()
    except PeerUnavailable as exc:
        peer.stop()
        state["reason"] = str(exc)
        logger.warning("Triton peer: %s", exc)
        return None


def _ganport_threads(ctx: BenchContext, extra: tuple[str, ...]) -> list[str]:
    """``--threads`` for a ganport server: none when ``--threads`` is the machine's core count
    (the server's own defaults then decide threads and instances, as for a user who sets
    nothing), else ``ctx.threads``; an explicit ``--threads`` in ``extra`` wins."""
    if "--threads" in extra or ctx.threads == len(os.sched_getaffinity(0)):
        return []
    return ["--threads", str(ctx.threads)]


def _ganport(ctx: BenchContext, package: Path, tag: str, *extra: str, python: str = sys.executable) -> ServeProcess:
    args = [*_ganport_threads(ctx, extra), "--metrics-port", "0", *extra]
    return ServeProcess(package, args, python=python, cwd=ctx.workdir, log_path=ctx.workdir / f"serve-peer-{tag}.log")


def _warm(target: str, model: str, n_classes: int, latent_dim: int, requests: int) -> None:
    """A few one-image and batch-64 KServe requests (the same for both servers) before measuring memory."""
    import numpy as np
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(target)
    try:
        for i in range(requests):
            n = MAX_BATCH if i % 4 == 3 else 1
            z = triton.InferInput("z", [n, latent_dim], "FP32")
            z.set_data_from_numpy(np.random.default_rng(i).standard_normal((n, latent_dim)).astype(np.float32))
            inputs = [z]
            if n_classes:
                label = triton.InferInput("label", [n, 1], "INT64")
                label.set_data_from_numpy(np.full((n, 1), i % n_classes, dtype=np.int64))
                inputs.append(label)
            client.infer(model, inputs, outputs=[triton.InferRequestedOutput("image")]).as_numpy("image")
    finally:
        client.close()


def _startup_and_memory(ctx: BenchContext, result: dict[str, Any], state: dict[str, Any]) -> None:
    """Cold start and RSS of each server with one model (the MLP cGAN), median of a few starts.

    ganport is measured as users install it, ``pip install 'ganport[cpu]'`` (``.venv-runtime``,
    built by ``make bench``), like the peer's own venv; and, beside it, from the development venv
    (``.venv``: an editable install with torch). The two differ by up to 15 MiB either way in
    their file-backed pages (RssFile) although they map identical library files: how many pages
    one fault maps depends on the page cache's folio sizes for each file (Linux 6.18), so the
    anonymous part (RssAnon) is the figure that compares builds; both are reported.
    """
    name = "mlp28"
    spec = MODELS[name]
    package = ctx.zoo.package(name, ("onnx",))
    repeats = result["settings"]["startup_repeats"]
    warm = ctx.pick(4, 20)
    installs = {"ganport": sys.executable}
    runtime = python_for(ROOT / RUNTIME_VENV)
    if runtime.exists():
        installs = {"ganport": str(runtime), "ganport-dev": sys.executable}
    else:
        result["notes"].append(f"no {RUNTIME_VENV} (`make runtime-venv`): ganport's cold start and RSS are "
                               f"from the development venv (editable, with torch)")
    result["settings"]["startup_python"] = installs
    rows: dict[str, list[dict[str, Any]]] = {key: [] for key in (*installs, "triton")}
    for attempt in range(repeats):
        for key, python in installs.items():
            with _ganport(ctx, package, f"startup-{key}-{attempt}", python=python) as server:
                _warm(server.target, name, spec.n_classes, 100, warm)
                rows[key].append({"startup_s": server.startup["to_health_serving_s"], **server.memory()})
        peer = _start_peer(ctx, state, package, f"startup-{attempt}")
        if peer is not None:
            try:
                _warm(peer.target, name, spec.n_classes, 100, warm)
                memory = peer.memory()
                rows["triton"].append({"startup_s": peer.startup["to_model_ready_s"], **memory})
            finally:
                peer.stop()
    summary = {}
    for server, runs in rows.items():
        if runs:
            summary[server] = {key: statistics.median(r.get(key, float("nan")) for r in runs) for key in
                               ("startup_s", "rss_mib", "peak_rss_mib", "rss_anon_mib", "rss_file_mib")}
            summary[server]["starts"] = runs
    result["startup"] = summary
    g, t, dev = summary["ganport"], summary.get("triton"), summary.get("ganport-dev")
    label = "ganport serve" + (f" ({RUNTIME_VENV})" if dev else "")
    def row(name: str, s: dict[str, Any], processes: str) -> list[Any]:
        return [name, s["startup_s"], s["rss_mib"], s["rss_anon_mib"], s["rss_file_mib"], s["peak_rss_mib"], processes]

    body = [row(label, g, "1 (the server)")]
    if dev:
        body.append(row("ganport serve (.venv, development)", dev, "1 (the server)"))
    if t:
        body.append(row("Triton (PyTriton)", t,
                        ", ".join(f"{p['name']} {p['rss_mib']:.0f}" for p in t["starts"][-1]["processes"])))
        body.append(["ganport / Triton", *(f"{g[key] / t[key]:.2f}x" for key in
                                          ("startup_s", "rss_mib", "rss_anon_mib", "rss_file_mib", "peak_rss_mib")),
                     ""])
    result["tables"].append(make_table(
        f"peer: cold start and memory with one model ({name}), median of {repeats} start(s)",
        ["server", "spawn -> ready s", "RSS MiB", "anon MiB", "file MiB", "peak RSS MiB", "processes (RSS MiB)"],
        body, note="ready: ganport health SERVING, Triton is_model_ready; RSS after warm requests (Triton: summed "
                   "over its processes) = anon (RssAnon: heap, stacks) + file (RssFile: mapped library pages, "
                   "which vary with the page cache: benchmarks.servers.proc_memory)"))
    triton_detail = (f"Triton {t['startup_s']:.2f} s" if t else "Triton not measured")
    result["headline"].append(headline(
        f"cold start (spawn -> ready), {label}, one model", g["startup_s"], "s",
        target=f"<= {TARGETS['cold_start_s']:g} s", met=g["startup_s"] <= TARGETS["cold_start_s"],
        detail=triton_detail))
    details = [f"anon {g['rss_anon_mib']:.0f} + file {g['rss_file_mib']:.0f} MiB",
               f"Triton {t['rss_mib']:.0f} MiB (all processes)" if t else "Triton not measured"]
    if dev:
        details.append(f"development venv {dev['rss_mib']:.0f} MiB")
    result["headline"].append(headline(
        f"RSS with one model, {label}", g["rss_mib"], "MiB", target=f"<= {TARGETS['rss_mib']:g} MiB",
        met=g["rss_mib"] <= TARGETS["rss_mib"], detail="; ".join(details)))


#: (load key, clients (None: the many-clients count), images per request)
LOADS = (("many", None, 1), ("batch64", 1, MAX_BATCH), ("sequential", 1, 1))
#: Model instances of the "-i2" servers (each with threads / INSTANCES intra-op threads).
INSTANCES = 2
#: The paths each load measures: (server key, protocol).
PATHS = {
    "many": (("ganport", "kserve"), ("ganport", "native"), ("triton", "kserve"),
             ("ganport-i2", "kserve"), ("ganport-i2", "native"), ("triton-i2", "kserve")),
    "batch64": (("ganport", "kserve"), ("ganport", "native"), ("triton", "kserve")),
    "sequential": (("ganport", "kserve"), ("ganport", "native"), ("ganport-mb1", "kserve"),
                   ("ganport-mb1", "native"), ("triton", "kserve")),
}
LABELS = {"ganport": "ganport", "ganport-mb1": "ganport --max-batch 1", "triton": "Triton (PyTriton)",
          "ganport-i2": f"ganport --instances {INSTANCES}", "triton-i2": f"Triton, {INSTANCES} instances"}


def _batch_counts(server: Any, kind: str, model: str) -> tuple[float, float]:
    """(images, model calls) so far, from the server's metrics ((0, 0) when they cannot be read)."""
    try:
        text = server.metrics_text()
    except Exception as exc:  # noqa: BLE001 - a missing metrics port costs the mean batch, not the run
        logger.warning("cannot read %s metrics: %s", kind, exc)
        return 0.0, 0.0
    if kind == "triton":
        labels = {"model": model}
        return (prometheus_value(text, "nv_inference_count", labels),
                prometheus_value(text, "nv_inference_exec_count", labels))
    labels = {"model": model}
    return (prometheus_value(text, "ganport_batch_size_sum", labels),
            prometheus_value(text, "ganport_batch_size_count", labels))


def _measure_model(ctx: BenchContext, result: dict[str, Any], pool: LoadPool, name: str,
                   state: dict[str, Any]) -> None:
    """Every load on ganport, ganport --max-batch 1 and the peer, rounds interleaved."""
    spec = MODELS[name]
    settings = result["settings"]
    package = ctx.zoo.package(name, ("onnx",))
    per_instance = str(max(1, ctx.threads // INSTANCES))
    # Two phases, each with its own servers: two PyTriton peers cannot run side by side.
    phases = ((
        (("ganport", ()), ("ganport-mb1", ("--max-batch", "1"))), (("triton", {}),),
    ), (
        (("ganport-i2", ("--instances", str(INSTANCES), "--threads", per_instance)),),
        (("triton-i2", {"instances": INSTANCES, "threads": int(per_instance)}),),
    ))
    acc: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ganports, peers in phases:
        servers: dict[str, Any] = {}
        stack = []
        try:
            for key, extra in ganports:
                servers[key] = _ganport(ctx, package, f"{name}-{key}", *extra).start()
                stack.append(servers[key])
            for key, options in peers:
                peer = _start_peer(ctx, state, package, f"{name}-{key}", **options)
                if peer is not None:
                    servers[key] = peer
                    stack.append(peer)
            _run_rounds(settings, pool, name, spec, servers, acc)
        finally:
            pool.close_clients()
            for server in reversed(stack):
                server.stop()
    rows = []
    for (load, key, protocol), slot in acc.items():
        clients = dict((l, c) for l, c, _ in LOADS)[load] or settings["many_clients"]
        batch = dict((l, b) for l, _, b in LOADS)[load]
        rows.append({"model": name, "load": load, "clients": clients, "batch": batch, "server": key,
                     "protocol": protocol, "calls": slot["calls"], "seconds": round(slot["seconds"], 3),
                     "images_per_s": slot["calls"] * batch / slot["seconds"] if slot["seconds"] else float("nan"),
                     **percentiles(slot["latencies"], scale=1000.0, suffix="_ms"),
                     "mean_batch": slot["images"] / slot["batches"] if slot["batches"] else float("nan"),
                     "images_per_s_by_round": slot["rounds"], "load_average_by_round": slot["load"],
                     "error_count": slot["error_count"],
                     "errors": slot["errors"][:3]})
    result["rows"].extend(rows)
    _report_model(result, name, rows, state)


def _run_rounds(settings: dict[str, Any], pool: LoadPool, name: str, spec: Any, servers: dict[str, Any],
                acc: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    """Every load on every path of ``servers``, rounds interleaved; accumulates into ``acc``."""
    for round_index in range(settings["rounds"]):
        for load, clients, batch in LOADS:
            clients = clients or settings["many_clients"]
            paths = [p for p in PATHS[load] if p[0] in servers]
            if not paths:
                continue
            shift = round_index % len(paths)
            for key, protocol in paths[shift:] + paths[:shift]:
                server = servers[key]
                point = Point(protocol, server.target, name, batch, 100, spec.n_classes,
                              settings["seconds"][load], settings["max_calls_per_client"])
                kind = "triton" if key.startswith("triton") else "ganport"
                before = _batch_counts(server, kind, name)
                row = pool.run(point, clients)
                after = _batch_counts(server, kind, name)
                logger.info("%s %s round %d: %s %s: %.0f img/s, p50 %.2f ms", name, load, round_index + 1,
                            key, protocol, row["images_per_s"], row["p50_ms"])
                slot = acc.setdefault((load, key, protocol), {"calls": 0, "seconds": 0.0, "latencies": [],
                                                              "images": 0.0, "batches": 0.0, "error_count": 0,
                                                              "errors": [], "rounds": [], "load": []})
                slot["calls"] += row["calls"]
                slot["seconds"] += row["seconds"]
                slot["latencies"].extend(row.pop("latencies"))
                slot["images"] += after[0] - before[0]
                slot["batches"] += after[1] - before[1]
                slot["error_count"] += row["error_count"]
                slot["errors"].extend(row["errors"])
                slot["rounds"].append(round(row["images_per_s"], 1))
                slot["load"].append(round(os.getloadavg()[0], 1))


def _report_model(result: dict[str, Any], name: str, rows: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """The model's table and headline ratios (ganport / Triton, native / KServe, default / max-batch 1)."""
    def find(load: str, server: str, protocol: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["load"] == load and r["server"] == server and r["protocol"] == protocol),
                    None)

    many = result["settings"]["many_clients"]
    titles = {"many": f"{many} clients x 1 image", "batch64": "1 client x 64 images", "sequential": "1 client x 1 image"}
    body = []
    for load, _, _ in LOADS:
        for server, protocol in PATHS[load]:
            row = find(load, server, protocol)
            if row is None:
                continue
            # Each ganport configuration against the peer configured alike (instances, threads).
            peer = find(load, "triton-i2" if server.endswith("-i2") else "triton", "kserve")
            ours = not server.startswith("triton")
            versus = f"{row['images_per_s'] / peer['images_per_s']:.2f}x" if peer and ours else ""
            p50_versus = f"{row['p50_ms'] / peer['p50_ms']:.2f}x" if peer and ours else ""
            body.append([titles[load], LABELS[server], "tritonclient" if protocol == "kserve" else "native",
                         row["images_per_s"], row["p50_ms"], row["p99_ms"], row["mean_batch"], versus, p50_versus,
                         row["error_count"]])
    errors = sum(r["error_count"] for r in rows)
    loads = [x for r in rows for x in r["load_average_by_round"]]
    result["tables"].append(make_table(
        f"peer: {MODELS[name].description}, ganport vs Triton (images/s, latency ms)",
        ["load", "server", "client", "img/s", "p50", "p99", "mean batch", "img/s / Triton", "p50 / Triton",
         "errors"], body,
        note=f"{result['settings']['rounds']} interleaved round(s); mean batch from each server's metrics; "
             f"1-minute load average after each point {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs"
             + (f"; Triton not measured: {state['reason']}" if state["reason"] and not find("many", "triton", "kserve")
                else "")))
    if errors:
        result["notes"].append(f"{name}: {errors} failed request(s); first: "
                               f"{next(e for r in rows for e in r['errors'])}")

    no_peer = f"Triton not measured: {state['reason']}" if state["reason"] else "Triton not measured"
    g, n, t = find("many", "ganport", "kserve"), find("many", "ganport", "native"), find("many", "triton", "kserve")
    target = TARGETS.get(f"many_{name}")
    def versus_triton(title: str, ours: dict[str, Any], native: dict[str, Any], peer: dict[str, Any]) -> None:
        ratio = ours["images_per_s"] / peer["images_per_s"]
        result["headline"].append(headline(
            title, ratio, "x", target=f">= {target:g}x" if target else None, met=ratio >= target if target else None,
            detail=f"{ours['images_per_s']:,.0f} vs {peer['images_per_s']:,.0f} img/s; ganport native "
                   f"{native['images_per_s']:,.0f} = {native['images_per_s'] / peer['images_per_s']:.2f}x"))

    if t:
        versus_triton(f"{many} clients x 1 image, {name}: ganport / Triton img/s (tritonclient for both)", g, n, t)
        ratio = g["mean_batch"] / t["mean_batch"]
        result["headline"].append(headline(
            f"{many} clients x 1 image, {name}: mean batch ganport / Triton", ratio, "x", target=">= 1x",
            met=ratio >= 1.0, detail=f"{g['mean_batch']:.1f} vs {t['mean_batch']:.1f} (native {n['mean_batch']:.1f})"))
    else:
        result["headline"].append(headline(
            f"{many} clients x 1 image, {name}: ganport / Triton img/s", None, "x",
            target=f">= {target:g}x" if target else None,
            detail=f"ganport {g['images_per_s']:,.0f} img/s, mean batch {g['mean_batch']:.1f}; {no_peer}"))
    g2, n2, t2 = (find("many", "ganport-i2", "kserve"), find("many", "ganport-i2", "native"),
                  find("many", "triton-i2", "kserve"))
    if g2:
        ratio = g2["images_per_s"] / g["images_per_s"]
        result["headline"].append(headline(
            f"{many} clients x 1 image, {name}: ganport --instances {INSTANCES} / default img/s", ratio, "x",
            detail=f"{g2['images_per_s']:,.0f} vs {g['images_per_s']:,.0f} img/s (tritonclient); native "
                   f"{n2['images_per_s']:,.0f}; mean batch {g2['mean_batch']:.1f}"))
    if g2 and t2:
        versus_triton(f"{many} clients x 1 image, {name}: ganport / Triton img/s, both {INSTANCES} instances",
                      g2, n2, t2)
    ratio = n["images_per_s"] / g["images_per_s"]
    result["headline"].append(headline(
        f"{many} clients x 1 image, {name}: native / KServe img/s (ganport)", ratio, "x",
        target=f">= {TARGETS['native_vs_kserve']:g}x", met=ratio >= TARGETS["native_vs_kserve"],
        detail=f"{n['images_per_s']:,.0f} vs {g['images_per_s']:,.0f} img/s"))
    seq, seq_mb1 = find("sequential", "ganport", "native"), find("sequential", "ganport-mb1", "native")
    seq_k, seq_k1 = find("sequential", "ganport", "kserve"), find("sequential", "ganport-mb1", "kserve")
    seq_t = find("sequential", "triton", "kserve")
    ratio = seq["p50_ms"] / seq_mb1["p50_ms"]
    result["headline"].append(headline(
        f"1 client x 1 image, {name}: p50 ganport default / --max-batch 1 (native)", ratio, "x",
        target=f"<= {TARGETS['sequential_vs_mb1']:g}x", met=ratio <= TARGETS["sequential_vs_mb1"],
        detail=f"{seq['p50_ms']:.2f} vs {seq_mb1['p50_ms']:.2f} ms; tritonclient {seq_k['p50_ms']:.2f} vs "
               f"{seq_k1['p50_ms']:.2f} ms; " + (f"Triton {seq_t['p50_ms']:.2f} ms" if seq_t else no_peer)))
    b, bt = find("batch64", "ganport", "kserve"), find("batch64", "triton", "kserve")
    if bt:
        ratio = b["images_per_s"] / bt["images_per_s"]
        result["headline"].append(headline(
            f"1 client x 64 images, {name}: ganport / Triton img/s (tritonclient for both)", ratio, "x",
            target="> 1x", met=ratio > 1.0,
            detail=f"{b['images_per_s']:,.0f} vs {bt['images_per_s']:,.0f} img/s; native "
                   f"{find('batch64', 'ganport', 'native')['images_per_s']:,.0f}"))
