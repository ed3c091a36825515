"""The gRPC server, end to end: a real server on a free loopback port, real generated stubs.

Covers every RPC of ganport.v1.GeneratorService and of the KServe v2 subset; equality with the
in-process runtime for the same seed; dynamic batching observed through the metrics; streaming
of a request too big for one message; every kind of bad input; deadlines, cancellation and a full
queue; token and TLS modes; health while draining; reflection; Prometheus metrics; tritonclient
(in this same process); and ``ganport serve`` / ``ganport client`` as commands.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import runtime_helpers
import server_helpers
from ganport.runtime import Generator
from ganport.runtime.images import decode_png, make_grid
from ganport.runtime.server import create_server
from ganport.runtime.server.codec import array_to_tensor, batch_to_array
from ganport.runtime.server.kserve import KServeStub
from ganport.runtime.server.kserve import messages as kpb
from ganport.v1 import generator_pb2 as pb
from ganport.v1 import generator_pb2_grpc as pb_grpc

PNG, RAW_UINT8, RAW_FLOAT32 = pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_RAW_UINT8, pb.IMAGE_ENCODING_RAW_FLOAT32
MODEL_NAMES = ["aae", "broken", "glyphs", "rgb"]
TIMEOUT = 20


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    runtime_helpers.build_serving_models(root, ("glyphs", "rgb", "aae"))
    server_helpers.build_failing_package(root / "broken")
    return root


@pytest.fixture(scope="module")
def gens(models_dir):
    """The same packages loaded in-process: the reference for every image the server returns."""
    return {name: Generator.load(models_dir / name) for name in ("glyphs", "rgb", "aae")}


@pytest.fixture(scope="module")
def server(models_dir):
    # Small message limits so "too big for one message" is cheap to reach.
    srv, _ = create_server("127.0.0.1:0", models_dir, max_delay_ms=10, max_send_mb=0.25, max_receive_mb=1,
                           max_count=1024, max_stream_count=4096, max_text_length=32, metrics_port=0)
    srv.start()
    yield srv
    srv.stop(grace=1)


def _channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])


@pytest.fixture(scope="module")
def channel(server):
    with _channel(server.port) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.GeneratorServiceStub(channel)


@pytest.fixture(scope="module")
def kstub(channel):
    return KServeStub(channel)


def _health(channel, service: str = "") -> str:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _code(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    """Run a call expected to fail; return its status code and details."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)
    details = info.value.details() or ""
    assert "Traceback" not in details and 'File "' not in details
    return info.value.code(), details


def _glyphs_ok(stub) -> None:
    """The server still answers correctly (after an error)."""
    reply = stub.Generate(pb.GenerateRequest(model="glyphs", count=2, seed=1, encoding=RAW_UINT8), timeout=TIMEOUT)
    assert list(reply.images.shape) == [2, 12, 12, 1]


# ------------------------------------------------------------------------------ models, health

