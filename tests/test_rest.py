"""The HTTP surface, end to end: a real server with HTTP on free loopback ports.

KServe v2 REST through an unmodified ``tritonclient.http`` (metadata, config, readiness, infer
with binary and JSON tensors, async infer, statistics, repository) with outputs equal to the
in-process Generator; the PNG endpoints equal ``Generator.generate/render_word/decode``; ``curl``
fetching a word; every kind of bad input on every endpoint with its status code and a JSON error;
bodies over the limit refused before they are read; token, TLS, overload, deadlines; ``ganport
serve --http-port``; and the web page in a real headless browser (Debian's chromium).
"""

from __future__ import annotations

import gc
import gzip
import http.client
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import runtime_helpers
import server_helpers
from ganport.runtime import Generator
from ganport.runtime.images import decode_png, make_grid
from ganport.runtime.server import create_server, inference

TIMEOUT = 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    runtime_helpers.build_serving_models(root, ("glyphs", "rgb"))
    server_helpers.build_failing_package(root / "broken")
    return root


@pytest.fixture(scope="module")
def gens(models_dir):
    """The same packages loaded in-process: the reference for every image the server returns."""
    return {name: Generator.load(models_dir / name) for name in ("glyphs", "rgb")}


@pytest.fixture(scope="module")
def server(models_dir):
    srv, _ = create_server("127.0.0.1:0", models_dir, http_port=0, max_receive_mb=1, max_send_mb=0.25,
                           max_count=256, max_text_length=32)
    srv.start()
    yield srv
    srv.stop(grace=1)


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        assert self.headers.get("content-type", "").startswith("application/json"), self.body[:200]
        message = self.json()["error"]
        assert "Traceback" not in message and 'File "' not in message
        return message


def call(base: str, method: str, path: str, body=None, headers=None, context=None) -> Reply:
    """One HTTP request; any status comes back as a :class:`Reply` (no exception)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def get(server, path, **kw) -> Reply:
    return call(server.http_url, "GET", path, **kw)


def post(server, path, body=None, **kw) -> Reply:
    return call(server.http_url, "POST", path, body=body, **kw)


def _still_serving(server, gens) -> None:
    reply = get(server, "/v1/models/glyphs/render.png?text=ok&seed=1")
    assert reply.status == 200
    np.testing.assert_array_equal(decode_png(reply.body), gens["glyphs"].render_word("ok", seed=1))


def _infer_json(z: np.ndarray, labels=None, **parameters) -> dict:
    inputs = [{"name": "z", "datatype": "FP32", "shape": list(z.shape), "data": z.ravel().tolist()}]
    if labels is not None:
        inputs.append({"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": list(map(int, labels))})
    return {"inputs": inputs, **({"parameters": parameters} if parameters else {})}


# ------------------------------------------------------------------------ KServe v2 REST, plain

def test_health_metadata_config_and_statistics(server, gens):
    assert get(server, "/v2/health/live").json() == {"live": True}
    assert get(server, "/v2/health/ready").json() == {"ready": True}
    meta = get(server, "/v2").json()
    assert meta["name"] == "ganport" and "binary_tensor_data" in meta["extensions"]
    for path in ("/v2/models/glyphs", "/v2/models/glyphs/versions/1"):
        meta = get(server, path).json()
        assert meta == inference.model_metadata(server.models["glyphs"])  # the shared core, as gRPC
        assert (meta["name"], meta["versions"], meta["platform"]) == ("glyphs", ["1"], "onnxruntime_onnx")
        assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("z", "FP32"), ("label", "INT64")]
        assert meta["inputs"][0]["shape"] == [-1, 8] and meta["inputs"][1]["shape"][0] == -1
        assert meta["outputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 12, 12]}]
        assert get(server, path + "/ready").json() == {"name": "glyphs", "ready": True}
    config = get(server, "/v2/models/glyphs/config").json()
    assert config == inference.model_config(server.models["glyphs"])
    assert config["max_batch_size"] == 64 and config["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("z", "TYPE_FP32", [8]), ("label", "TYPE_INT64", [1])]  # the label as the Triton export writes it
    assert config["input"][1]["reshape"] == {"shape": []}
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [("image", "TYPE_FP32", [1, 12, 12])]
    assert "dynamic_batching" in config
    assert "label" not in {t["name"] for t in get(server, "/v2/models/rgb/config").json()["input"]}
    stats = get(server, "/v2/models/stats").json()["model_stats"]
    assert [s["name"] for s in stats] == ["broken", "glyphs", "rgb"]
    assert get(server, "/v2/models/glyphs/versions/1/stats").json()["model_stats"][0]["name"] == "glyphs"
    index = post(server, "/v2/repository/index", {}).json()
    assert index == [{"name": n, "version": "1", "state": "READY", "reason": ""} for n in ("broken", "glyphs", "rgb")]
    listed = get(server, "/v1/models").json()
    assert [m["name"] for m in listed] == ["broken", "glyphs", "rgb"]
    glyphs = get(server, "/v1/models/glyphs").json()
    assert glyphs["class_names"][10] == "A" and glyphs["image_shape"] == [1, 12, 12] and glyphs["conditional"]


def test_infer_json_and_binary_by_hand(server, gens):
    """The wire format a client in any language writes from the README."""
    gen = gens["glyphs"]
    z, labels = gen.sample_latents(3, seed=4), np.array([10, 11, 12])
    expected = gen.run(z, labels)
    reply = post(server, "/v2/models/glyphs/infer", dict(_infer_json(z, labels), id="r1"))
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["id"] == "r1" and body["model_name"] == "glyphs" and body["model_version"] == "1"
    (output,) = body["outputs"]
    assert output["name"] == "image" and output["datatype"] == "FP32" and output["shape"] == [3, 1, 12, 12]
    np.testing.assert_allclose(np.asarray(output["data"], np.float32).reshape(3, 1, 12, 12), expected, atol=1e-6)
    # A big body (parsed in a worker thread) gives the same answer.
    padded = json.dumps(_infer_json(z, labels)).encode() + b" " * 400_000
    np.testing.assert_allclose(np.asarray(post(server, "/v2/models/glyphs/infer", padded).json()["outputs"][0]["data"],
                                          np.float32).reshape(3, 1, 12, 12), expected, atol=1e-6)
    # Nested data and a [N, 1] label are accepted too.
    nested = _infer_json(z, labels)
    nested["inputs"][0]["data"] = z.tolist()
    nested["inputs"][1].update(shape=[3, 1], data=[[10], [11], [12]])
    np.testing.assert_allclose(np.asarray(post(server, "/v2/models/glyphs/infer", nested).json()["outputs"][0]["data"],
                                          np.float32).reshape(3, 1, 12, 12), expected, atol=1e-6)
    # Binary extension both ways: JSON header, then the raw little-endian tensors.
    head = json.dumps({"inputs": [
        {"name": "z", "datatype": "FP32", "shape": [3, 8], "parameters": {"binary_data_size": z.nbytes}},
        {"name": "label", "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 24}}],
        "outputs": [{"name": "image", "parameters": {"binary_data": True}}]}).encode()
    reply = post(server, "/v2/models/glyphs/infer", head + z.tobytes() + labels.astype("<i8").tobytes(),
                 headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
    assert reply.status == 200
    length = int(reply.headers["Inference-Header-Content-Length"])
    header = json.loads(reply.body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 3 * 144 * 4}
    np.testing.assert_allclose(np.frombuffer(reply.body[length:], "<f4").reshape(3, 1, 12, 12), expected, atol=1e-6)


def test_tritonclient_http_unchanged(server, gens):
    """A tritonclient.http script written for Triton, pointed at ganport's HTTP port."""
    _tritonclient_script(server, gens)
    # tritonclient's __del__ joins a gevent pool, which fails in any thread but the client's own:
    # collect the client here rather than wherever the garbage collector happens to run next.
    gc.collect()
    counted = server.metrics.count("ganport_requests_total", model="glyphs", method="ModelInfer", code="OK")
    assert counted >= 8


