"""Models that come and go without a restart: poll and explicit model control, warm-up, the CLI.

Real servers on free loopback ports, real packages written to disk by the tests, 16 client
threads calling all the time while packages are replaced, broken, loaded and unloaded.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import grpc
import pytest

import runtime_helpers
from server_helpers import Callers
from ganport.cli import main
from ganport.runtime import Generator
from ganport.runtime.server import create_server
from ganport.v1 import generator_pb2 as pb
from ganport.v1 import generator_pb2_grpc as pb_grpc

RAW_UINT8 = pb.IMAGE_ENCODING_RAW_UINT8
TIMEOUT = 20
CLASSES = list("0123456789")


def _package(directory: Path, seed: int) -> Path:
    return runtime_helpers.build_package(directory, kind="cgan", class_names=CLASSES, formats=("onnx",), seed=seed,
                                         name=directory.name)


def _expected(package: Path) -> bytes:
    return Generator.load(package).generate(1, labels=3, seed=7).tobytes()


@pytest.fixture()
def poll_server(tmp_path):
    models = tmp_path / "models"
    _package(models / "digits", seed=0)
    server, port = create_server("127.0.0.1:0", models, model_control="poll", poll_seconds=0.2)
    server.start()
    yield server, port, models
    server.stop(grace=1)


def test_poll_swaps_a_replaced_package_with_zero_failed_calls(poll_server, tmp_path, caplog):
    server, port, models = poll_server
    old, new = _expected(models / "digits"), _expected(_package(tmp_path / "staging" / "digits", seed=1))
    assert old != new
    callers = Callers(f"127.0.0.1:{port}", "digits")
    try:
        callers.wait_for(old, 10)
        # What `ganport export --force` does: move the old package away, rename the new one in.
        os.rename(models / "digits", models / ".digits.old")
        os.rename(tmp_path / "staging" / "digits", models / "digits")
        shutil.rmtree(models / ".digits.old")
        took = callers.wait_for(new, 10)
        deadline = time.monotonic() + 5  # counted once the old model's queue has drained
        while (server.metrics.count("ganport_model_loads_total", model="digits", result="ok") < 1
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert server.metrics.count("ganport_model_loads_total", model="digits", result="ok") >= 1
        time.sleep(0.3)
    finally:
        callers.stop()
    assert callers.failures == []
    assert took < 5, f"the new model answered only after {took:.1f} s"
    assert len(callers.images) > 50


def test_poll_never_lets_a_broken_package_replace_a_working_one(poll_server, tmp_path, caplog):
    server, port, models = poll_server
    good = _expected(models / "digits")
    callers = Callers(f"127.0.0.1:{port}", "digits")
    caplog.set_level(logging.WARNING, logger="ganport.runtime.server.repository")
    try:
        callers.wait_for(good, 10)
        onnx = models / "digits" / "model.onnx"
        data = onnx.read_bytes()
        onnx.write_bytes(data[: len(data) // 3])  # a truncated copy
        deadline = time.monotonic() + 10
        while "digits" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few more polls: it must not retry the same broken files
        assert callers.latest() == good
        # The repository index says the old files serve and why the new ones do not.
        import tritonclient.grpc as grpcclient

        [entry] = [m for m in grpcclient.InferenceServerClient(f"127.0.0.1:{port}").get_model_repository_index().models
                   if m.name == "digits"]
        assert entry.state == "READY" and "reload failed" in entry.reason and "model.onnx" in entry.reason
        # A half-copied folder from another tool: manifest present, model missing.
        (models / "newcomer").mkdir()
        shutil.copy(models / "digits" / "manifest.json", models / "newcomer" / "manifest.json")
        time.sleep(0.6)
        assert "newcomer" not in server.models
    finally:
        callers.stop()
    assert callers.failures == []
    assert server.metrics.count("ganport_model_loads_total", model="digits", result="failed") == 1
    messages = [r.getMessage() for r in caplog.records if "digits" in r.getMessage()]
    assert any("model.onnx" in m for m in messages), messages
    assert sum("failed" in m for m in messages) == 1, "a broken package is retried only when it changes"
    # Fixing the files brings the model back in line.
    _package(tmp_path / "fixed" / "digits", seed=2)
    shutil.copy(tmp_path / "fixed" / "digits" / "model.onnx", models / "digits" / "model.onnx")
    shutil.copy(tmp_path / "fixed" / "digits" / "manifest.json", models / "digits" / "manifest.json")
    deadline = time.monotonic() + 10
    fixed = _expected(tmp_path / "fixed" / "digits")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GeneratorServiceStub(channel)
        while time.monotonic() < deadline:
            reply = stub.Generate(pb.GenerateRequest(model="digits", count=1, seed=7, labels=pb.Labels(indices=[3]),
                                                     encoding=RAW_UINT8), timeout=TIMEOUT)
            if reply.images.data == fixed:
                break
            time.sleep(0.1)
        assert reply.images.data == fixed


def test_poll_loads_new_and_unloads_removed_packages(poll_server, tmp_path):
    server, port, models = poll_server
    _package(tmp_path / "staging" / "extra", seed=3)
    os.rename(tmp_path / "staging" / "extra", models / "extra")
    deadline = time.monotonic() + 10
    while "extra" not in server.models and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "extra" in server.models
    shutil.rmtree(models / "extra")
    deadline = time.monotonic() + 10
    while "extra" in server.models and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "extra" not in server.models and "digits" in server.models


def test_explicit_load_unload_and_reload_under_load(tmp_path, capsys):
    models = tmp_path / "models"
    _package(models / "digits", seed=0)
    _package(models / "other", seed=4)
    server, port = create_server("127.0.0.1:0", models)  # explicit is the default
    server.start()
    target = f"127.0.0.1:{port}"
    callers = Callers(target, "digits")
    try:
        callers.wait_for(_expected(models / "digits"), 10)
        assert main(["models", "--target", target, "unload", "other"]) == 0
        assert "other" not in server.models
        assert main(["models", "--target", target, "list"]) == 0
        listing = capsys.readouterr().out
        assert "digits\t1\tREADY" in listing and "other\t1\tUNAVAILABLE\tunloaded" in listing
        assert main(["models", "--target", target, "load", "other"]) == 0
        assert "other" in server.models
        # Replace digits on disk, then reload it explicitly while it is being called.
        shutil.rmtree(models / "digits")
        _package(models / "digits", seed=5)
        assert main(["models", "--target", target, "reload", "digits"]) == 0
        callers.wait_for(_expected(models / "digits"), 10)
        assert main(["models", "--target", target, "load", "nope"]) == 2
        assert "error: NOT_FOUND" in capsys.readouterr().err
    finally:
        callers.stop()
        server.stop(grace=1)
    assert callers.failures == []


def test_model_control_none_refuses_load_and_unload(tmp_path, capsys):
    models = tmp_path / "models"
    _package(models / "digits", seed=0)
    server, port = create_server("127.0.0.1:0", models, model_control="none")
    server.start()
    try:
        assert main(["models", "--target", f"127.0.0.1:{port}", "unload", "digits"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: FAILED_PRECONDITION") and "--model-control none" in err
        assert "digits" in server.models
    finally:
        server.stop(grace=1)


def test_models_are_warmed_up_before_serving(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ganport.runtime.server")
    _package(tmp_path / "digits", seed=0)
    server, _ = create_server("127.0.0.1:0", tmp_path / "digits")
    server.stop(grace=0)
    assert any("warmed up model 'digits'" in r.getMessage() for r in caplog.records)
    with pytest.raises(Exception, match="poll_seconds"):
        create_server("127.0.0.1:0", tmp_path / "digits", poll_seconds=0)


def test_unload_gives_the_memory_back(tmp_path):
    """RSS after unloading a ~40 MB model is within 10% of what it was before it was loaded again."""
    import fuzz_helpers
    import server_helpers
    from ganport.runtime.server.client import GanportClient

    models = tmp_path / "models"
    _package(models / "keep", seed=0)
    runtime_helpers.build_package(models / "big", kind="gan", latent_dim=8, image_shape=(3, 256, 256),
                                  formats=("onnx",), name="big")
    server = server_helpers.ServeProcess(models, "--max-batch", "4")
    try:
        with GanportClient(server.target) as client:
            client.generate("big", 4, seed=1)
            client.unload_model("big")
            client.load_model("big")  # one full cycle first: code paths a load imports stay loaded
            client.unload_model("big")
            client.generate("keep", 2, seed=1)
            before = fuzz_helpers.rss_kib(server.proc.pid)
            for _ in range(3):
                client.load_model("big")
                client.generate("big", 4, seed=1)
                loaded = fuzz_helpers.rss_kib(server.proc.pid)
                client.unload_model("big")
            # The unloaded model's worker thread exits just after the call returns: give it a moment.
            deadline = time.monotonic() + 3
            after = fuzz_helpers.rss_kib(server.proc.pid)
            while abs(after - before) >= 0.10 * before and time.monotonic() < deadline:
                time.sleep(0.1)
                after = fuzz_helpers.rss_kib(server.proc.pid)
    finally:
        server.proc.terminate()
        server.wait()
    assert loaded - before > 30 * 1024, (before, loaded)  # the big model really was in memory
    assert abs(after - before) < 0.10 * before, (before, loaded, after)


def test_health_per_model_follows_load_and_unload(tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    models = tmp_path / "models"
    _package(models / "digits", seed=0)
    _package(models / "other", seed=1)
    server, port = create_server("127.0.0.1:0", models)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def status(service: str) -> str:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
                except grpc.RpcError as exc:
                    return exc.code().name
                return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

            assert status("digits") == status("other") == "SERVING"
            assert status("nope") == "NOT_FOUND"
            assert main(["models", "--target", f"127.0.0.1:{port}", "unload", "other"]) == 0
            deadline = time.monotonic() + 5
            while status("other") != "NOT_SERVING" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert status("other") == "NOT_SERVING" and status("digits") == "SERVING"
            assert main(["models", "--target", f"127.0.0.1:{port}", "load", "other"]) == 0
            deadline = time.monotonic() + 5
            while status("other") != "SERVING" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert status("other") == "SERVING"
            server.set_serving(False)
            assert status("digits") == "NOT_SERVING"
    finally:
        server.stop(grace=1)


def _break(package: Path) -> Path:
    onnx = package / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:200])  # a truncated copy
    return package


def test_a_broken_package_at_start_up_stops_the_server_unless_told_otherwise(tmp_path, capsys):
    models = tmp_path / "models"
    _package(models / "digits", seed=0)
    _break(_package(models / "broken", seed=1))
    _package(models / "versioned" / "1", seed=2)
    _break(_package(models / "versioned" / "2", seed=3))
    # Default (Triton's --exit-on-error): one error line naming the package, exit 2.
    assert main(["serve", str(models), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.onnx" in err and len(err.strip().splitlines()) == 1
    only_broken = tmp_path / "only-broken"
    shutil.copytree(models / "broken", only_broken / "broken")
    assert main(["serve", str(only_broken), "--port", "0", "--model-control", "none", "--no-exit-on-error"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no model in") and "'broken' version 1" in err and "--model-control" in err
    # Fixed models (--model-control none) get the same fallback.
    fixed_set, _ = create_server("127.0.0.1:0", models, model_control="none", exit_on_error=False)
    try:
        assert sorted(fixed_set.models) == ["digits", "versioned"]
        assert list(fixed_set.models.versions("versioned")) == ["1"]
    finally:
        fixed_set.stop(grace=0)

    server, port = create_server("127.0.0.1:0", models, model_control="poll", poll_seconds=0.2, exit_on_error=False)
    server.start()
    try:
        assert "digits" in server.models and "broken" not in server.models
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
        assert index[("broken", "1")].state == "UNAVAILABLE"
        assert "load failed" in index[("broken", "1")].reason and "broken/model.onnx" in index[("broken", "1")].reason
        assert str(tmp_path) not in index[("broken", "1")].reason  # clients never see the server's paths
        assert server.metrics.count("ganport_model_loads_total", model="broken", result="failed") == 1
        # A call for it says why it is not served.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.GeneratorServiceStub(channel).Generate(pb.GenerateRequest(model="broken", count=1),
                                                               timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "load failed" in caught.value.details() and "served models: digits" in caught.value.details()
        # latest:1 with a broken newest version serves the one before it from the start.
        assert list(server.models.versions("versioned")) == ["1"]
        assert index[("versioned", "1")].state == "READY"
        assert index[("versioned", "2")].state == "UNAVAILABLE"
        # Repairing the files brings the broken model in, as any later poll would.
        _package(tmp_path / "fixed" / "broken", seed=1)
        shutil.copy(tmp_path / "fixed" / "broken" / "model.onnx", models / "broken" / "model.onnx")
        deadline = time.monotonic() + 10
        while "broken" not in server.models and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "broken" in server.models
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.GeneratorServiceStub(channel).Generate(
                pb.GenerateRequest(model="broken", count=1, seed=7, labels=pb.Labels(indices=[3]), encoding=RAW_UINT8),
                timeout=TIMEOUT)
        assert reply.images.data == _expected(tmp_path / "fixed" / "broken")
    finally:
        server.stop(grace=1)
