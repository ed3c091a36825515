"""Helpers for the gRPC server tests: certificates, a model that fails at run time, `ganport serve`
subprocesses, and a tritonclient probe that runs in its own process.

Why a separate process for tritonclient: it registers the KServe ``inference.*`` protobuf
messages in the default descriptor pool, and so does ``ganport.v1.kserve_pb2`` (loaded by every
in-process server). One process cannot hold both, so the probe runs as
``python tests/server_helpers.py triton ...`` and exchanges arrays through ``.npy`` files.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SERVING_LINE = re.compile(r"serving (\d+) model\(s\) on (\S+):(\d+)")


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` / ``127.0.0.1``; returns ``(cert, key)`` paths.

    Uses the ``cryptography`` package when installed, else the ``openssl`` command.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    try:
        _certificate_with_cryptography(cert, key)
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            import pytest

            pytest.skip("neither the cryptography package nor the openssl command is available")
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
    return cert, key


def _certificate_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def build_failing_package(directory: Path, latent_dim: int = 8) -> Path:
    """An unconditional package whose ONNX graph only runs for batches of exactly 3.

    The graph reshapes ``z`` to a fixed ``[3, 1, 2, 4]``: a real model bug that onnxruntime
    reports at run time, used to check that unexpected errors become INTERNAL without a traceback.
    """
    import onnx
    from onnx import TensorProto, helper

    from ganport.runtime.manifest import ModelInfo, write_manifest

    directory.mkdir(parents=True, exist_ok=True)
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [3, 1, 2, latent_dim // 2])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["z", "shape"], ["r"]), helper.make_node("Tanh", ["r"], ["image"])],
        "broken", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", latent_dim])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 2, latent_dim // 2])],
        initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(directory / "model.onnx"))
    write_manifest(directory, ModelInfo(name=directory.name, kind="gan", latent_dim=latent_dim, n_classes=0,
                                        class_names=[], image_shape=[1, 2, latent_dim // 2],
                                        files={"onnx": "model.onnx"}))
    return directory


class ServeProcess:
    """``python -m ganport serve ...`` in a subprocess; waits for its "serving ..." line.

    Attributes:
        proc: the ``subprocess.Popen``.
        port: the bound port; ``target``: ``127.0.0.1:port``.
        lines: every stdout line seen so far.
    """

    def __init__(self, models_dir: Path, *args: str, python: str = sys.executable, timeout: float = 60.0,
                 env: dict | None = None):
        command = [python, "-m", "ganport", "serve", str(models_dir), "--port", "0", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})}, cwd=str(ROOT))
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise TimeoutError(f"ganport serve did not start: {''.join(self.lines)}") from None
            if line is None:
                raise RuntimeError(f"ganport serve exited with {self.proc.wait()}: {''.join(self.lines)}")
            match = SERVING_LINE.search(line)
            if match:
                self.n_models, self.port = int(match.group(1)), int(match.group(3))
                self.target = f"127.0.0.1:{self.port}"
                return

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_triton_probe(target: str, model: str, z: np.ndarray, labels: np.ndarray | None, workdir: Path) -> dict:
    """Run :func:`triton_probe` in a fresh interpreter; returns its report with ``image`` loaded."""
    workdir.mkdir(parents=True, exist_ok=True)
    np.save(workdir / "z.npy", z)
    command = [sys.executable, str(Path(__file__).resolve()), "triton", target, model, str(workdir / "z.npy"),
               str(workdir / "image.npy")]
    if labels is not None:
        np.save(workdir / "labels.npy", labels)
        command += ["--labels", str(workdir / "labels.npy")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"triton probe failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["image"] = np.load(workdir / "image.npy", allow_pickle=False)
    return report


def triton_probe(target: str, model: str, z_path: str, out_path: str, labels_path: str | None) -> dict:
    """Call a KServe v2 server with an unmodified ``tritonclient.grpc`` client, as a user would."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=target)
    report = {"live": client.is_server_live(), "ready": client.is_server_ready(),
              "model_ready": client.is_model_ready(model)}
    server = client.get_server_metadata()
    report["server"] = {"name": server.name, "version": server.version}
    metadata = client.get_model_metadata(model)
    report["inputs"] = [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
    report["outputs"] = [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs]
    report["platform"] = metadata.platform
    z = np.load(z_path, allow_pickle=False)
    inputs = [triton.InferInput("z", list(z.shape), "FP32")]
    inputs[0].set_data_from_numpy(z)
    if labels_path:
        labels = np.load(labels_path, allow_pickle=False).astype(np.int64)
        inputs.append(triton.InferInput("label", list(labels.shape), "INT64"))
        inputs[1].set_data_from_numpy(labels)
    result = client.infer(model, inputs, outputs=[triton.InferRequestedOutput("image")], request_id="probe-1")
    np.save(out_path, result.as_numpy("image"))
    response = result.get_response()
    report["id"] = response.id
    report["model_version"] = response.model_version
    try:
        client.infer("no-such-model", inputs)
        report["unknown_model"] = "no error"
    except triton.InferenceServerException as exc:
        report["unknown_model"] = exc.status()
    return report


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="server test helpers run as a separate process")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("triton")
    probe.add_argument("target")
    probe.add_argument("model")
    probe.add_argument("z")
    probe.add_argument("out")
    probe.add_argument("--labels")
    args = parser.parse_args(argv)
    report = triton_probe(args.target, args.model, args.z, args.out, args.labels)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
