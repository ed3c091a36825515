"""The KServe custom serving runtime and the container image start ganport as written.

``deploy/kserve/servingruntime.yaml`` and ``deploy/Dockerfile`` carry the same command line
(``ganport serve /mnt/models --port 8081 --http-port 8080 ...``). There is no Kubernetes or
container engine here, so the test checks what can go wrong without one, for real:

* both manifests parse, and the runtime and the InferenceService agree (model format, runtime
  name, protocol, the container port is the HTTP port the server is told to use, the readiness
  probe path is one ganport answers);
* the image's ENTRYPOINT + CMD equal the runtime's command, and every flag is one ``ganport serve``
  accepts (the real parser);
* that very command line starts ganport (ports moved to free ones, ``/mnt/models`` to a repository
  holding a package named like the InferenceService), and what KServe and its clients use answers:
  the readiness probe, ``/v2/models/NAME/ready`` over REST, ``ModelReady`` over gRPC with
  ``tritonclient.grpc``, and the metrics port.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.server_helpers import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
HTTP_LINE = re.compile(r"http on http://\S+:(\d+)")
METRICS_LINE = re.compile(r"metrics on http://\S+:(\d+)/metrics")


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "kserve" / name).read_text())


def _dockerfile_command() -> list[str]:
    """ENTRYPOINT + CMD of deploy/Dockerfile (exec form, as JSON arrays)."""
    parts: dict[str, list[str]] = {}
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        keyword, _, rest = line.partition(" ")
        if keyword in ("ENTRYPOINT", "CMD"):
            parts[keyword] = json.loads(rest)
    return parts["ENTRYPOINT"] + parts["CMD"]


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_runtime_and_inference_service_agree():
    runtime, service = _load("servingruntime.yaml"), _load("inferenceservice.yaml")
    assert runtime["kind"] == "ServingRuntime" and service["kind"] == "InferenceService"
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    args = [str(a) for a in container["args"]]
    assert args[0] == "/mnt/models"  # where KServe's storage initializer puts storageUri
    [port] = container["ports"]
    assert port["containerPort"] == int(_flag(args, "--http-port"))
    assert container["readinessProbe"]["httpGet"]["port"] == port["containerPort"]
    metrics = runtime["metadata"]["annotations"]
    assert int(metrics["prometheus.kserve.io/port"]) == int(_flag(args, "--metrics-port"))


def test_image_runs_the_runtime_command_and_ganport_accepts_it():
    [container] = _load("servingruntime.yaml")["spec"]["containers"]
    runtime_command = ["ganport", "serve", *[str(a) for a in container["args"]]]
    assert _dockerfile_command() == runtime_command
    from ganport.cli import build_parser

    args = build_parser().parse_args(runtime_command[1:])
    assert args.host == "0.0.0.0" and args.port == 8081 and args.http_port == 8080


def test_the_runtime_command_serves_kserve_clients(tiny_checkpoint, tmp_path):
    import tritonclient.grpc as grpcclient

    from ganport.export import export_package

    runtime, service = _load("servingruntime.yaml"), _load("inferenceservice.yaml")
    name = service["metadata"]["name"]
    repository = tmp_path / "mnt-models"
    export_package(tiny_checkpoint("cgan"), repository / name, formats=("onnx",), name=name)

    [container] = runtime["spec"]["containers"]
    args = [str(a) for a in container["args"]]
    args[0] = str(repository)
    # Loopback and free ports instead of the pod's 0.0.0.0:8080/8081/9100; every other flag as written.
    for flag, value in (("--host", "127.0.0.1"), ("--metrics-host", "127.0.0.1"), ("--http-port", "0"),
                        ("--metrics-port", str(_free_port())), ("--port", "0")):
        args[args.index(flag) + 1] = value
    print("ganport serve", shlex.join(args))
    server = ServeProcess(Path(args[0]), *args[1:], python=sys.executable)
    try:
        lines = "".join(server.lines)
        http_port = int(HTTP_LINE.search(lines).group(1))
        metrics_port = int(METRICS_LINE.search(lines).group(1))
        probe = container["readinessProbe"]["httpGet"]["path"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{probe}", timeout=10) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{name}/ready", timeout=10) as reply:
            assert reply.status == 200
        client = grpcclient.InferenceServerClient(server.target)
        assert client.is_server_ready() and client.is_model_ready(name)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            assert b"ganport_" in reply.read()
    finally:
        server.kill()
