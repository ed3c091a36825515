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

from server_helpers import ServeProcess

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
    # One routed port: REST v2 on the declared container port (grpc-v2 would need gRPC's port there).
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    args = [str(a) for a in container["args"]]
    assert args[0] == "/mnt/models"  # where KServe's storage initializer puts storageUri
    [port] = container["ports"]
    assert port["containerPort"] == int(_flag(args, "--http-port"))
    assert container["readinessProbe"]["httpGet"]["port"] == port["containerPort"]
    metrics = runtime["metadata"]["annotations"]
    assert int(metrics["prometheus.kserve.io/port"]) == int(_flag(args, "--metrics-port"))


def _runtime_args(name: str) -> list[str]:
    """The runtime container's arguments as KServe passes them for an InferenceService ``name``."""
    [container] = _load("servingruntime.yaml")["spec"]["containers"]
    return [str(a).replace("{{.Name}}", name) for a in container["args"]]


def test_image_runs_the_runtime_command_and_ganport_accepts_it():
    args = _runtime_args("glyphs")
    assert _flag(args, "--model-name") == "glyphs"
    # The image's default command is the runtime's, less the name only KServe knows.
    i = args.index("--model-name")
    assert _dockerfile_command() == ["ganport", "serve", *args[:i], *args[i + 2:]]
    from ganport.cli import build_parser

    parsed = build_parser().parse_args(["serve", *args])
    assert parsed.host == "0.0.0.0" and parsed.port == 8081 and parsed.http_port == 8080
    assert parsed.model_name == "glyphs" and parsed.models_dir == "/mnt/models"


@pytest.mark.parametrize("layout", ["package", "version folders"])
def test_the_runtime_command_serves_kserve_clients(tiny_checkpoint, tmp_path, layout):
    """/mnt/models holds the model itself (a package, or versions 1/ and 2/): it is served under the
    InferenceService's name, and with version folders the policy's default (latest) answers."""
    import tritonclient.grpc as grpcclient

    from ganport.export import export_package

    service = _load("inferenceservice.yaml")
    name = service["metadata"]["name"]
    mount = tmp_path / "mnt-models"
    if layout == "package":
        export_package(tiny_checkpoint("cgan"), mount, formats=("onnx",), name="exported-name")
        versions = ["1"]
    else:
        export_package(tiny_checkpoint("cgan"), mount / "1", formats=("onnx",), name="exported-name")
        export_package(tiny_checkpoint("cgan", seed=7), mount / "2", formats=("onnx",), name="exported-name")
        versions = ["2"]

    [container] = _load("servingruntime.yaml")["spec"]["containers"]
    args = _runtime_args(name)
    args[0] = str(mount)
    # Loopback and free ports instead of the pod's 0.0.0.0:8080/8081/9100; every other flag as written
    # (ServeProcess appends --port 0; the last --port wins).
    for flag, value in (("--host", "127.0.0.1"), ("--metrics-host", "127.0.0.1"), ("--http-port", "0"),
                        ("--metrics-port", str(_free_port())), ("--port", "0")):
        args[args.index(flag) + 1] = value
    print("ganport serve", shlex.join(args))
    server = ServeProcess(Path(args[0]), *args[1:], python=sys.executable)
    try:
        lines = "".join(server.lines)
        http_port = int(HTTP_LINE.search(lines).group(1))
        metrics_port = int(METRICS_LINE.search(lines).group(1))
        base = f"http://127.0.0.1:{http_port}"
        with urllib.request.urlopen(base + container["readinessProbe"]["httpGet"]["path"], timeout=10) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(f"{base}/v2/models/{name}/ready", timeout=10) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(f"{base}/v2/models/{name}", timeout=10) as reply:
            assert json.loads(reply.read())["versions"] == versions
        client = grpcclient.InferenceServerClient(server.target)
        assert client.is_server_ready() and client.is_model_ready(name)
        index = client.get_model_repository_index().models
        assert {m.name for m in index} == {name} and [m.version for m in index if m.state == "READY"] == versions
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            assert b"ganport_" in reply.read()
    finally:
        server.kill()


def test_a_model_name_for_a_folder_of_several_models_is_one_error_line(tiny_checkpoint, tmp_path):
    import subprocess

    from ganport.export import export_package

    for model in ("a", "b"):
        export_package(tiny_checkpoint("cgan"), tmp_path / model, formats=("onnx",), name=model)
    result = subprocess.run([sys.executable, "-m", "ganport", "serve", str(tmp_path), "--port", "0",
                             "--model-name", "glyphs"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "'glyphs'" in line and "a, b" in line