def _tritonclient_script(server, gens):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    gen = gens["glyphs"]
    client = httpclient.InferenceServerClient(url=server.http_url.split("://", 1)[1])
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("glyphs") and not client.is_model_ready("no-such-model")
        assert client.get_server_metadata()["name"] == "ganport"
        metadata = client.get_model_metadata("glyphs", model_version="1")
        assert [i["name"] for i in metadata["inputs"]] == ["z", "label"]
        config = client.get_model_config("glyphs")
        assert config["input"][1]["dims"] == [1] and config["max_batch_size"] == 64
        assert [m["name"] for m in client.get_model_repository_index()] == ["broken", "glyphs", "rgb"]

        z = gen.sample_latents(5, seed=7)
        labels = np.arange(5, dtype=np.int64).reshape(5, 1)  # [N, 1], as Triton's config declares
        expected = gen.run(z, labels[:, 0])
        for binary_in in (True, False):
            for binary_out in (True, False):
                inputs = [httpclient.InferInput("z", list(z.shape), "FP32"),
                          httpclient.InferInput("label", list(labels.shape), "INT64")]
                inputs[0].set_data_from_numpy(z, binary_data=binary_in)
                inputs[1].set_data_from_numpy(labels, binary_data=binary_in)
                outputs = [httpclient.InferRequestedOutput("image", binary_data=binary_out)]
                result = client.infer("glyphs", inputs, outputs=outputs, request_id=f"id-{binary_in}-{binary_out}")
                assert result.get_response()["id"] == f"id-{binary_in}-{binary_out}"
                np.testing.assert_allclose(result.as_numpy("image"), expected, atol=1e-6)
        # No outputs named: tritonclient asks for binary outputs.
        np.testing.assert_allclose(client.infer("glyphs", inputs).as_numpy("image"), expected, atol=1e-6)
        for algorithm in ("gzip", "deflate"):  # compressed request bodies
            result = client.infer("glyphs", inputs, request_compression_algorithm=algorithm,
                                  response_compression_algorithm=algorithm)
            np.testing.assert_allclose(result.as_numpy("image"), expected, atol=1e-6)
        pending = [client.async_infer("glyphs", inputs) for _ in range(3)]
        for request in pending:
            np.testing.assert_allclose(request.get_result(timeout=TIMEOUT).as_numpy("image"), expected, atol=1e-6)

        unconditional = [httpclient.InferInput("z", [2, 6], "FP32")]
        unconditional[0].set_data_from_numpy(gens["rgb"].sample_latents(2, seed=1))
        np.testing.assert_allclose(client.infer("rgb", unconditional).as_numpy("image"),
                                   gens["rgb"].run(gens["rgb"].sample_latents(2, seed=1)), atol=1e-6)

        stats = client.get_inference_statistics("glyphs")["model_stats"][0]
        assert stats["name"] == "glyphs" and stats["inference_count"] >= 40 and stats["execution_count"] >= 1
        assert stats["inference_stats"]["success"]["count"] >= 8
        with pytest.raises(InferenceServerException) as missing:
            client.infer("no-such-model", inputs)
        assert "not served here" in missing.value.message()
        if server.rest.repository is None:  # no model lifecycle on this server: 501, named
            with pytest.raises(InferenceServerException) as load:
                client.load_model("glyphs")
            assert "cannot load models" in load.value.message()
        else:  # a reload through the server's repository; the model stays ready
            client.load_model("glyphs")
            assert client.is_model_ready("glyphs")
    finally:
        client.close()


