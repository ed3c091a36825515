"""Helpers for the gRPC server tests: certificates, a model that fails at run time,
``ganport serve`` subprocesses, and threads of callers that keep a server busy.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

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
            except queue.Empty as exc:
                self.kill()
                raise TimeoutError(f"ganport serve did not start: {''.join(self.lines)}") from exc
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


class Callers:
    """``n`` threads calling ``Generate(model, seed 7, label 3)`` in a loop; records every outcome.

    Attributes:
        failures: ``"CODE: details"`` of every failed call.
        images: ``(monotonic time, raw uint8 bytes)`` of every answer.
        versions: the answering model version of every answer.
    """

    def __init__(self, target: str, model: str, n: int = 16, timeout: float = 20.0):
        import grpc

        self.model = model
        self.failures: list[str] = []
        self.images: list[tuple[float, bytes]] = []
        self.versions: list[str] = []
        self._timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(target)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        import grpc

        from ganport.v1 import generator_pb2 as pb
        from ganport.v1 import generator_pb2_grpc as pb_grpc

        stub = pb_grpc.GeneratorServiceStub(self._channel)
        request = pb.GenerateRequest(model=self.model, count=1, seed=7, labels=pb.Labels(indices=[3]),
                                     encoding=pb.IMAGE_ENCODING_RAW_UINT8)
        while not self._stop.is_set():
            try:
                reply = stub.Generate(request, timeout=self._timeout)
            except grpc.RpcError as exc:
                with self._lock:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            with self._lock:
                self.images.append((time.monotonic(), reply.images.data))
                self.versions.append(reply.version)

    def latest(self) -> bytes:
        with self._lock:
            return self.images[-1][1]

    def wait_for(self, data: bytes, timeout: float) -> float:
        """Seconds until a caller got ``data`` (raises if it never did)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with self._lock:
                if any(image == data and at >= started for at, image in self.images[-64:]):
                    return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"no caller got the expected image within {timeout} s")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._timeout)
        self._channel.close()
