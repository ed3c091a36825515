"""ganport and the latest tritonclient share one environment (the README's install line, for real).

A fresh virtual environment gets exactly ``pip install '.[cpu]' 'tritonclient[all]'`` from the
package index, as a user would type it. The test asserts that pip resolved the newest tritonclient
(the one pip picks for ``tritonclient`` alone, i.e. no backtracking to an old release because of
ganport's protobuf/grpcio ranges) with no broken requirement, then serves a tiny exported model with
``ganport serve`` from that environment and talks to it from the same environment: the standard
health check says SERVING, and ``tritonclient.grpc`` gets server/model metadata and an inference.
Last, a protobuf older than the stubs' floor is forced in, and ``ganport serve`` must say so in one
``error:`` line.
The client process also imports ganport's server and runs one in-process next to
``tritonclient.grpc``: both register ``inference.*`` messages, and ganport keeps its own in a
private descriptor pool so they do not clash.

Needs the network (the package index) and takes a minute or two, mostly pip; pip's cache makes
reruns faster. Without a reachable index it skips, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVING_LINE = re.compile(r"serving (\d+) model\(s\) on (\S+):(\d+)")
MODEL = "tiny"

pytestmark = pytest.mark.timeout(540)

# Runs inside the scratch environment: tritonclient.grpc and ganport's server in one process.
CLIENT = r'''
import json, sys
import numpy as np
import grpc
import tritonclient.grpc as triton                 # registers inference.* in protobuf's default pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ganport.runtime.server import create_server   # ganport's KServe messages: a private pool

target, models_dir, model = sys.argv[1:4]
DTYPES = {"FP32": np.float32, "INT64": np.int64}


def ask(url):
    client = triton.InferenceServerClient(url=url)
    try:
        metadata = client.get_model_metadata(model)
        inputs = []
        for tensor in metadata.inputs:
            shape = [2 if d == -1 else d for d in tensor.shape]
            data = np.zeros(shape, DTYPES[tensor.datatype])
            if tensor.name == "z":
                data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            item = triton.InferInput(tensor.name, shape, tensor.datatype)
            item.set_data_from_numpy(data)
            inputs.append(item)
        image = client.infer(model, inputs, outputs=[triton.InferRequestedOutput("image")]).as_numpy("image")
        return {"live": client.is_server_live(), "ready": client.is_model_ready(model),
                "server": client.get_server_metadata().name,
                "inputs": [t.name for t in metadata.inputs], "image_shape": list(image.shape),
                "image_sum": float(np.abs(image).sum())}
    finally:
        client.close()


with grpc.insecure_channel(target) as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
report = {"health": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), "serve": ask(target)}
server, port = create_server("127.0.0.1:0", models_dir)
server.start()
try:
    report["in_process"] = ask(f"127.0.0.1:{port}")
finally:
    server.stop(grace=1)
print(json.dumps(report))
'''


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _version_alone(python: Path, name: str, tmp: Path) -> str:
    """The version pip picks for ``name`` alone from the index (the newest one for this Python)."""
    report = tmp / f"{name}-alone.json"
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                             "--no-deps", "--report", str(report), name], capture_output=True, text=True)
    if result.returncode != 0:
        message = f"the package index is not reachable: {result.stderr.strip().splitlines()[-1:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    [item] = json.loads(report.read_text())["install"]
    return item["metadata"]["version"]


@pytest.fixture(scope="module")
def models_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """A tiny exported package, made by the full environment (torch, onnx)."""
    from ganport.export import export_package

    root = tmp_path_factory.mktemp("coinstall-models")
    export_package(tiny_checkpoint("cgan"), root / MODEL, formats=("onnx",), name=MODEL)
    return root


def _serve(ganport: Path, models_dir: Path, cwd: Path, timeout: float = 90.0):
    """Start ``ganport serve`` and wait for its readiness line; returns (process, target, lines)."""
    proc = subprocess.Popen([str(ganport), "serve", str(models_dir), "--port", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    q: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            pytest.fail(f"ganport serve did not start in {timeout:.0f} s: {''.join(lines)}")
        if line is None:
            pytest.fail(f"ganport serve exited with {proc.wait()}: {''.join(lines)}")
        match = SERVING_LINE.search(line)
        if match:
            return proc, f"127.0.0.1:{match.group(3)}", lines


def test_latest_tritonclient_installs_next_to_ganport_and_the_server_starts(models_dir, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, ganport = env_dir / "bin" / "python", env_dir / "bin" / "ganport"
    # An old pip (e.g. 23.x) backtracks for minutes over this set; the Makefile upgrades it too.
    _run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    latest = _version_alone(python, "tritonclient", tmp_path)

    report = tmp_path / "install.json"
    _run([python, "-m", "pip", "install", "--quiet", "--report", report, ".[cpu]", "tritonclient[all]"], cwd=ROOT)
    installed = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                 for item in json.loads(report.read_text())["install"]}
    assert installed["tritonclient"] == latest, f"pip resolved tritonclient {installed['tritonclient']}, newest is {latest}"
    assert "ganport" in installed and "onnxruntime" in installed
    _run([python, "-m", "pip", "check"])  # nothing left with a broken requirement

    proc, target, lines = _serve(ganport, models_dir, cwd=tmp_path)
    try:
        result = _run([python, "-c", CLIENT, target, models_dir, MODEL], cwd=tmp_path, timeout=120)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["health"] == "SERVING"
    for where in ("serve", "in_process"):
        answer = out[where]
        assert answer["live"] and answer["ready"] and answer["server"] == "ganport", (where, answer)
        assert answer["inputs"][0] == "z" and answer["image_shape"][:1] == [2], (where, answer)
    assert out["serve"]["image_sum"] == out["in_process"]["image_sum"] > 0
    assert proc.returncode == 0, "".join(lines)
    versions = {name: installed.get(name) for name in ("protobuf", "grpcio", "grpcio-health-checking")}
    print(f"tritonclient {installed['tritonclient']} with {versions}")

    # A protobuf older than the stubs' floor, really installed: one error line, no traceback.
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "protobuf==5.29.5"])
    broken = subprocess.run([str(ganport), "serve", str(models_dir), "--port", "0"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr, broken.stderr
    [line] = broken.stderr.strip().splitlines()
    assert line.startswith("error: protobuf 5.29.5 is installed, but ganport needs protobuf>=6.30"), line