# ------------------------------------------------------------------------------ PNG endpoints

def test_png_endpoints_equal_in_process(server, gens):
    gen = gens["glyphs"]
    reply = get(server, "/v1/models/glyphs/generate.png?n=16&seed=3&label=A")
    assert reply.status == 200 and reply.headers["content-type"] == "image/png"
    assert reply.headers["X-Ganport-Seed"] == "3" and reply.headers["X-Ganport-Labels"] == ",".join(["10"] * 16)
    np.testing.assert_array_equal(decode_png(reply.body), make_grid(gen.generate(16, labels="A", seed=3)))
    reply = get(server, "/v1/models/glyphs/generate.png?n=6&seed=2&nrow=3&" +
                urllib.parse.urlencode([("label", v) for v in "abc123"]))
    np.testing.assert_array_equal(decode_png(reply.body), make_grid(gen.generate(6, labels=list("abc123"), seed=2),
                                                                    nrow=3))
    # Unset labels cycle through the classes (0, 1, 2, ...); n=1 is the image itself.
    reply = get(server, "/v1/models/glyphs/generate.png?n=1&seed=5")
    np.testing.assert_array_equal(decode_png(reply.body), gen.generate(1, seed=5)[0])
    reply = get(server, "/v1/models/rgb/generate.png?n=4&seed=9")
    np.testing.assert_array_equal(decode_png(reply.body), make_grid(gens["rgb"].generate(4, seed=9)))
    assert int(get(server, "/v1/models/rgb/generate.png?n=1").headers["X-Ganport-Seed"]) >= 0

    reply = get(server, "/v1/models/glyphs/render.png?text=Hello&seed=1")
    np.testing.assert_array_equal(decode_png(reply.body), gen.render_word("Hello", seed=1))
    assert reply.headers["X-Ganport-Seed"] == "1"
    reply = get(server, "/v1/models/glyphs/render.png?" + urllib.parse.urlencode(
        {"text": "Hi you", "seed": 4, "height": 30, "spacing": -1, "noise": "shared"}))
    np.testing.assert_array_equal(decode_png(reply.body),
                                  gen.render_word("Hi you", seed=4, height=30, spacing=-1, noise="shared"))

    z = gen.sample_latents(4, seed=2)
    reply = post(server, "/v1/models/glyphs/decode.png", {"latents": z.tolist(), "labels": "7"})
    assert reply.status == 200 and reply.headers["X-Ganport-Labels"] == "7,7,7,7"
    np.testing.assert_array_equal(decode_png(reply.body), make_grid(gen.decode(z, labels="7")))
    reply = post(server, "/v1/models/glyphs/decode.png", {"latents": z.tolist(), "labels": [1, 2, 3, 4], "nrow": 2})
    np.testing.assert_array_equal(decode_png(reply.body), make_grid(gen.decode(z, labels=[1, 2, 3, 4]), nrow=2))


