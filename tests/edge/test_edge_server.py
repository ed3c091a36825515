"""The gRPC server in the torch-free edge environment: serve the edge package, call it with the
generated stubs, and prove torch was never imported (see conftest.py for the package).
"""

from __future__ import annotations

import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc


@pytest.fixture(scope="module")
def served(package):
    from ganport.runtime.server import create_server

    server, port = create_server("127.0.0.1:0", package, max_delay_ms=2, http_port=0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel
    channel.close()
    server.stop(grace=1)


def test_generate_render_and_health_without_torch(served, gen, package):
    from ganport.runtime.images import decode_png
    from ganport.runtime.server.codec import batch_to_array
    from ganport.v1 import generator_pb2 as pb
    from ganport.v1 import generator_pb2_grpc as pb_grpc

    server, channel = served
    stub = pb_grpc.GeneratorServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    [model] = stub.ListModels(pb.ListModelsRequest(), timeout=10).models
    assert model.name == package.name and model.backend == "onnx" and model.n_classes == 62

    reply = stub.Generate(pb.GenerateRequest(model=model.name, count=6, seed=3, labels=pb.Labels(names=["A"]),
                                             encoding=pb.IMAGE_ENCODING_RAW_UINT8), timeout=10)
    np.testing.assert_array_equal(batch_to_array(reply.images), gen.generate(6, labels="A", seed=3))

    word = stub.RenderWord(pb.RenderWordRequest(model=model.name, text="Edge 1", seed=2), timeout=10)
    np.testing.assert_array_equal(decode_png(word.image.png[0]), gen.render_word("Edge 1", seed=2))

    with pytest.raises(grpc.RpcError) as bad:
        stub.RenderWord(pb.RenderWordRequest(model=model.name, text="~"), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert "torch" not in sys.modules, "the server must not import torch"


def test_http_png_and_kserve_rest_without_torch(served, gen, package):
    """The HTTP surface (Starlette + uvicorn, runtime dependencies) in the edge install."""
    import json
    import urllib.request

    from ganport.runtime.images import decode_png

    server, _ = served
    base = server.http_url
    with urllib.request.urlopen(f"{base}/v1/models/{package.name}/render.png?text=Edge&seed=2", timeout=10) as r:
        assert r.headers["content-type"] == "image/png"
        np.testing.assert_array_equal(decode_png(r.read()), gen.render_word("Edge", seed=2))
    z = gen.sample_latents(2, seed=1)
    body = json.dumps({"inputs": [
        {"name": "z", "datatype": "FP32", "shape": [2, int(z.shape[1])], "data": z.ravel().tolist()},
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [10, 11]}]}).encode()
    request = urllib.request.Request(f"{base}/v2/models/{package.name}/infer", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        output = json.loads(r.read())["outputs"][0]
    np.testing.assert_allclose(np.asarray(output["data"], np.float32).reshape(output["shape"]),
                               gen.run(z, np.array([10, 11])), atol=1e-6)
    with urllib.request.urlopen(f"{base}/", timeout=10) as r:
        assert b"<title>ganport</title>" in r.read()
    assert "torch" not in sys.modules, "the HTTP surface must not import torch"
