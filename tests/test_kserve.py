"""The KServe v2 / Triton gRPC API, driven by an unmodified ``tritonclient.grpc`` client.

A real server on a free loopback port serves a models directory; the client is tritonclient's
``InferenceServerClient`` in this same process (the server's ``inference.*`` messages live in a
private descriptor pool, so tritonclient's registration of the same names does not clash).
Covers server/model metadata and extensions, model config (the same shape as the Triton
export), readiness, infer (sync, async, stream with a bad request in the middle), statistics,
the repository (index, load, unload, reload, broken and unknown packages), the UNIMPLEMENTED
calls, the label contract ([N] and [N, 1]) and bad input for every call, with and without a token.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import time
from functools import partial

import numpy as np
import pytest

import runtime_helpers
from ganport.errors import ModelNotFoundError
from ganport.runtime import Generator
from ganport.runtime.server import create_server
from ganport.runtime.server.batcher import DynamicBatcher
from ganport.runtime.server.servicer import ModelRegistry, ServedModel

triton = pytest.importorskip("tritonclient.grpc")
InferenceServerException = triton.InferenceServerException

TIMEOUT = 20
EXTENSIONS = ["model_configuration", "model_repository", "statistics"]


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("kserve-models")
    runtime_helpers.build_serving_models(root, ("glyphs", "rgb"))
    return root


@pytest.fixture(scope="module")
def gens(models_dir):
    return {name: Generator.load(models_dir / name) for name in ("glyphs", "rgb")}


@pytest.fixture(scope="module")
def server(models_dir):
    srv, _ = create_server("127.0.0.1:0", models_dir, max_batch=16, max_delay_ms=2, max_queue=64)
    srv.start()
    yield srv
    srv.stop(grace=1)


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield c
    c.close()


def _status(call, *args, **kwargs) -> tuple[str, str]:
    """Run a tritonclient call expected to fail; return (status code name, message)."""
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    message = info.value.message() or ""
    assert "Traceback" not in message and 'File "' not in message
    return str(info.value.status()).replace("StatusCode.", ""), message


def _inputs(z: np.ndarray, labels: np.ndarray | None = None, label_shape=None, label_type: str = "INT64"):
    inputs = [triton.InferInput("z", list(z.shape), "FP32")]
    inputs[0].set_data_from_numpy(z.astype(np.float32))
    if labels is not None:
        labels = labels.reshape(label_shape or labels.shape)
        inputs.append(triton.InferInput("label", list(labels.shape), label_type))
        inputs[1].set_data_from_numpy(labels)
    return inputs


def _glyphs_request(gens, n: int = 3, seed: int = 1, label_shape=None):
    z = gens["glyphs"].sample_latents(n, seed=seed)
    labels = np.arange(n, dtype=np.int64) + 10
    return z, labels, _inputs(z, labels, label_shape or (n, 1))


# ------------------------------------------------------------------------------- metadata

def test_server_metadata_lists_what_is_implemented(client):
    meta = client.get_server_metadata()
    assert meta.name == "ganport" and meta.version
    assert sorted(meta.extensions) == EXTENSIONS
    assert client.get_server_metadata(as_json=True)["extensions"] == EXTENSIONS
    assert client.is_server_live() and client.is_server_ready()


def test_model_metadata_advertises_the_triton_label_shape(client):
    meta = client.get_model_metadata("glyphs", as_json=True)
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    # Shapes are int64 in the proto, so protobuf's JSON form writes them as strings.
    shapes = [(t["name"], t["datatype"], [int(v) for v in t["shape"]]) for t in meta["inputs"] + meta["outputs"]]
    assert shapes == [("z", "FP32", [-1, 8]), ("label", "INT64", [-1, 1]), ("image", "FP32", [-1, 1, 12, 12])]
    rgb = client.get_model_metadata("rgb")
    assert [(t.name, list(t.shape)) for t in rgb.inputs] == [("z", [-1, 6])]


def test_model_ready_is_false_for_unknown_models(client):
    assert client.is_model_ready("glyphs") and client.is_model_ready("glyphs", "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("glyphs", "2")
    assert not client.is_model_ready("")


def test_model_config_has_the_triton_export_shape(client, gens):
    config = client.get_model_config("glyphs", as_json=True)["config"]
    assert config["name"] == "glyphs" and config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 16
    assert config["default_model_filename"] == "model.onnx"
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["input"]] == \
        [("z", "TYPE_FP32", [8]), ("label", "TYPE_INT64", [1])]
    assert "reshape" in config["input"][1] and "reshape" not in config["input"][0]
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config["output"]] == \
        [("image", "TYPE_FP32", [1, 12, 12])]
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 64
    assert config["instance_group"][0]["kind"] == "KIND_CPU" and config["instance_group"][0]["count"] == 1
    manifest = json.loads(config["parameters"]["ganport.metadata"]["string_value"])
    assert manifest["class_names"] == runtime_helpers.GLYPH_CLASSES and manifest["latent_dim"] == 8
    # The message form too (tritonclient parses it with its own model_config_pb2).
    message = client.get_model_config("rgb").config
    assert message.max_batch_size == 16 and [list(t.dims) for t in message.output] == [[3, 8, 8]]
    assert [t.name for t in message.input] == ["z"]


def test_model_config_equals_the_exported_config_pbtxt(client, gens):
    # The config ganport serves and the config.pbtxt `ganport export --format triton` writes
    # declare the same tensors, so Triton and ganport require the same client shapes.
    pytest.importorskip("torch")
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    from ganport.export.triton import render_config

    info = gens["glyphs"].info
    text = render_config("glyphs", "onnxruntime_onnx", info.io_spec(), ["image"], 16, "cpu", info.to_metadata())
    exported = json_format.MessageToDict(text_format.Parse(text, model_config_pb2.ModelConfig()),
                                         preserving_proto_field_name=True)
    served = client.get_model_config("glyphs", as_json=True)["config"]
    for key in ("name", "platform", "max_batch_size", "input", "output"):
        assert served[key] == exported[key], key
    assert json.loads(served["parameters"]["ganport.metadata"]["string_value"]) == \
        json.loads(exported["parameters"]["ganport.metadata"]["string_value"])


# ------------------------------------------------------------------------------------ infer

@pytest.mark.parametrize("label_shape", ["n", "n1"])
def test_infer_accepts_label_as_n_and_n1(client, gens, label_shape):
    n = 3
    z, labels, inputs = _glyphs_request(gens, n, seed=4, label_shape=(n,) if label_shape == "n" else (n, 1))
    result = client.infer("glyphs", inputs, request_id=f"label-{label_shape}")
    assert result.get_response().id == f"label-{label_shape}"
    np.testing.assert_array_equal(result.as_numpy("image"), gens["glyphs"].run(z, labels))


def test_infer_int32_labels(client, gens):
    z, labels, _ = _glyphs_request(gens, 2, seed=5)
    inputs = _inputs(z, labels.astype(np.int32), (2, 1), "INT32")
    np.testing.assert_array_equal(client.infer("glyphs", inputs).as_numpy("image"), gens["glyphs"].run(z, labels))


def test_async_infer(client, gens):
    answers: queue.Queue = queue.Queue()
    expected = {}
    for i in range(4):
        z, labels, inputs = _glyphs_request(gens, 2, seed=100 + i)
        expected[f"a{i}"] = gens["glyphs"].run(z, labels)
        client.async_infer("glyphs", inputs, partial(lambda q, result, error: q.put((result, error)), answers),
                           request_id=f"a{i}")
    for _ in range(4):
        result, error = answers.get(timeout=TIMEOUT)
        assert error is None
        np.testing.assert_array_equal(result.as_numpy("image"), expected[result.get_response().id])


def test_stream_infer_answers_each_request_and_survives_a_bad_one(server, gens):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    answers: queue.Queue = queue.Queue()
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        expected = {}
        for i in range(5):
            z, labels, inputs = _glyphs_request(gens, 1 + i % 3, seed=200 + i)
            expected[f"s{i}"] = gens["glyphs"].run(z, labels)
            client.async_stream_infer("glyphs", inputs, request_id=f"s{i}")
            if i == 1:  # a bad one in the middle: label out of range
                bad = _inputs(z, np.full(len(z), 99, np.int64), (len(z), 1))
                client.async_stream_infer("glyphs", bad, request_id="bad-label")
            if i == 2:  # and one for a model that is not served
                client.async_stream_infer("nope", inputs, request_id="bad-model")
        z = gens["rgb"].sample_latents(2, seed=3)
        client.async_stream_infer("rgb", _inputs(z), request_id="rgb")
        expected["rgb"] = gens["rgb"].run(z)
        got, errors = {}, []
        for _ in range(len(expected) + 2):
            result, error = answers.get(timeout=TIMEOUT)
            if error is not None:
                errors.append(error.message())
            else:
                got[result.get_response().id] = result.as_numpy("image")
        assert set(got) == set(expected)
        for request_id, image in got.items():
            np.testing.assert_array_equal(image, expected[request_id])
        assert len(errors) == 2
        assert any("99" in e for e in errors) and any("'nope'" in e for e in errors)
    finally:
        client.stop_stream()
        client.close()


def test_stream_bad_shapes_and_types_are_answered_in_the_stream(server, gens):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    answers: queue.Queue = queue.Queue()
    z = gens["glyphs"].sample_latents(2, seed=1)
    bad = {
        "shape": _inputs(z[:, :4], np.zeros(2, np.int64), (2, 1)),
        "label-rows": _inputs(z, np.zeros(3, np.int64), (3, 1)),
        "dtype": [triton.InferInput("z", [2, 8], "FP64"), *_inputs(z, np.zeros(2, np.int64), (2, 1))[1:]],
        "missing": _inputs(z),
    }
    bad["dtype"][0].set_data_from_numpy(z.astype(np.float64))
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for request_id, inputs in bad.items():
            client.async_stream_infer("glyphs", inputs, request_id=request_id)
        _, labels, good = _glyphs_request(gens, 2)
        client.async_stream_infer("glyphs", good, request_id="good")
        outcomes = [answers.get(timeout=TIMEOUT) for _ in range(len(bad) + 1)]
    finally:
        client.stop_stream()
        client.close()
    assert sum(error is None for _, error in outcomes) == 1
    messages = " | ".join(error.message() for _, error in outcomes if error is not None)
    for word in ("latent", "label", "FP32", "missing"):
        assert word in messages, messages


INFER_BAD = [
    ("unknown-model", "nope", "NOT_FOUND"),
    ("version", "glyphs@2", "NOT_FOUND"),
    ("z-shape", "glyphs:z-shape", "INVALID_ARGUMENT"),
    ("z-dtype", "glyphs:z-dtype", "INVALID_ARGUMENT"),
    ("label-shape", "glyphs:label-shape", "INVALID_ARGUMENT"),
    ("label-dtype", "glyphs:label-dtype", "INVALID_ARGUMENT"),
    ("too-many-rows", "glyphs:rows", "INVALID_ARGUMENT"),
]


@pytest.mark.parametrize("target, code", [b[1:] for b in INFER_BAD], ids=[b[0] for b in INFER_BAD])
def test_infer_bad_input(client, gens, target, code):
    z = gens["glyphs"].sample_latents(2, seed=1)
    labels = np.zeros((2, 1), np.int64)
    model, _, version = target.partition("@")
    model, _, case = model.partition(":")
    if case == "z-shape":
        inputs = _inputs(z[:, :5], labels)
    elif case == "z-dtype":
        inputs = [triton.InferInput("z", [2, 8], "FP16"), *_inputs(z, labels)[1:]]
        inputs[0].set_data_from_numpy(z.astype(np.float16))
    elif case == "label-shape":
        inputs = _inputs(z, np.zeros((2, 2), np.int64))
    elif case == "label-dtype":
        inputs = _inputs(z, labels.astype(np.float32), label_type="FP32")
    elif case == "rows":
        many = np.zeros((2000, 8), np.float32)
        inputs = _inputs(many, np.zeros((2000, 1), np.int64))
    else:
        inputs = _inputs(z, labels)
    got, message = _status(triton.InferenceServerClient.infer, client, model, inputs, model_version=version)
    assert got == code, message
    assert client.is_model_ready("glyphs")


# ------------------------------------------------------------------------------- statistics

def test_statistics_count_requests_and_batches(client, gens):
    def stats():
        [entry] = client.get_inference_statistics("glyphs", as_json=True)["model_stats"]
        inference = entry["inference_stats"]

        def count(key):
            return int(inference.get(key, {}).get("count", 0))

        return {"inference": int(entry.get("inference_count", 0)), "execution": int(entry.get("execution_count", 0)),
                "success": count("success"), "fail": count("fail"), "queue": count("queue"),
                "compute": count("compute_infer"), "last": int(entry.get("last_inference", 0)),
                "success_ns": int(inference.get("success", {}).get("ns", 0)),
                "batches": {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in entry.get("batch_stats", [])}}

    before = stats()
    started_ms = time.time() * 1000
    rows = [1, 2, 3]
    for i, n in enumerate(rows):  # sequential: one model call per request
        client.infer("glyphs", _glyphs_request(gens, n, seed=300 + i)[2])
    z = gens["glyphs"].sample_latents(1, seed=1)
    with pytest.raises(InferenceServerException):
        client.infer("glyphs", _inputs(z, np.array([[99]], np.int64)))
    after = stats()
    assert after["success"] - before["success"] == len(rows)
    assert after["fail"] - before["fail"] == 1
    assert after["inference"] - before["inference"] == sum(rows)
    assert after["execution"] - before["execution"] == len(rows)
    assert after["compute"] - before["compute"] == len(rows)
    assert after["queue"] - before["queue"] == len(rows)
    assert after["success_ns"] > before["success_ns"]
    assert after["last"] >= started_ms - 1000
    for n in rows:
        assert after["batches"].get(n, 0) - before["batches"].get(n, 0) >= 1
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert [m["name"] for m in everything] == ["glyphs", "rgb"]
    assert all(m["version"] == "1" for m in everything)
    code, message = _status(client.get_inference_statistics, "nope")
    assert code == "NOT_FOUND" and "'nope'" in message


# ------------------------------------------------------------------------------- repository

def _index(client) -> dict[str, tuple[str, str]]:
    return {m["name"]: (m.get("state", ""), m.get("reason", ""))
            for m in client.get_model_repository_index(as_json=True).get("models", [])}


def test_repository_index_unload_load(client, server, models_dir, gens):
    assert _index(client) == {"glyphs": ("READY", ""), "rgb": ("READY", "")}
    z = gens["rgb"].sample_latents(2, seed=9)
    expected = gens["rgb"].run(z)

    client.unload_model("rgb")
    assert not client.is_model_ready("rgb")
    assert _index(client)["rgb"] == ("UNAVAILABLE", "unloaded")
    ready_only = [m.name for m in client.get_model_repository_index().models if m.state == "READY"]
    assert ready_only == ["glyphs"]
    code, message = _status(client.infer, "rgb", _inputs(z))
    assert code == "NOT_FOUND" and "rgb" in message
    code, _ = _status(client.get_model_config, "rgb")
    assert code == "NOT_FOUND"
    code, _ = _status(client.unload_model, "rgb")
    assert code == "NOT_FOUND"
    assert client.is_model_ready("glyphs")

    client.load_model("rgb")
    assert client.is_model_ready("rgb") and _index(client)["rgb"] == ("READY", "")
    np.testing.assert_array_equal(client.infer("rgb", _inputs(z)).as_numpy("image"), expected)
    # Loading a served model again reloads it; it keeps answering.
    client.load_model("rgb")
    np.testing.assert_array_equal(client.infer("rgb", _inputs(z)).as_numpy("image"), expected)


def test_repository_load_of_new_broken_and_unknown_packages(client, models_dir, gens):
    late = runtime_helpers.build_package(models_dir / "late", kind="gan", image_shape=(1, 4, 4), latent_dim=3,
                                         formats=("onnx",))
    broken = models_dir / "corrupt"
    shutil.copytree(models_dir / "rgb", broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    garbled = models_dir / "garbled"
    garbled.mkdir()
    (garbled / "manifest.json").write_text("{not json")
    try:
        assert _index(client)["late"] == ("UNAVAILABLE", "not loaded")
        client.load_model("late")
        z = np.zeros((2, 3), np.float32)
        np.testing.assert_array_equal(client.infer("late", _inputs(z)).as_numpy("image"),
                                      Generator.load(late).run(z))
        for name in ("corrupt", "garbled"):
            code, message = _status(client.load_model, name)
            assert code == "FAILED_PRECONDITION" and name in message, message
            state, reason = _index(client)[name]
            assert state == "UNAVAILABLE" and reason.startswith("load failed"), reason
            assert not client.is_model_ready(name)
        code, message = _status(client.load_model, "no-such-package")
        assert code == "NOT_FOUND" and "glyphs" in message
        for name in ("../glyphs", "a/b", ""):
            code, _ = _status(client.load_model, name)
            assert code == "INVALID_ARGUMENT", name
        # The server kept serving throughout.
        z, labels, inputs = _glyphs_request(gens, 2)
        np.testing.assert_array_equal(client.infer("glyphs", inputs).as_numpy("image"), gens["glyphs"].run(z, labels))
        client.unload_model("late")
    finally:
        for path in (late, broken, garbled):
            shutil.rmtree(path, ignore_errors=True)


def test_load_needs_a_models_directory(gens):
    server, port = create_server("127.0.0.1:0", {"only": gens["rgb"]})
    server.start()
    client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        assert _index(client) == {"only": ("READY", "")}
        for call in (client.load_model, client.unload_model):
            code, message = _status(call, "only")
            assert code == "FAILED_PRECONDITION" and "models directory" in message
        assert client.is_model_ready("only")
    finally:
        client.close()
        server.stop(grace=1)


def test_unload_lets_queued_work_finish():
    # In-process: requests already queued when a model is unloaded still get their rows; later
    # lookups get NOT_FOUND.
    async def scenario():
        def slow(z, labels):
            time.sleep(0.02)
            return z[:, None, :, None]

        batcher = DynamicBatcher(slow, "slow", max_batch=2)
        registry = ModelRegistry({"slow": ServedModel("slow", object(), batcher)})
        futures = [batcher.submit(np.full((2, 3), i, np.float32)) for i in range(3)]
        await registry.remove("slow")
        results = await asyncio.gather(*futures)
        assert [float(r[0, 0, 0, 0]) for r in results] == [0.0, 1.0, 2.0]
        assert "slow" not in registry
        with pytest.raises(ModelNotFoundError):
            registry.get_model("slow")

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- unimplemented

def test_shared_memory_trace_and_log_calls_are_unimplemented(client):
    calls = [(client.get_system_shared_memory_status, ()), (client.unregister_system_shared_memory, ()),
             (client.register_system_shared_memory, ("r", "/key", 16)),
             (client.get_cuda_shared_memory_status, ()), (client.unregister_cuda_shared_memory, ()),
             (client.get_trace_settings, ())]
    if hasattr(client, "get_log_settings"):
        calls.append((client.get_log_settings, ()))
    for call, args in calls:
        code, message = _status(call, *args)
        assert code == "UNIMPLEMENTED", call
        for served in ("ModelInfer", "ModelStreamInfer", "ModelConfig", "RepositoryModelLoad"):
            assert served in message, message
    assert client.is_server_live()


# ------------------------------------------------------------------------------------ token

def test_every_call_needs_the_token(models_dir, gens):
    server, port = create_server("127.0.0.1:0", models_dir / "rgb", token="s3cret")
    server.start()
    client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
    good = {"authorization": "Bearer s3cret"}
    z = gens["rgb"].sample_latents(1, seed=1)
    try:
        calls = [(client.get_model_config, ("rgb",)), (client.get_inference_statistics, ("rgb",)),
                 (client.get_model_repository_index, ()), (client.load_model, ("rgb",)),
                 (client.unload_model, ("rgb",)), (client.get_server_metadata, ()),
                 (client.get_system_shared_memory_status, ()), (client.infer, ("rgb", _inputs(z)))]
        for call, args in calls:
            for headers in (None, {"authorization": "Bearer wrong"}):
                code, _ = _status(call, *args, headers=headers)
                assert code == "UNAUTHENTICATED", call
        assert client.get_model_config("rgb", headers=good).config.name == "rgb"
        assert client.get_model_repository_index(headers=good).models[0].name == "rgb"
        # A single package is its own repository: reload works with the token.
        client.load_model("rgb", headers=good)
        assert client.infer("rgb", _inputs(z), headers=good).as_numpy("image").shape == (1, 3, 8, 8)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:  # the stream may already have failed (the token is checked when it opens)
            client.async_stream_infer("rgb", _inputs(z))
        except InferenceServerException:
            pass
        _, error = answers.get(timeout=TIMEOUT)
        assert error is not None and "UNAUTHENTICATED" in str(error.status())
        client.stop_stream()
        client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=good)
        client.async_stream_infer("rgb", _inputs(z), request_id="ok")
        result, error = answers.get(timeout=TIMEOUT)
        assert error is None and result.get_response().id == "ok"
        client.stop_stream()
    finally:
        client.close()
        server.stop(grace=1)


# ------------------------------------------------------------- fields tritonclient cannot set

@pytest.fixture(scope="module")
def kstub(server):
    import grpc

    from ganport.runtime.server.kserve import KServeStub

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield KServeStub(channel)


def _stub_code(call, request) -> tuple[str, str]:
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT)
    return info.value.code().name, info.value.details() or ""


def test_new_calls_bad_input_through_the_raw_stub(kstub):
    from ganport.runtime.server.kserve import messages as kpb

    cases = [
        (kstub.ModelConfig, kpb.ModelConfigRequest(name="nope"), "NOT_FOUND"),
        (kstub.ModelConfig, kpb.ModelConfigRequest(name="glyphs", version="2"), "NOT_FOUND"),
        (kstub.ModelConfig, kpb.ModelConfigRequest(), "NOT_FOUND"),
        (kstub.ModelStatistics, kpb.ModelStatisticsRequest(name="glyphs", version="7"), "NOT_FOUND"),
        (kstub.RepositoryIndex, kpb.RepositoryIndexRequest(repository_name="other"), "NOT_FOUND"),
        (kstub.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(repository_name="other", model_name="rgb"),
         "NOT_FOUND"),
        (kstub.RepositoryModelUnload, kpb.RepositoryModelUnloadRequest(repository_name="other", model_name="rgb"),
         "NOT_FOUND"),
        (kstub.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name="x" * 5000), "INVALID_ARGUMENT"),
        (kstub.RepositoryModelUnload, kpb.RepositoryModelUnloadRequest(model_name=""), "NOT_FOUND"),
        (kstub.TraceSetting, kpb.TraceSettingRequest(model_name="glyphs"), "UNIMPLEMENTED"),
        (kstub.CudaSharedMemoryRegister, kpb.CudaSharedMemoryRegisterRequest(name="r", byte_size=8), "UNIMPLEMENTED"),
    ]
    for call, request, code in cases:
        got, details = _stub_code(call, request)
        assert got == code, (type(request).__name__, got, details)
        assert "Traceback" not in details and "/tmp/" not in details
    ready = kstub.RepositoryIndex(kpb.RepositoryIndexRequest(ready=True), timeout=TIMEOUT)
    assert all(m.state == "READY" for m in ready.models) and {"glyphs", "rgb"} <= {m.name for m in ready.models}


def test_undecodable_bodies_are_invalid_argument(server):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for method in ("ModelConfig", "ModelStatistics", "RepositoryModelLoad", "RepositoryIndex"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(b"\xff\xff\xff", timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method


def test_a_long_stream_is_answered_in_full(server, gens):
    # More requests than a stream keeps in flight at once (reading pauses, nothing is lost).
    from ganport.runtime.server.kserve import STREAM_IN_FLIGHT

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    answers: queue.Queue = queue.Queue()
    total = STREAM_IN_FLIGHT * 2 + 5
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        _, _, inputs = _glyphs_request(gens, 1)
        for i in range(total):
            client.async_stream_infer("glyphs", inputs, request_id=str(i))
        ids = set()
        for _ in range(total):
            result, error = answers.get(timeout=TIMEOUT)
            assert error is None
            ids.add(result.get_response().id)
        assert ids == {str(i) for i in range(total)}
    finally:
        client.stop_stream()
        client.close()


def test_kserve_messages_work_on_the_pure_python_protobuf_backend():
    """Nested message classes (e.g. ``ModelMetadataResponse.TensorMetadata``) exist on both backends."""
    import os
    import subprocess
    import sys

    code = ("from ganport.runtime.server.kserve import messages as m; "
            "from google.protobuf.internal import api_implementation as a; "
            "t = m.ModelMetadataResponse.TensorMetadata(name='z', datatype='FP32', shape=[-1, 8]); "
            "r = m.ModelInferRequest.InferInputTensor(name='z'); "
            "print(a.Type(), m.ModelMetadataResponse(outputs=[t]).ByteSize() > 0, r.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "True", "z"]