def test_curl_fetches_a_rendered_word(server, gens, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl command on this machine")
    out = tmp_path / "word.png"
    done = subprocess.run([curl, "-sS", "--fail-with-body", "-o", str(out), "-w", "%{http_code} %{content_type}",
                           f"{server.http_url}/v1/models/glyphs/render.png?text=Hello&seed=1"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and done.stdout == "200 image/png", done.stderr
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    expected = gens["glyphs"].render_word("Hello", seed=1)
    assert decode_png(data).shape == expected.shape and expected.shape[1] > expected.shape[0] * 2
    np.testing.assert_array_equal(decode_png(data), expected)


# ------------------------------------------------------------------------------- bad requests

_Z2 = [[0.0] * 8, [0.0] * 8]
_LABEL2 = {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 2]}


def _z(**changes):
    return {"name": "z", "datatype": "FP32", "shape": [2, 8], "data": sum(_Z2, []), **changes}


INFER = "/v2/models/glyphs/infer"
_BINARY_HEAD = json.dumps({"inputs": [{"name": "z", "datatype": "FP32", "shape": [2, 8],
                                       "parameters": {"binary_data_size": 60}}]}).encode()
BAD = [
    # (method, path, body, headers, status, text in the error)
    ("POST", INFER, b"{not json", None, 400, "not valid JSON"),
    ("POST", INFER, b"[1, 2]", None, 400, "must be a JSON object"),
    ("POST", INFER, {"inputs": []}, None, 400, "non-empty list"),
    ("POST", INFER, {"inputs": [_z()]}, None, 400, "missing input(s) label"),
    ("POST", INFER, {"inputs": [_z(), _LABEL2, _LABEL2]}, None, 400, "given twice"),
    ("POST", INFER, {"inputs": [_z(datatype="FP64"), _LABEL2]}, None, 400, "must be FP32"),
    ("POST", INFER, {"inputs": [_z(datatype=None), _LABEL2]}, None, 400, "needs a 'datatype'"),
    ("POST", INFER, {"inputs": [_z(shape=[16]), _LABEL2]}, None, 400, "[N, latent_dim]"),
    ("POST", INFER, {"inputs": [_z(shape=[2, "x"]), _LABEL2]}, None, 400, "list of integers"),
    ("POST", INFER, {"inputs": [_z(shape=[2, 4]), _LABEL2]}, None, 400, "needs 8"),
    ("POST", INFER, {"inputs": [_z(shape=[4, 4], data=[0.0] * 16), _LABEL2]}, None, 400, "latent"),
    ("POST", INFER, {"inputs": [_z(shape=[2 ** 40, 8]), _LABEL2]}, None, 400, "invalid shape"),
    ("POST", INFER, {"inputs": [_z(shape=[300, 8], data=[0.0] * 2400), _LABEL2]}, None, 400, "must be in 1..256, got 300"),
    ("POST", INFER, {"inputs": [_z(data=["a"] * 16), _LABEL2]}, None, 400, "FP32 numbers"),
    ("POST", INFER, {"inputs": [_z(data=[float("nan")] * 16), _LABEL2]}, None, 400, "finite"),
    ("POST", INFER, {"inputs": [_z(data=None), _LABEL2]}, None, 400, "JSON list"),
    ("POST", INFER, {"inputs": [_z(), dict(_LABEL2, data=[1, 99])]}, None, 400, "99"),
    ("POST", INFER, {"inputs": [_z(), dict(_LABEL2, shape=[3], data=[1, 2, 3])]}, None, 400, "one per row"),
    ("POST", INFER, {"inputs": [_z(), dict(_LABEL2, datatype="FP32")]}, None, 400, "INT64 or INT32"),
    ("POST", INFER, {"inputs": [_z(), dict(_LABEL2, data=[1.5, 2])]}, None, 400, "JSON integers"),
    ("POST", INFER, {"inputs": [_z(), dict(_LABEL2, datatype="INT32", data=[True, 2])]}, None, 400, "JSON integers"),
    ("POST", INFER, {"inputs": [_z(data=[1e39] * 16), _LABEL2]}, None, 400, "finite"),
    ("POST", INFER, {"inputs": [_z(), _LABEL2], "outputs": [{"name": "logits"}]}, None, 400, "no output 'logits'"),
    ("POST", INFER, {"inputs": [_z(), _LABEL2], "outputs": [{"name": "image", "parameters": {"classification": 2}}]},
     None, 400, "classification"),
    ("POST", INFER, {"inputs": [_z(), _LABEL2], "parameters": {"binary_data_output": "yes"}}, None, 400,
     "true or false"),
    ("POST", INFER, {"inputs": [_z(), _LABEL2], "parameters": {"timeout": -1}}, None, 400, "microseconds"),
    ("POST", INFER, {"inputs": [_z(parameters={"binary_data_size": 64}), _LABEL2]}, None, 400, "runs past"),
    ("POST", INFER, b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, 400, "but the body has"),
    ("POST", INFER, b'{"inputs": []}', {"Inference-Header-Content-Length": "ten"}, 400, "must be an integer"),
    ("POST", INFER, json.dumps({"inputs": [_z(), _LABEL2]}).encode() + b"junk",
     {"Inference-Header-Content-Length": str(len(json.dumps({"inputs": [_z(), _LABEL2]})))}, 400, "add up to 0"),
    ("POST", INFER, _BINARY_HEAD + bytes(60), {"Inference-Header-Content-Length": str(len(_BINARY_HEAD))}, 400,
     "needs 64"),
    ("POST", INFER, b"not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip data"),
    ("POST", INFER, gzip.compress(b"{}")[:-6], {"Content-Encoding": "gzip"}, 400, "truncated"),
    ("POST", INFER, b"{}", {"Content-Encoding": "br"}, 400, "unsupported Content-Encoding"),
    ("POST", INFER, gzip.compress(bytes(2 * 1024 * 1024)), {"Content-Encoding": "gzip"}, 413, "decompressed"),
    ("POST", "/v2/models/nope/infer", {"inputs": [_z()]}, None, 404, "not served here"),
    ("POST", "/v2/models/glyphs/versions/2/infer", {"inputs": [_z()]}, None, 404, "no version '2'"),
    ("GET", INFER, None, None, 405, "not allowed"),
    ("GET", "/v2/models/nope", None, None, 404, "not served here"),
    ("GET", "/v2/models/nope/config", None, None, 404, "not served here"),
    ("GET", "/v2/models/nope/stats", None, None, 404, "not served here"),
    ("GET", "/v2/models/nope/ready", None, None, 404, "not served here"),
    ("GET", "/v2/models/glyphs/versions/7/config", None, None, 404, "no version '7'"),
    ("GET", "/no/such/path", None, None, 404, "no endpoint"),
    ("POST", "/v2/repository/index", b"{", None, 400, "not valid JSON"),
    ("POST", "/v2/repository/index", {"ready": "yes"}, None, 400, "true or false"),
    ("POST", "/v2/repository/models/glyphs/load", {"parameters": {"config": "{}"}}, None, 400, "not supported"),
    ("POST", "/v2/repository/models/glyphs/unload", {"parameters": {"unload_dependents": True}}, None, 400,
     "not supported"),
    ("POST", "/v2/repository/models/glyphs/load", b"{", None, 400, "not valid JSON"),
    ("GET", "/v1/models/nope", None, None, 404, "not served here"),
    ("GET", "/v1/models/nope/generate.png", None, None, 404, "not served here"),
    ("GET", "/v1/models/glyphs/generate.png?n=0", None, None, 400, "'n' must be in 1..256"),
    ("GET", "/v1/models/glyphs/generate.png?n=257", None, None, 400, "'n' must be in 1..256"),
    ("GET", "/v1/models/glyphs/generate.png?n=ten", None, None, 400, "must be an integer"),
    ("GET", "/v1/models/glyphs/generate.png?seed=-1", None, None, 400, "'seed' must be in 0.."),
    ("GET", "/v1/models/glyphs/generate.png?seed=99999999999999999999", None, None, 400, "'seed' must be in 0.."),
    ("GET", "/v1/models/glyphs/generate.png?label=Nope", None, None, 400, "Nope"),
    ("GET", "/v1/models/glyphs/generate.png?n=2&label=A&label=B&label=C", None, None, 400, "labels"),
    ("GET", "/v1/models/glyphs/generate.png?n=4&nrow=5", None, None, 400, "'nrow' must be in 1..4"),
    ("GET", "/v1/models/rgb/generate.png?n=4&label=1", None, None, 400, "unconditional"),
    ("GET", "/v1/models/glyphs/render.png", None, None, 400, "'text' is required"),
    ("GET", "/v1/models/glyphs/render.png?text=" + "a" * 33, None, None, 400, "limit is 32"),
    ("GET", "/v1/models/glyphs/render.png?text=Hi&height=0", None, None, 400, "height must be in 1..1024"),
    ("GET", "/v1/models/glyphs/render.png?text=Hi&height=99999999999", None, None, 400, "height must be in 1..1024"),
    ("GET", "/v1/models/glyphs/render.png?text=Hi&spacing=5000", None, None, 400, "spacing must be in"),
    ("GET", "/v1/models/glyphs/render.png?text=Hi&noise=loud", None, None, 400, "'noise' must be one of"),
    ("GET", "/v1/models/glyphs/render.png?text=%E2%98%83", None, None, 400, "\u2603"),
    ("GET", "/v1/models/rgb/render.png?text=Hi", None, None, 400, "unconditional"),
    ("GET", "/v1/models/nope/render.png?text=Hi", None, None, 404, "not served here"),
    ("POST", "/v1/models/glyphs/decode.png", b"\xff\xfe", None, 400, "not valid JSON"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": [[0.0] * 7]}, None, 400, "latent"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": [[0.0] * 8, [0.0] * 7]}, None, 400, "rectangular"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": [0.0] * 8}, None, 400, "list of latent vectors"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": [["x"] * 8]}, None, 400, "rectangular"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": _Z2, "labels": [1, "A"]}, None, 400, "class indices (integers)"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": _Z2, "labels": [1, 2, 3]}, None, 400, "labels"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": _Z2, "nrow": 0}, None, 400, "'nrow'"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": _Z2, "seed": 1}, None, 400, "unknown field"),
    ("POST", "/v1/models/glyphs/decode.png", {"latents": [[0.0] * 8] * 300}, None, 400, "256"),
]


