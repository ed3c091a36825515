"""The response cache: LRU by bytes on its own, and through a real server (hits, misses, reload)."""

from __future__ import annotations

import asyncio
import shutil

import grpc
import numpy as np
import pytest

import runtime_helpers
from ganport.runtime import Generator
from ganport.runtime.server import create_server
from ganport.runtime.server.cache import ResponseCache
from ganport.v1 import generator_pb2 as pb
from ganport.v1 import generator_pb2_grpc as pb_grpc

RAW_UINT8 = pb.IMAGE_ENCODING_RAW_UINT8
TIMEOUT = 20


def test_lru_is_bounded_in_bytes_and_forgets_a_model():
    cache = ResponseCache(100)
    for i in range(5):
        cache.put(("a", 1, "Generate", bytes([i])), f"r{i}", size=30)
    assert cache.bytes == 90 and len(cache) == 3  # the two oldest were evicted
    assert cache.get(("a", 1, "Generate", bytes([0]))) is None
    assert cache.get(("a", 1, "Generate", bytes([2]))) == "r2"  # now most recently used
    cache.put(("b", 1, "Generate", b"x"), "rb", size=30)
    assert cache.get(("a", 1, "Generate", bytes([2]))) == "r2" and cache.get(("a", 1, "Generate", bytes([3]))) is None
    cache.put(("b", 1, "Generate", b"big"), "too big", size=101)
    assert cache.get(("b", 1, "Generate", b"big")) is None and cache.bytes <= 100
    cache.drop_model("a")
    assert len(cache) == 1 and cache.bytes == 30
    off = ResponseCache(0)
    off.put(("a", 1, "Generate", b""), "r", size=1)
    assert off.get(("a", 1, "Generate", b"")) is None and len(off) == 0
    with pytest.raises(ValueError):
        ResponseCache(-1)


@pytest.fixture()
def served(tmp_path):
    models = tmp_path / "models"
    runtime_helpers.build_package(models / "glyphs", kind="cgan", class_names=runtime_helpers.GLYPH_CLASSES,
                                  formats=("onnx",))
    server, port = create_server("127.0.0.1:0", models, cache_mb=0.05)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield server, pb_grpc.GeneratorServiceStub(channel), models
    server.stop(grace=1)


def _hits(server, result: str) -> float:
    return server.metrics.count("ganport_cache_requests_total", model="glyphs", result=result)


def test_seeded_requests_are_answered_from_the_cache(served, tmp_path):
    server, stub, models = served
    request = pb.GenerateRequest(model="glyphs", count=3, seed=11, labels=pb.Labels(names=["A"]), encoding=RAW_UINT8)
    first = stub.Generate(request, timeout=TIMEOUT)
    batches = server.metrics.model_stats("glyphs")["batches"]
    second = stub.Generate(request, timeout=TIMEOUT)
    assert second == first
    assert server.metrics.model_stats("glyphs")["batches"] == batches, "a hit must not run the model"
    assert (_hits(server, "hit"), _hits(server, "miss")) == (1, 1)
    expected = Generator.load(models / "glyphs").generate(3, labels="A", seed=11)
    np.testing.assert_array_equal(np.frombuffer(second.images.data, np.uint8).reshape(expected.shape), expected)

    # Unseeded requests are never cached (nor even looked up).
    for _ in range(2):
        stub.Generate(pb.GenerateRequest(model="glyphs", count=1, encoding=RAW_UINT8), timeout=TIMEOUT)
    assert (_hits(server, "hit"), _hits(server, "miss")) == (1, 1)

    word = pb.RenderWordRequest(model="glyphs", text="Hi", seed=3)
    assert stub.RenderWord(word, timeout=TIMEOUT) == stub.RenderWord(word, timeout=TIMEOUT)
    assert _hits(server, "hit") == 2

    # Memory stays under --cache-mb (0.05 MiB) however many distinct requests come.
    cache = server.cache
    for seed in range(200):
        stub.Generate(pb.GenerateRequest(model="glyphs", count=4, seed=seed, encoding=RAW_UINT8), timeout=TIMEOUT)
    assert 0 < cache.bytes <= 0.05 * 1024 * 1024

    # A reload drops the model's entries: the same request now gets the new model's images.
    runtime_helpers.build_package(tmp_path / "new" / "glyphs", kind="cgan", class_names=runtime_helpers.GLYPH_CLASSES,
                                  formats=("onnx",), seed=9)
    shutil.rmtree(models / "glyphs")
    shutil.copytree(tmp_path / "new" / "glyphs", models / "glyphs")
    asyncio.run_coroutine_threadsafe(server.repository.load("glyphs"), server.loop).result(30)
    assert cache.bytes == 0
    third = stub.Generate(request, timeout=TIMEOUT)
    new = Generator.load(models / "glyphs").generate(3, labels="A", seed=11)
    np.testing.assert_array_equal(np.frombuffer(third.images.data, np.uint8).reshape(new.shape), new)
    assert third != first