def test_list_and_get_model(stub, channel):
    models = stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models
    assert [m.name for m in models] == MODEL_NAMES
    glyphs = stub.GetModel(pb.GetModelRequest(model="glyphs"), timeout=TIMEOUT)
    assert glyphs.kind == "cgan" and glyphs.conditional and not glyphs.has_encoder
    assert glyphs.latent_dim == 8 and glyphs.n_classes == 62 and glyphs.class_names[10] == "A"
    assert list(glyphs.image_shape) == [1, 12, 12] and list(glyphs.value_range) == [-1.0, 1.0]
    assert (glyphs.backend, glyphs.device, glyphs.max_batch, glyphs.max_count) == ("onnx", "cpu", 64, 1024)
    assert '"kind": "cgan"' in glyphs.manifest_json
    assert stub.GetModel(pb.GetModelRequest(model="aae"), timeout=TIMEOUT).has_encoder
    code, details = _code(stub.GetModel, pb.GetModelRequest(model="nope"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in details and "aae, broken, glyphs, rgb" in details
    assert _health(channel) == "SERVING"
    assert _health(channel, "ganport.v1.GeneratorService") == "SERVING"
    assert _health(channel, "inference.GRPCInferenceService") == "SERVING"


def test_reflection_lists_services(channel):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"ganport.v1.GeneratorService", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    # Reflection can describe every service, the KServe one included (a grpcurl user needs that).
    assert database.FindFileContainingSymbol("inference.GRPCInferenceService").name == "ganport/v1/kserve.proto"
    assert database.FindFileContainingSymbol("ganport.v1.GenerateRequest").name == "ganport/v1/generator.proto"


# --------------------------------------------------------------------- images equal in-process

@pytest.mark.parametrize("encoding", [PNG, RAW_UINT8, RAW_FLOAT32], ids=["png", "uint8", "float32"])
def test_generate_equals_in_process(stub, gens, encoding):
    gen = gens["glyphs"]
    request = pb.GenerateRequest(model="glyphs", count=5, seed=3, labels=pb.Labels(names=["A"]), encoding=encoding)
    reply = stub.Generate(request, timeout=TIMEOUT)
    assert reply.seed == 3 and list(reply.labels) == [10] * 5 and reply.images.encoding == encoding
    if encoding == RAW_FLOAT32:
        expected = gen.run(gen.sample_latents(5, 3), gen.resolve_labels("A", 5))
        assert list(reply.images.shape) == [5, 1, 12, 12]
    else:
        expected = gen.generate(5, labels="A", seed=3)
        assert list(reply.images.shape) == [5, 12, 12, 1]
    if encoding == PNG:
        assert len(reply.images.png) == 5 and not reply.images.data
        assert all(data.startswith(b"\x89PNG") for data in reply.images.png)
        np.testing.assert_array_equal(np.stack([decode_png(d) for d in reply.images.png]), expected)
    np.testing.assert_array_equal(batch_to_array(reply.images), expected)


def test_generate_labels_seeds_and_unconditional(stub, gens):
    gen = gens["glyphs"]
    by_index = stub.Generate(pb.GenerateRequest(model="glyphs", count=3, seed=7, encoding=RAW_UINT8,
                                                labels=pb.Labels(indices=[1, 10, 36])), timeout=TIMEOUT)
    by_name = stub.Generate(pb.GenerateRequest(model="glyphs", count=3, seed=7, encoding=RAW_UINT8,
                                               labels=pb.Labels(names=["1", "A", "a"])), timeout=TIMEOUT)
    assert by_index.images.data == by_name.images.data and list(by_name.labels) == [1, 10, 36]
    np.testing.assert_array_equal(batch_to_array(by_name.images), gen.generate(3, labels=["1", "A", "a"], seed=7))
    # No labels: the runtime's rule (cycle through the classes).
    cycled = stub.Generate(pb.GenerateRequest(model="glyphs", count=4, seed=7, encoding=RAW_UINT8), timeout=TIMEOUT)
    assert list(cycled.labels) == [0, 1, 2, 3]
    np.testing.assert_array_equal(batch_to_array(cycled.images), gen.generate(4, seed=7))
    # No seed: the server picks one, returns it, and it reproduces the images.
    fresh = stub.Generate(pb.GenerateRequest(model="rgb", count=2, encoding=RAW_UINT8), timeout=TIMEOUT)
    assert list(fresh.images.shape) == [2, 8, 8, 3] and not fresh.labels
    np.testing.assert_array_equal(batch_to_array(fresh.images), gens["rgb"].generate(2, seed=fresh.seed))
    again = stub.Generate(pb.GenerateRequest(model="rgb", count=2, encoding=RAW_UINT8), timeout=TIMEOUT)
    assert again.seed != fresh.seed


def test_decode_equals_in_process(stub, gens):
    gen = gens["glyphs"]
    z = gen.sample_latents(6, seed=11)
    reply = stub.Decode(pb.DecodeRequest(model="glyphs", latents=array_to_tensor(z), encoding=PNG,
                                         labels=pb.Labels(names=list("abcdef"))), timeout=TIMEOUT)
    assert list(reply.labels) == [36, 37, 38, 39, 40, 41]
    np.testing.assert_array_equal(batch_to_array(reply.images), gen.decode(z, labels=list("abcdef")))
    raw = stub.Decode(pb.DecodeRequest(model="rgb", latents=array_to_tensor(gens["rgb"].sample_latents(2, 1)),
                                       encoding=RAW_FLOAT32), timeout=TIMEOUT)
    np.testing.assert_array_equal(batch_to_array(raw.images), gens["rgb"].run(gens["rgb"].sample_latents(2, 1)))


def test_encode_every_input_encoding(stub, gens):
    gen = gens["aae"]
    pixels = gen.generate(3, seed=5)
    expected = gen.encode(pixels)
    floats = gen.run(gen.sample_latents(3, 5))
    batches = {
        "uint8": pb.ImageBatch(encoding=RAW_UINT8, shape=list(pixels.shape), data=pixels.tobytes()),
        "png": stub.Generate(pb.GenerateRequest(model="aae", count=3, seed=5), timeout=TIMEOUT).images,
        "float32": pb.ImageBatch(encoding=RAW_FLOAT32, shape=list(floats.shape), data=floats.tobytes()),
    }
    for name, batch in batches.items():
        reply = stub.Encode(pb.EncodeRequest(model="aae", images=batch), timeout=TIMEOUT)
        latents = np.frombuffer(reply.latents.data, "<f4").reshape(list(reply.latents.shape))
        reference = gen.encode(floats) if name == "float32" else expected
        np.testing.assert_allclose(latents, reference, atol=1e-6, err_msg=name)


def test_render_word_equals_in_process(stub, gens):
    gen = gens["glyphs"]
    reply = stub.RenderWord(pb.RenderWordRequest(model="glyphs", text="Hello 42", seed=1), timeout=TIMEOUT)
    assert reply.seed == 1 and len(reply.labels) == 7 and len(reply.image.png) == 1
    np.testing.assert_array_equal(decode_png(reply.image.png[0]), gen.render_word("Hello 42", seed=1))
    shared = stub.RenderWord(pb.RenderWordRequest(model="glyphs", text="ab\ncd", seed=2, noise=pb.NOISE_MODE_SHARED,
                                                  spacing=-1, height=20, encoding=RAW_UINT8), timeout=TIMEOUT)
    expected = gen.render_word("ab\ncd", seed=2, noise="shared", spacing=-1, height=20)
    np.testing.assert_array_equal(batch_to_array(shared.image)[0], expected)


# --------------------------------------------------------------------------------- batching

def test_concurrent_single_image_callers_are_batched(server, stub, gens):
    gen = gens["glyphs"]
    before = server.metrics.model_stats("glyphs")
    callers = 32
    barrier = threading.Barrier(callers)

    def call(i: int):
        request = pb.GenerateRequest(model="glyphs", count=1, seed=100 + i, labels=pb.Labels(indices=[i]),
                                     encoding=RAW_FLOAT32)
        barrier.wait()
        return stub.Generate(request, timeout=TIMEOUT)

    with ThreadPoolExecutor(callers) as pool:
        replies = list(pool.map(call, range(callers)))
    after = server.metrics.model_stats("glyphs")
    model_calls = after["batches"] - before["batches"]
    assert after["images"] - before["images"] == callers
    assert model_calls < callers, f"{callers} callers took {model_calls} model calls: no batching"
    assert after["max_batch"] > 1
    for i, reply in enumerate(replies):
        # Each caller gets exactly its own image (batched GEMMs may round differently in the last bit).
        expected = gen.run(gen.sample_latents(1, 100 + i), [i])
        np.testing.assert_allclose(batch_to_array(reply.images), expected, atol=1e-5)
        assert list(reply.labels) == [i]


def test_big_request_is_split_into_batches(server, stub, gens):
    before = server.metrics.model_stats("glyphs")
    reply = stub.Generate(pb.GenerateRequest(model="glyphs", count=200, seed=4, encoding=RAW_UINT8), timeout=TIMEOUT)
    after = server.metrics.model_stats("glyphs")
    assert after["batches"] - before["batches"] == 4  # 64 + 64 + 64 + 8
    np.testing.assert_array_equal(batch_to_array(reply.images), gens["glyphs"].generate(200, seed=4))


def test_oversized_request_streams(stub, gens):
    gen = gens["glyphs"]
    # 1000 float images are ~2.2 MiB: above this server's 0.25 MiB send limit for one message...
    code, details = _code(stub.Generate, pb.GenerateRequest(model="glyphs", count=1000, seed=9, encoding=RAW_FLOAT32))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "GenerateStream" in details
    # ...but fine as a stream; and the stream allows more than max_count (1024) images.
    for count, encoding in ((1000, RAW_FLOAT32), (1500, PNG)):
        chunks = list(stub.GenerateStream(pb.GenerateRequest(model="glyphs", count=count, seed=9, encoding=encoding),
                                          timeout=TIMEOUT))
        assert [c.offset for c in chunks] == list(range(0, count, 64)) and {c.total for c in chunks} == {count}
        assert all(c.ByteSize() < 0.25 * 2 ** 20 for c in chunks)
        images = np.concatenate([batch_to_array(c.images) for c in chunks])
        labels = np.concatenate([list(c.labels) for c in chunks])
        if encoding == RAW_FLOAT32:
            np.testing.assert_array_equal(images, gen.run(gen.sample_latents(count, 9), gen.resolve_labels(None, count)))
        else:
            np.testing.assert_array_equal(images, gen.generate(count, seed=9))
        np.testing.assert_array_equal(labels, np.arange(count) % 62)
    small = list(stub.GenerateStream(pb.GenerateRequest(model="rgb", count=10, seed=1, chunk_size=4,
                                                        encoding=RAW_UINT8), timeout=TIMEOUT))
    assert [len(c.images.data) // (8 * 8 * 3) for c in small] == [4, 4, 2]
    code, _ = _code(lambda r, **kw: list(stub.GenerateStream(r, **kw)), pb.GenerateRequest(model="glyphs", count=5000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# -------------------------------------------------------------------------------- bad inputs

def _latents(shape, fill=0.0, nbytes=None) -> pb.FloatTensor:
    data = np.full(shape, fill, "<f4").tobytes()
    return pb.FloatTensor(shape=list(shape), data=data if nbytes is None else data[:nbytes])


BAD_REQUESTS = [
    # (id, method, request, expected code, text the message must contain)
    ("unknown-model", "Generate", pb.GenerateRequest(model="nope", count=1), "NOT_FOUND", "served models"),
    ("empty-model", "Decode", pb.DecodeRequest(latents=_latents((1, 8))), "NOT_FOUND", "served models"),
    ("count-zero", "Generate", pb.GenerateRequest(model="glyphs", count=0), "INVALID_ARGUMENT", "count"),
    ("count-too-big", "Generate", pb.GenerateRequest(model="glyphs", count=1025), "INVALID_ARGUMENT", "1..1024"),
    ("label-index", "Generate", pb.GenerateRequest(model="glyphs", count=1, labels=pb.Labels(indices=[62])),
     "INVALID_ARGUMENT", "unknown label 62"),
    ("label-name", "Generate", pb.GenerateRequest(model="glyphs", count=1, labels=pb.Labels(names=["ZZ"])),
     "INVALID_ARGUMENT", "unknown label 'ZZ'"),
    ("label-count", "Generate", pb.GenerateRequest(model="glyphs", count=3, labels=pb.Labels(indices=[1, 2])),
     "INVALID_ARGUMENT", "2 labels for 3 images"),
    ("label-both", "Generate", pb.GenerateRequest(model="glyphs", count=1, labels=pb.Labels(indices=[1], names=["A"])),
     "INVALID_ARGUMENT", "not both"),
    ("label-unconditional", "Generate", pb.GenerateRequest(model="rgb", count=1, labels=pb.Labels(indices=[0])),
     "INVALID_ARGUMENT", "unconditional"),
    ("encoding", "Generate", pb.GenerateRequest(model="glyphs", count=1, encoding=7), "INVALID_ARGUMENT", "encoding"),
    ("chunk-size", "GenerateStream", pb.GenerateRequest(model="glyphs", count=1, chunk_size=-1),
     "INVALID_ARGUMENT", "chunk_size"),
    ("latents-missing", "Decode", pb.DecodeRequest(model="glyphs"), "INVALID_ARGUMENT", "latents are required"),
    ("latents-dim", "Decode", pb.DecodeRequest(model="glyphs", latents=_latents((2, 7))),
     "INVALID_ARGUMENT", "[N, 8]"),
    ("latents-ndim", "Decode", pb.DecodeRequest(model="glyphs", latents=_latents((2, 2, 2))),
     "INVALID_ARGUMENT", "2 positive dimensions"),
    ("latents-bytes", "Decode", pb.DecodeRequest(model="glyphs", latents=_latents((2, 8), nbytes=60)),
     "INVALID_ARGUMENT", "60 bytes"),
    ("latents-nan", "Decode", pb.DecodeRequest(model="glyphs", latents=_latents((2, 8), np.nan)),
     "INVALID_ARGUMENT", "NaN"),
    ("latents-inf", "Decode", pb.DecodeRequest(model="rgb", latents=_latents((1, 6), np.inf)),
     "INVALID_ARGUMENT", "infinite"),
    ("latents-count", "Decode", pb.DecodeRequest(model="glyphs", latents=_latents((1025, 8))),
     "INVALID_ARGUMENT", "1..1024"),
    ("word-char", "RenderWord", pb.RenderWordRequest(model="glyphs", text="hé~"), "INVALID_ARGUMENT", "cannot render"),
    ("word-empty", "RenderWord", pb.RenderWordRequest(model="glyphs", text=""), "INVALID_ARGUMENT", "no characters"),
    ("word-long", "RenderWord", pb.RenderWordRequest(model="glyphs", text="a" * 33), "INVALID_ARGUMENT", "limit is 32"),
    ("word-height", "RenderWord", pb.RenderWordRequest(model="glyphs", text="a", height=0), "INVALID_ARGUMENT", "height"),
    ("word-float", "RenderWord", pb.RenderWordRequest(model="glyphs", text="a", encoding=RAW_FLOAT32),
     "INVALID_ARGUMENT", "not available"),
    ("word-unconditional", "RenderWord", pb.RenderWordRequest(model="rgb", text="a"), "INVALID_ARGUMENT",
     "unconditional"),
    ("encode-no-encoder", "Encode", pb.EncodeRequest(model="glyphs", images=pb.ImageBatch(
        encoding=RAW_UINT8, shape=[1, 12, 12, 1], data=bytes(144))), "FAILED_PRECONDITION", "no encoder"),
    ("encode-shape", "Encode", pb.EncodeRequest(model="aae", images=pb.ImageBatch(
        encoding=RAW_UINT8, shape=[1, 5, 5, 1], data=bytes(25))), "INVALID_ARGUMENT", "images must be"),
    ("encode-png", "Encode", pb.EncodeRequest(model="aae", images=pb.ImageBatch(encoding=PNG, png=[b"nope"])),
     "INVALID_ARGUMENT", "not a readable image"),
    ("encode-missing", "Encode", pb.EncodeRequest(model="aae"), "INVALID_ARGUMENT", "images are required"),
    ("response-too-big", "Generate", pb.GenerateRequest(model="glyphs", count=600, encoding=RAW_FLOAT32),
     "RESOURCE_EXHAUSTED", "message limit"),
    ("request-too-big", "Decode", pb.DecodeRequest(model="glyphs", latents=_latents((40000, 8))),
     "RESOURCE_EXHAUSTED", ""),
]


@pytest.mark.parametrize("method, request_, code, text", [r[1:] for r in BAD_REQUESTS],
                         ids=[r[0] for r in BAD_REQUESTS])
def test_bad_input_gets_status_and_server_keeps_serving(stub, method, request_, code, text):
    call = getattr(stub, method)
    if method == "GenerateStream":
        call = (lambda c: lambda r, **kw: list(c(r, **kw)))(call)
    got, details = _code(call, request_)
    assert got.name == code, details
    assert text in details
    _glyphs_ok(stub)


def test_model_failure_is_internal_without_traceback(stub, caplog):
    # The "broken" graph only runs for batches of exactly 3: onnxruntime fails at run time.
    ok = stub.Generate(pb.GenerateRequest(model="broken", count=3, seed=1, encoding=RAW_FLOAT32), timeout=TIMEOUT)
    assert list(ok.images.shape) == [3, 1, 2, 4]
    with caplog.at_level(logging.ERROR, logger="ganport"):
        code, details = _code(stub.Generate, pb.GenerateRequest(model="broken", count=1, seed=1))
    assert code == grpc.StatusCode.INTERNAL and details == "internal error, see server log"
    assert any(r.exc_info for r in caplog.records), "the traceback belongs in the server log"
    _glyphs_ok(stub)


# ----------------------------------------------------------- deadlines, cancellation, full queue

@pytest.fixture(scope="module")
def slow_server(models_dir):
    """A server whose batcher waits 400 ms for company and queues at most 2 requests per model."""
    srv, port = create_server("127.0.0.1:0", models_dir, max_delay_ms=400, max_queue=2)
    srv.start()
    with _channel(port) as ch:
        yield srv, pb_grpc.GeneratorServiceStub(ch)
    srv.stop(grace=1)


def test_full_queue_is_refused_immediately(slow_server):
    server, stub = slow_server
    request = pb.GenerateRequest(model="rgb", count=1, seed=1)
    waiting = [stub.Generate.future(request, timeout=TIMEOUT) for _ in range(2)]
    time.sleep(0.1)  # both are now in the queue, waiting for the 400 ms batch window
    started = time.monotonic()
    code, details = _code(stub.Generate, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue" in details
    assert time.monotonic() - started < 0.3, "a full queue must answer at once, not after the wait"
    assert all(len(f.result().images.png) == 1 for f in waiting)


def test_expired_and_cancelled_requests_are_dropped_before_running(slow_server):
    server, stub = slow_server
    before = server.metrics.model_stats("glyphs")
    code, _ = _code(stub.Generate, pb.GenerateRequest(model="glyphs", count=1, seed=1), timeout=0.1)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    cancelled = stub.Generate.future(pb.GenerateRequest(model="glyphs", count=1, seed=2), timeout=TIMEOUT)
    time.sleep(0.05)
    assert cancelled.cancel()
    time.sleep(0.6)  # past the batch window: the batcher has looked at both and dropped them
    after = server.metrics.model_stats("glyphs")
    assert after["dropped"] - before["dropped"] == 2
    assert after["batches"] == before["batches"], "dropped requests must not reach the model"
    samples = _scrape(server.metrics.render())
    assert samples[("ganport_dropped_total", (("model", "glyphs"), ("reason", "deadline")))] == 1
    assert samples[("ganport_dropped_total", (("model", "glyphs"), ("reason", "cancelled")))] == 1


# -------------------------------------------------------------------------------- token, TLS

def test_token_mode(models_dir):
    server, port = create_server("127.0.0.1:0", models_dir / "rgb", token="s3cret")
    server.start()
    try:
        with _channel(port) as ch:
            stub = pb_grpc.GeneratorServiceStub(ch)
            request = pb.GenerateRequest(model="rgb", count=1, seed=1)
            code, details = _code(stub.Generate, request)
            assert code == grpc.StatusCode.UNAUTHENTICATED and "missing token" in details
            code, details = _code(stub.Generate, request, metadata=[("authorization", "Bearer wrong")])
            assert code == grpc.StatusCode.UNAUTHENTICATED and details == "invalid token"
            code, _ = _code(lambda r, **kw: list(stub.GenerateStream(r, **kw)), request)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            reply = stub.Generate(request, timeout=TIMEOUT, metadata=[("authorization", "Bearer s3cret")])
            assert len(reply.images.png) == 1
            assert _health(ch) == "SERVING"  # health stays open for probes
            assert server.metrics.count("ganport_auth_failures_total") == 3
    finally:
        server.stop(grace=1)


def test_tls_mode(models_dir, tmp_path):
    cert, key = server_helpers.make_certificate(tmp_path / "server")
    other_ca, _ = server_helpers.make_certificate(tmp_path / "other", name="other")
    server, port = create_server("127.0.0.1:0", models_dir / "rgb", tls=(str(cert), str(key)))
    server.start()
    request = pb.GenerateRequest(model="rgb", count=1, seed=1)
    try:
        for host in ("127.0.0.1", "localhost"):
            with grpc.secure_channel(f"{host}:{port}", grpc.ssl_channel_credentials(cert.read_bytes())) as ch:
                assert len(pb_grpc.GeneratorServiceStub(ch).Generate(request, timeout=TIMEOUT).images.png) == 1
        with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(other_ca.read_bytes())) as ch:
            code, _ = _code(pb_grpc.GeneratorServiceStub(ch).Generate, request, timeout=5)
            assert code == grpc.StatusCode.UNAVAILABLE  # the server's certificate is not trusted
        with _channel(port) as ch:
            code, _ = _code(pb_grpc.GeneratorServiceStub(ch).Generate, request, timeout=5)
            assert code == grpc.StatusCode.UNAVAILABLE  # plaintext cannot talk to a TLS port
    finally:
        server.stop(grace=1)


# ------------------------------------------------------------------------------------ drain

def test_drain_flips_health_and_finishes_in_flight(models_dir):
    server, port = create_server("127.0.0.1:0", models_dir / "glyphs", max_delay_ms=300)
    server.start()
    with _channel(port) as ch:
        stub = pb_grpc.GeneratorServiceStub(ch)
        kstub = KServeStub(ch)
        assert _health(ch) == "SERVING" and kstub.ServerReady(kpb.ServerReadyRequest(), timeout=5).ready
        in_flight = stub.Generate.future(pb.GenerateRequest(model="glyphs", count=2, seed=1), timeout=TIMEOUT)
        time.sleep(0.05)
        stopper = threading.Thread(target=server.stop, kwargs={"grace": 5, "drain": 1.0})
        stopper.start()
        deadline = time.monotonic() + 0.8
        while _health(ch) != "NOT_SERVING" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _health(ch) == "NOT_SERVING"
        assert _health(ch, "ganport.v1.GeneratorService") == "NOT_SERVING"
        assert not kstub.ServerReady(kpb.ServerReadyRequest(), timeout=5).ready
        assert kstub.ServerLive(kpb.ServerLiveRequest(), timeout=5).live
        assert len(in_flight.result().images.png) == 2  # in-flight work finishes
        stopper.join(10)
        assert not stopper.is_alive()
        code, _ = _code(stub.Generate, pb.GenerateRequest(model="glyphs", count=1), timeout=3)
        assert code == grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------------------------- KServe v2

def test_kserve_metadata_and_infer(kstub, gens):
    gen = gens["glyphs"]
    assert kstub.ServerLive(kpb.ServerLiveRequest(), timeout=TIMEOUT).live
    assert kstub.ServerReady(kpb.ServerReadyRequest(), timeout=TIMEOUT).ready
    assert kstub.ModelReady(kpb.ModelReadyRequest(name="glyphs", version="1"), timeout=TIMEOUT).ready
    meta = kstub.ServerMetadata(kpb.ServerMetadataRequest(), timeout=TIMEOUT)
    assert meta.name == "ganport" and meta.version
    model = kstub.ModelMetadata(kpb.ModelMetadataRequest(name="glyphs"), timeout=TIMEOUT)
    assert list(model.versions) == ["1"] and model.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("z", "FP32", [-1, 8]),
                                                                           ("label", "INT64", [-1, 1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("image", "FP32", [-1, 1, 12, 12])]

    z = gen.sample_latents(3, seed=21)
    labels = np.array([5, 6, 7], np.int64)
    tensor = kpb.ModelInferRequest.InferInputTensor
    raw = kpb.ModelInferRequest(model_name="glyphs", id="r1",
                                inputs=[tensor(name="z", datatype="FP32", shape=[3, 8]),
                                        tensor(name="label", datatype="INT64", shape=[3])],
                                raw_input_contents=[z.tobytes(), labels.tobytes()])
    reply = kstub.ModelInfer(raw, timeout=TIMEOUT)
    assert reply.id == "r1" and reply.model_version == "1"
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [("image", "FP32", [3, 1, 12, 12])]
    image = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(3, 1, 12, 12)
    np.testing.assert_array_equal(image, gen.run(z, labels))
    typed = kpb.ModelInferRequest(model_name="glyphs", inputs=[
        tensor(name="z", datatype="FP32", shape=[3, 8], contents=kpb.InferTensorContents(fp32_contents=z.ravel())),
        tensor(name="label", datatype="INT32", shape=[3, 1], contents=kpb.InferTensorContents(int_contents=labels))])
    assert kstub.ModelInfer(typed, timeout=TIMEOUT).raw_output_contents[0] == reply.raw_output_contents[0]


KSERVE_BAD = [
    ("model", dict(model_name="nope"), "NOT_FOUND"),
    ("version", dict(model_name="glyphs", model_version="2"), "NOT_FOUND"),
    ("missing-label", dict(inputs=[("z", "FP32", [1, 8])], raw=[bytes(32)]), "INVALID_ARGUMENT"),
    ("dtype", dict(inputs=[("z", "FP64", [1, 8]), ("label", "INT64", [1])], raw=[bytes(64), bytes(8)]),
     "INVALID_ARGUMENT"),
    ("bytes", dict(inputs=[("z", "FP32", [1, 8]), ("label", "INT64", [1])], raw=[bytes(31), bytes(8)]),
     "INVALID_ARGUMENT"),
    ("raw-count", dict(inputs=[("z", "FP32", [1, 8]), ("label", "INT64", [1])], raw=[bytes(32)]), "INVALID_ARGUMENT"),
    ("label-range", dict(inputs=[("z", "FP32", [1, 8]), ("label", "INT64", [1])],
                         raw=[bytes(32), np.array([99], np.int64).tobytes()]), "INVALID_ARGUMENT"),
    ("nan", dict(inputs=[("z", "FP32", [1, 8]), ("label", "INT64", [1])],
                 raw=[np.full(8, np.nan, np.float32).tobytes(), bytes(8)]), "INVALID_ARGUMENT"),
    ("unknown-input", dict(inputs=[("z", "FP32", [1, 8]), ("label", "INT64", [1]), ("x", "FP32", [1])],
                           raw=[bytes(32), bytes(8), bytes(4)]), "INVALID_ARGUMENT"),
    ("output", dict(inputs=[("z", "FP32", [1, 8]), ("label", "INT64", [1])], raw=[bytes(32), bytes(8)],
                    outputs=["logits"]), "INVALID_ARGUMENT"),
]


@pytest.mark.parametrize("spec, code", [b[1:] for b in KSERVE_BAD], ids=[b[0] for b in KSERVE_BAD])
def test_kserve_bad_requests(kstub, stub, spec, code):
    tensor = kpb.ModelInferRequest.InferInputTensor
    request = kpb.ModelInferRequest(
        model_name=spec.get("model_name", "glyphs"), model_version=spec.get("model_version", ""),
        inputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in spec.get("inputs", [])],
        raw_input_contents=spec.get("raw", []),
        outputs=[kpb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in spec.get("outputs", [])])
    got, _ = _code(kstub.ModelInfer, request)
    assert got.name == code
    _glyphs_ok(stub)


def test_tritonclient_gets_the_native_image(server, stub, gens):
    # In this very process: the server's KServe messages live in a private descriptor pool, so
    # tritonclient's registration of the same inference.* names does not clash with them.
    triton = pytest.importorskip("tritonclient.grpc")
    gen = gens["glyphs"]
    native = stub.Generate(pb.GenerateRequest(model="glyphs", count=4, seed=8, labels=pb.Labels(names=["Q"]),
                                              encoding=RAW_FLOAT32), timeout=TIMEOUT)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("glyphs")
        assert client.get_server_metadata().name == "ganport"
        metadata = client.get_model_metadata("glyphs")
        assert metadata.platform == "onnxruntime_onnx" and list(metadata.versions) == ["1"]
        assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("z", "FP32", [-1, 8]),
                                                                                  ("label", "INT64", [-1, 1])]
        inputs = [triton.InferInput("z", [4, 8], "FP32"), triton.InferInput("label", [4], "INT64")]
        inputs[0].set_data_from_numpy(gen.sample_latents(4, seed=8))
        inputs[1].set_data_from_numpy(np.array(native.labels, np.int64))
        result = client.infer("glyphs", inputs, outputs=[triton.InferRequestedOutput("image")], request_id="t-1")
        assert result.get_response().id == "t-1"
        np.testing.assert_array_equal(result.as_numpy("image"), batch_to_array(native.images))
        with pytest.raises(triton.InferenceServerException) as missing:
            client.infer("no-such-model", inputs)
        assert missing.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()


# ---------------------------------------------------------------------------------- metrics

def _scrape(text: str) -> dict:
    """Prometheus text -> {(sample name, sorted label pairs): value}, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_prometheus_metrics_endpoint(server, stub):
    _glyphs_ok(stub)
    with pytest.raises(grpc.RpcError):
        stub.GetModel(pb.GetModelRequest(model="no-such-model"), timeout=TIMEOUT)
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert "# TYPE ganport_request_seconds histogram" in body
    samples = _scrape(body)
    assert samples[("ganport_requests_total", (("code", "OK"), ("method", "Generate"), ("model", "glyphs")))] >= 1
    assert samples[("ganport_requests_total", (("code", "NOT_FOUND"), ("method", "GetModel"), ("model", "")))] >= 1
    assert samples[("ganport_batch_size_bucket", (("le", "+Inf"), ("model", "glyphs")))] >= 1
    assert samples[("ganport_images_total", (("model", "glyphs"),))] >= 1
    names = {name for name, _ in samples}
    for name in ("ganport_batch_size_count", "ganport_queue_seconds_sum", "ganport_compute_seconds_bucket"):
        assert name in names, name


# ------------------------------------------------------------------------- serve and client CLIs

def test_serve_and_client_commands(models_dir, gens, tmp_path, capsys):
    from ganport.cli import main

    proc = server_helpers.ServeProcess(models_dir, "--max-delay-ms", "300", "--grace", "5")
    try:
        assert proc.n_models == 4
        target = ["client", "--target", proc.target]
        gen = gens["glyphs"]
        # A call in flight when SIGTERM arrives must still be answered (checked at the end).
        with _channel(proc.port) as ch:
            assert main([*target, "generate", "glyphs", "-n", "16", "--seed", "3", "--label", "A",
                         "-o", str(tmp_path / "grid.png")]) == 0
            np.testing.assert_array_equal(decode_png((tmp_path / "grid.png").read_bytes()),
                                          make_grid(gen.generate(16, labels="A", seed=3)))
            assert main([*target, "render", "glyphs", "HELLO", "--seed", "1", "-o", str(tmp_path / "w.png")]) == 0
            np.testing.assert_array_equal(decode_png((tmp_path / "w.png").read_bytes()),
                                          gen.render_word("HELLO", seed=1))
            z = gen.sample_latents(4, seed=2)
            np.save(tmp_path / "z.npy", z)
            assert main([*target, "decode", "glyphs", "--latents", str(tmp_path / "z.npy"), "--label", "7",
                         "-o", str(tmp_path / "d.png")]) == 0
            np.testing.assert_array_equal(decode_png((tmp_path / "d.png").read_bytes()),
                                          make_grid(gen.decode(z, labels="7")))
            assert main([*target, "models"]) == 0 and main([*target, "health"]) == 0
            out = capsys.readouterr().out
            assert "glyphs\tcgan" in out and "SERVING" in out and "seed 3" in out
            assert main([*target, "generate", "nope", "-n", "1", "-o", str(tmp_path / "x.png")]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error: NOT_FOUND: model 'nope' is not served")

            in_flight = pb_grpc.GeneratorServiceStub(ch).Generate.future(
                pb.GenerateRequest(model="glyphs", count=1, seed=5), timeout=TIMEOUT)
            time.sleep(0.1)
            proc.proc.send_signal(signal.SIGTERM)
            assert len(in_flight.result().images.png) == 1
        assert proc.wait(30) == 0
        assert any("server stopped" in line for line in proc.lines)
    finally:
        proc.kill()


def test_client_cannot_connect_is_one_error_line(tmp_path, capsys):
    from ganport.cli import main

    rc = main(["client", "--target", "127.0.0.1:1", "--timeout", "2", "models"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: UNAVAILABLE")



def test_auto_instances_give_convolutional_models_two_on_cpu(server):
    """The default ``instances="auto"``: the AAE (a convolutional decoder) gets 2 instances on a
    CPU with 2+ cores, the MLP cGAN 1; Triton clients read the same counts from the model config."""
    import os

    import tritonclient.grpc as grpcclient

    expected = {"aae": 2 if len(os.sched_getaffinity(0)) >= 2 else 1, "glyphs": 1}
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    for name, count in expected.items():
        assert server.models.get_model(name).batcher.instances == count
        assert [group.count for group in client.get_model_config(name).config.instance_group] == [count]


def test_auto_instances_leave_generator_objects_at_one(gens):
    """Generators passed as objects keep the threads they were loaded with: "auto" gives even a
    convolutional one a single instance; an explicit count still applies."""
    for instances, expected in (("auto", 1), (2, 2)):
        srv, _ = create_server("127.0.0.1:0", {"aae": gens["aae"]}, instances=instances)
        try:
            assert srv.models.get_model("aae").batcher.instances == expected
        finally:
            srv.stop(grace=0)


@pytest.mark.parametrize("instances, kind, device, cores, threads, expected", [
    ("auto", "dcgan", "cpu", 2, None, 2), ("auto", "cdcgan", "cpu", 16, None, 2), ("auto", "aae", "cpu", 2, None, 2),
    ("auto", "dcgan", "cpu", 1, None, 1), ("auto", "dcgan", "cuda:0", 16, None, 1),
    ("auto", "cgan", "cpu", 16, None, 1), ("auto", "gan", "cpu", 2, None, 1),
    # explicit --threads: two instances only where two calls of that many threads fit the cores
    ("auto", "dcgan", "cpu", 2, 1, 2), ("auto", "dcgan", "cpu", 2, 2, 1), ("auto", "dcgan", "cpu", 16, 8, 2),
    (3, "cgan", "cpu", 2, None, 3), ("2", "dcgan", "cuda", 2, 4, 2),
])
def test_resolve_instances(monkeypatch, instances, kind, device, cores, threads, expected):
    from ganport.runtime.server import instances as module

    monkeypatch.setattr(module, "_cores", lambda: cores)
    assert module.resolve_instances(instances, kind, device, threads) == expected


@pytest.mark.parametrize("bad", [0, -1, "two", "", 1.5, None])
def test_bad_instances_name_the_valid_choices(models_dir, bad):
    from ganport.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="invalid instances") as info:
        create_server("127.0.0.1:0", models_dir / "glyphs", instances=bad)
    assert "'auto' or an integer >= 1" in str(info.value)


def test_bad_instances_flag_is_one_error_line(models_dir, capsys):
    from ganport.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", str(models_dir / "glyphs"), "--port", "0", "--instances", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid instances '0'" in err and "'auto' or an integer >= 1" in err and "Traceback" not in err


def test_two_instances_give_every_caller_its_own_images(models_dir, gens):
    """``instances=2``: batches of one model run two at a time; answers equal the in-process ones."""
    srv, port = create_server("127.0.0.1:0", models_dir / "glyphs", instances=2, max_batch=4)
    srv.start()
    try:
        gen = gens["glyphs"]
        with _channel(port) as channel:
            stub = pb_grpc.GeneratorServiceStub(channel)

            def call(i: int):
                return stub.Generate(pb.GenerateRequest(model="glyphs", count=1 + i % 7, seed=200 + i,
                                                        encoding=RAW_UINT8), timeout=TIMEOUT)

            with ThreadPoolExecutor(16) as pool:
                replies = list(pool.map(call, range(48)))
        for i, reply in enumerate(replies):
            np.testing.assert_array_equal(batch_to_array(reply.images), gen.generate(1 + i % 7, seed=200 + i))
        assert srv.models.get_model("glyphs").batcher.instances == 2
        # Triton clients read the instance count from the model config.
        import tritonclient.grpc as grpcclient

        config = grpcclient.InferenceServerClient(f"127.0.0.1:{port}").get_model_config("glyphs").config
        assert [group.count for group in config.instance_group] == [2]
    finally:
        srv.stop(grace=1)