@pytest.mark.parametrize("method, path, body, headers, status, text", BAD,
                         ids=[f"{i}-{b[0]} {b[1][:60]}" for i, b in enumerate(BAD)])
def test_bad_requests_get_json_errors(server, gens, method, path, body, headers, status, text):
    reply = call(server.http_url, method, path, body=body, headers=headers)
    assert reply.status == status, reply.body[:300]
    assert text in reply.error


def test_every_bad_request_leaves_the_server_serving(server, gens):
    _still_serving(server, gens)
    assert get(server, "/v2/health/ready").status == 200


def test_model_failure_is_500_without_traceback(server, gens, caplog):
    z = np.zeros((1, 8), np.float32)  # the "broken" graph fails unless the batch has exactly 3 rows
    with caplog.at_level("ERROR", logger="ganport"):
        reply = post(server, "/v2/models/broken/infer", _infer_json(z))
    assert reply.status == 500 and reply.error == "internal error, see server log"
    ok = post(server, "/v2/models/broken/infer", _infer_json(np.zeros((3, 8), np.float32)))
    assert ok.status == 200 and ok.json()["outputs"][0]["shape"] == [3, 1, 2, 4]
    _still_serving(server, gens)


def _raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while True:
            head, _, rest = data.partition(b"\r\n\r\n")
            if _ and len(rest) >= int(re.search(rb"content-length: (\d+)", head, re.I).group(1)):
                return data
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


@pytest.mark.parametrize("path", ["/v2/models/glyphs/infer", "/v1/models/glyphs/decode.png",
                                  "/v2/repository/index"])
def test_oversized_body_is_refused_before_it_is_read(server, gens, path):
    # A Content-Length over the limit (1 MiB here) and no body sent: the answer comes at once.
    started = time.monotonic()
    for length in (1024 * 1024 + 1, 100_000_000):
        answer = _raw_request(server.http_port, f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                                                f"Content-Length: {length}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert b"exceeds the server's limit" in answer
    assert time.monotonic() - started < 2
    # Chunked (no length): refused once the limit is passed.
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT)
    try:
        connection.request("POST", "/v1/models/glyphs/decode.png", body=iter([b"x" * 65536] * 40),
                           encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413 and "exceeds" in json.loads(response.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close the connection while the client still sends: also a refusal
    finally:
        connection.close()
    _still_serving(server, gens)


# -------------------------------------------------------------- overload, deadlines, auth, TLS

def test_full_queue_is_429_and_timeout_is_504(models_dir):
    server, _ = create_server("127.0.0.1:0", models_dir / "rgb", http_port=0, max_delay_ms=400, max_queue=2)
    server.start()
    try:
        z = np.zeros((1, 6), np.float32)
        with __import__("concurrent.futures").futures.ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(post, server, "/v2/models/rgb/infer", _infer_json(z)) for _ in range(2)]
            time.sleep(0.15)  # both are queued, waiting for the 400 ms batch window
            reply = post(server, "/v2/models/rgb/infer", _infer_json(z))
            assert reply.status == 429 and "queue" in reply.error
            assert [f.result().status for f in waiting] == [200, 200]
        # Triton's per-request timeout (microseconds): dropped before it runs.
        reply = post(server, "/v2/models/rgb/infer", _infer_json(z, timeout=50_000))
        assert reply.status == 504
    finally:
        server.stop(grace=1)


def test_token_and_tls(models_dir, gens, tmp_path):
    cert, key = server_helpers.make_certificate(tmp_path / "server")
    server, _ = create_server("127.0.0.1:0", models_dir / "glyphs", http_port=0, token="s3cret",
                              tls=(str(cert), str(key)))
    server.start()
    try:
        assert server.http_url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        path = "/v1/models/glyphs/render.png?text=Hi&seed=1"
        missing = call(server.http_url, "GET", path, context=context)
        assert missing.status == 401 and "missing token" in missing.error
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = call(server.http_url, "GET", path, headers={"Authorization": "Bearer nope"}, context=context)
        assert wrong.status == 401 and wrong.error == "invalid token"
        # The token is checked before the body is looked at.
        assert call(server.http_url, "POST", INFER, body=b"{bad", context=context).status == 401
        assert call(server.http_url, "GET", "/v2/models/nope", context=context).status == 401
        ok = call(server.http_url, "GET", path, headers={"Authorization": "Bearer s3cret"}, context=context)
        assert ok.status == 200
        np.testing.assert_array_equal(decode_png(ok.body), gens["glyphs"].render_word("Hi", seed=1))
        # Health and the page stay open (probes, browsers); the page asks for the token.
        assert call(server.http_url, "GET", "/v2/health/ready", context=context).status == 200
        assert b"token" in call(server.http_url, "GET", "/", context=context).body
        assert server.metrics.count("ganport_auth_failures_total") == 4
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP cannot talk to the TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2/health/ready", timeout=5).read()
    finally:
        server.stop(grace=1)


def test_http_port_in_use_or_bad_tls_is_an_error_and_pem_in_memory_works(models_dir, server, tmp_path):
    from ganport.errors import GanportError

    with pytest.raises(GanportError, match="cannot listen for HTTP"):
        create_server("127.0.0.1:0", models_dir / "rgb", http_port=server.http_port)
    cert, _ = server_helpers.make_certificate(tmp_path / "a", name="a")
    _, other_key = server_helpers.make_certificate(tmp_path / "b", name="b")
    with socket.socket() as probe:  # a port free now, to check it is released after the failure
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.raises(GanportError):  # a key that does not match the certificate
        create_server("127.0.0.1:0", models_dir / "rgb", http_port=free, tls=(str(cert), str(other_key)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", free))
    # PEM given in memory works too (written to a private temporary file for uvicorn, then removed).
    cert, key = server_helpers.make_certificate(tmp_path / "c", name="c")
    srv, _ = create_server("127.0.0.1:0", models_dir / "rgb", http_port=0, tls=(cert.read_bytes(), key.read_bytes()))
    srv.start()
    try:
        reply = call(srv.http_url, "GET", "/v2/health/live", context=ssl.create_default_context(cafile=str(cert)))
        assert reply.json() == {"live": True}
    finally:
        srv.stop(grace=1)


def test_serve_command_with_http(models_dir, gens):
    proc = server_helpers.ServeProcess(models_dir / "glyphs", "--http-port", "0", "--grace", "5")
    try:
        http_lines = [line for line in proc.lines if line.startswith("http on http://127.0.0.1:")]
        assert len(http_lines) == 1 and proc.lines.index(http_lines[0]) < len(proc.lines) - 1
        base = http_lines[0].split()[-1]
        assert call(base, "GET", "/v2/health/ready").json() == {"ready": True}
        reply = call(base, "GET", "/v1/models/glyphs/render.png?text=Hey&seed=2")
        np.testing.assert_array_equal(decode_png(reply.body), gens["glyphs"].render_word("Hey", seed=2))
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert any("server stopped" in line for line in proc.lines)
    finally:
        proc.kill()


def test_graceful_stop_finishes_http_in_flight(models_dir):
    server, _ = create_server("127.0.0.1:0", models_dir / "rgb", http_port=0, max_delay_ms=300)
    server.start()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "reply", post(server, "/v2/models/rgb/infer", _infer_json(np.zeros((2, 6), np.float32)))))
    worker.start()
    time.sleep(0.1)
    server.stop(grace=5)
    worker.join(10)
    assert result["reply"].status == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()


# ------------------------------------------------------------------------------- web page, browser

@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, installed by scripts/ensure_chromium.sh when missing."""
    script = server_helpers.ROOT / "scripts" / "ensure_chromium.sh"
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=600)
    path = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
    if not path:
        reason = (done.stderr.strip().splitlines() or ["scripts/ensure_chromium.sh failed"])[-1]
        pytest.skip(f"no chromium: {reason}")
    return path


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=90)


def test_web_page_renders_a_word_in_chromium(server, gens, chromium, tmp_path):
    page = get(server, "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"/render.png" in page.body and b"v1/models" in page.body
    url = f"{server.http_url}/?model=glyphs&text=Hi&seed=1&height=48"
    expected = gens["glyphs"].render_word("Hi", seed=1, height=48)

    dom = _chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-state="loaded"' in dom.stdout, dom.stdout[-3000:]
    assert f'data-size="{expected.shape[1]}x{expected.shape[0]}"' in dom.stdout
    assert '<option value="glyphs">glyphs</option>' in dom.stdout and "<option" in dom.stdout

    grid = _chromium(chromium, tmp_path / "profile-grid", "--dump-dom",
                     f"{server.http_url}/?model=glyphs&label=A&n=4&seed=3")
    expected_grid = make_grid(gens["glyphs"].generate(4, labels="A", seed=3))
    assert f'data-size="{expected_grid.shape[1]}x{expected_grid.shape[0]}"' in grid.stdout, grid.stdout[-3000:]

    shot = tmp_path / "page.png"
    done = _chromium(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=900,500", url)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.shape == (500, 900)
    # Not blank: the form and the picture put many distinct grey levels on the page, and the
    # picture area (below the form) is not one flat colour.
    assert len(np.unique(pixels)) > 20 and pixels[150:, :].std() > 10
    # The server saw the page's request for the word.
    assert server.metrics.count("ganport_requests_total", model="glyphs", method="RenderWord", code="OK") >= 2


# -------------------------------------------------------------------- a client in another language

def test_javascript_client_written_from_the_readme(server, gens):
    """tests/clients/kserve_rest.mjs: a KServe v2 REST client in plain Node.js from the README."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node command on this machine")
    script = Path(__file__).parent / "clients" / "kserve_rest.mjs"
    done = subprocess.run([node, str(script), server.http_url, "glyphs"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    z = (0.01 * np.arange(3 * 8, dtype=np.float64)).astype(np.float32).reshape(3, 8)
    expected = gens["glyphs"].run(z, np.arange(3))
    assert got["ready"] is True and got["platform"] == "onnxruntime_onnx" and got["latent"] == 8
    assert got["json"]["status"] == 200 and got["json"]["id"] == "node-1" and got["json"]["shape"] == [3, 1, 12, 12]
    np.testing.assert_allclose(np.asarray(got["json"]["data"], np.float32).reshape(3, 1, 12, 12), expected, atol=1e-6)
    assert got["binary"]["status"] == 200 and got["binary"]["size"] == expected.nbytes
    np.testing.assert_allclose(np.asarray(got["binary"]["data"], np.float32).reshape(3, 1, 12, 12), expected,
                               atol=1e-6)
    assert got["missing"]["status"] == 404 and "not served here" in got["missing"]["error"]


def test_client_that_goes_away_is_dropped_before_running(models_dir):
    """As for a cancelled gRPC call: the queued request is dropped, the model never runs it."""
    server, _ = create_server("127.0.0.1:0", models_dir / "rgb", http_port=0, max_delay_ms=400)
    server.start()
    try:
        body = json.dumps(_infer_json(np.zeros((1, 6), np.float32))).encode()
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            sock.sendall(b"POST /v2/models/rgb/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.1)  # queued, waiting for the 400 ms batch window
        time.sleep(0.6)
        stats = server.metrics.model_stats("rgb")
        assert stats["dropped"] == 1 and stats["batches"] == 0
        assert server.metrics.count("ganport_requests_total", method="ModelInfer", code="CANCELLED") == 1
        assert post(server, "/v2/models/rgb/infer", body).status == 200  # and it keeps serving
    finally:
        server.stop(grace=1)


def test_load_and_unload_without_a_repository_are_501(models_dir):
    server, _ = create_server("127.0.0.1:0", models_dir / "rgb", http_port=0)
    server.rest.repository = None  # a server without a model lifecycle
    server.start()
    try:
        assert "model_repository" not in get(server, "/v2").json()["extensions"]
        assert [m["name"] for m in post(server, "/v2/repository/index").json()] == ["rgb"]
        for action in ("load", "unload"):
            reply = post(server, f"/v2/repository/models/rgb/{action}", {})
            assert reply.status == 501 and f"cannot {action} models" in reply.error
        assert get(server, "/v2/models/rgb/ready").status == 200
    finally:
        server.stop(grace=1)


def test_repository_routes_use_the_servers_repository(models_dir):
    """With a model repository (the KServe lifecycle's object), load/unload/index go through it."""
    class FakeRepository:
        def __init__(self):
            self.calls = []

        def index(self, ready_only=False):
            self.calls.append(("index", ready_only))
            return [{"name": "rgb", "version": "1", "state": "READY", "reason": ""},
                    {"name": "other", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}]

        async def load(self, name):
            self.calls.append(("load", name))
            if name == "missing":
                from ganport.errors import ModelNotFoundError
                raise ModelNotFoundError("no model package 'missing' in the served models directory")

        async def unload(self, name):
            self.calls.append(("unload", name))

    server, _ = create_server("127.0.0.1:0", models_dir / "rgb", http_port=0)
    server.rest.repository = repository = FakeRepository()
    server.start()
    try:
        assert "model_repository" in get(server, "/v2").json()["extensions"]
        assert [m["name"] for m in post(server, "/v2/repository/index", {"ready": True}).json()] == ["rgb", "other"]
        assert post(server, "/v2/repository/models/other/load").json() == {}
        assert post(server, "/v2/repository/models/rgb/unload", {}).json() == {}
        missing = post(server, "/v2/repository/models/missing/load")
        assert missing.status == 404 and "no model package" in missing.error
        refused = post(server, "/v2/repository/models/rgb/load", {"parameters": {"config": "{}"}})
        assert refused.status == 400 and "not supported" in refused.error
        assert repository.calls == [("index", True), ("load", "other"), ("unload", "rgb"), ("load", "missing")]
    finally:
        server.stop(grace=1)


def test_png_endpoints_share_the_grpc_response_cache(models_dir, gens):
    """The PNG endpoints call the gRPC servicer, so seeded requests use the same response cache."""
    import grpc

    from ganport.v1 import generator_pb2 as pb
    from ganport.v1 import generator_pb2_grpc as pb_grpc

    server, port = create_server("127.0.0.1:0", models_dir / "glyphs", http_port=0, cache_mb=4)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            pb_grpc.GeneratorServiceStub(channel).RenderWord(
                pb.RenderWordRequest(model="glyphs", text="Hey", seed=3), timeout=TIMEOUT)
        reply = get(server, "/v1/models/glyphs/render.png?text=Hey&seed=3")
        np.testing.assert_array_equal(decode_png(reply.body), gens["glyphs"].render_word("Hey", seed=3))
        assert server.metrics.count("ganport_cache_requests_total", model="glyphs", result="hit") == 1
        assert server.metrics.count("ganport_cache_requests_total", model="glyphs", result="miss") == 1
    finally:
        server.stop(grace=1)
