"""Model versions: Triton's NAME/1/, NAME/2/ layout, version policies, addressing a version from
every API (ganport.v1, KServe gRPC and REST, the PNG routes, the CLI), and poll/explicit control.

Real servers on free loopback ports and real clients (ours, tritonclient.grpc, tritonclient.http);
each version is a tiny package exported from a differently seeded model, so versions give
different images for the same seed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

import runtime_helpers
from server_helpers import Callers
from ganport.cli import main
from ganport.errors import InvalidInputError
from ganport.runtime import Generator
from ganport.runtime.images import decode_png
from ganport.runtime.server import GanportClient, create_server
from ganport.runtime.server.versions import VersionPolicy, parse_policy, policy_from_config, scan

triton = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

CLASSES = list("0123456789")
TIMEOUT = 20


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    """Three versions of one conditional model, each from its own weights seed."""
    root = tmp_path_factory.mktemp("versions")
    return {v: runtime_helpers.build_package(root / v, kind="cgan", class_names=CLASSES, formats=("onnx",),
                                             seed=int(v) * 10, name="digits")
            for v in ("1", "2", "3")}


@pytest.fixture(scope="module")
def expected(packages) -> dict[str, np.ndarray]:
    """Each version's images for Generate(count 2, seed 7, label 3), in-process."""
    return {v: Generator.load(path).generate(2, labels=3, seed=7) for v, path in packages.items()}


def _repository(root: Path, packages: dict[str, Path], versions=("1", "2"), config: str | None = None) -> Path:
    model = root / "digits"
    model.mkdir(parents=True)
    for v in versions:
        shutil.copytree(packages[v], model / v)
    if config is not None:
        (model / "config.pbtxt").write_text(config)
    return root


def _wait(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _run(package: Path, z: np.ndarray) -> np.ndarray:
    """The eager output of ``package`` for ``z`` with label 3 (what KServe infer returns)."""
    gen = Generator.load(package)
    return gen.run(z, gen.resolve_labels(3, len(z)))


def _http(url: str, method: str = "GET", body: bytes | None = None):
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


# ------------------------------------------------------------------------------ layout, policy

def test_policy_forms_and_selection():
    assert parse_policy("latest:2").select(["1", "3", "2", "10"]) == ["3", "10"]
    assert parse_policy("latest").select(["1", "2"]) == ["2"]
    assert parse_policy("all").select(["2", "1"]) == ["1", "2"]
    assert parse_policy("specific:3,1").select(["1", "2", "3"]) == ["1", "3"]
    assert str(parse_policy("specific:3,1")) == "specific:1,3"
    for bad in ("newest", "latest:0", "specific:", "specific:a", "all:2"):
        with pytest.raises(InvalidInputError, match="valid forms are latest:N.*all.*specific"):
            parse_policy(bad)


def test_triton_config_pbtxt_version_policy(tmp_path):
    config = tmp_path / "config.pbtxt"
    # A full Triton configuration: every field but version_policy is ignored (unknown ones too).
    config.write_text('name: "digits"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
                      'input [ { name: "z" data_type: TYPE_FP32 dims: [ 8 ] } ]\n'
                      'optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "x" } ] } }\n'
                      'version_policy: { specific: { versions: [ 1, 3 ] } }\n')
    assert policy_from_config(config) == VersionPolicy("specific", versions=(1, 3))
    config.write_text("version_policy: { latest: { num_versions: 2 } }")
    assert policy_from_config(config) == VersionPolicy("latest", count=2)
    config.write_text('name: "digits"')
    assert policy_from_config(config) is None
    config.write_text("version_policy: { latest: { num_versions: 2 }")
    with pytest.raises(InvalidInputError, match="config.pbtxt"):
        policy_from_config(config)


def test_layouts_flat_and_versioned_side_by_side(tmp_path, packages):
    root = _repository(tmp_path / "models", packages)
    shutil.copytree(packages["3"], root / "flat")
    (root / "digits" / "7").mkdir()  # a version folder without a package: not a version
    (root / "digits" / "notes").mkdir()
    shutil.copytree(packages["1"], root / ".staging")  # hidden: export's temp names
    found = scan(root)
    assert {name: list(versions) for name, versions in found.items()} == {"digits": ["1", "2"], "flat": ["1"]}
    assert scan(packages["1"]) == {"1": {"1": packages["1"]}}


# ------------------------------------------------------------------------ serving two versions

@pytest.fixture(scope="module")
def both(tmp_path_factory, packages):
    """digits versions 1 and 2 served side by side (config.pbtxt: all), with a response cache."""
    root = _repository(tmp_path_factory.mktemp("both") / "models", packages,
                       config="version_policy: { all: { } }\n")
    server, port = create_server("127.0.0.1:0", root, http_port=0, cache_mb=8)
    server.start()
    yield server, port
    server.stop(grace=1)


def test_two_versions_side_by_side_give_their_own_images(both, expected):
    server, port = both
    assert list(server.models.versions("digits")) == ["1", "2"]
    assert not np.array_equal(expected["1"], expected["2"])
    with GanportClient(f"127.0.0.1:{port}") as client:
        for _ in range(2):  # the second round is answered from the cache: still each its own
            for version in ("1", "2"):
                reply = client.generate_response("digits", 2, seed=7, labels=3, version=version)
                assert reply.version == version
                from ganport.runtime.server.codec import batch_to_array

                np.testing.assert_array_equal(batch_to_array(reply.images), expected[version])
            default = client.generate_response("digits", 2, seed=7, labels=3)
            assert default.version == "2"  # unset: the highest served version
        z = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
        for version in ("1", "2"):
            np.testing.assert_array_equal(client.decode("digits", z, labels=3, version=version),
                                          Generator.load(server.repository.packages()["digits"][version])
                                          .decode(z, labels=3))
        word = {v: client.render_word("digits", "42", seed=1, version=v) for v in ("1", "2")}
        assert not np.array_equal(word["1"], word["2"])
        assert [(m.name, m.version, [(v.version, v.state) for v in m.versions]) for m in client.list_models()] == \
            [("digits", "2", [("1", "READY"), ("2", "READY")])]
        assert client.get_model("digits", version="1").version == "1"
        with pytest.raises(grpc.RpcError) as info:
            client.generate("digits", 1, seed=1, version="9")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "version '9'" in info.value.details() and "served versions: 1, 2" in info.value.details()
    assert server.metrics.count("ganport_cache_requests_total", model="digits", result="hit") >= 2  # round two


def test_kserve_grpc_addresses_versions(both, expected, packages):
    server, port = both
    client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        meta = client.get_model_metadata("digits", as_json=True)
        assert meta["versions"] == ["1", "2"]
        assert client.get_model_metadata("digits", model_version="1", as_json=True)["versions"] == ["1", "2"]
        z = Generator.load(packages["1"]).sample_latents(2, seed=7)
        inputs = _infer_inputs(triton, z)
        for version in ("1", "2"):
            result = client.infer("digits", inputs, model_version=version)
            assert result.get_response().model_version == version
            np.testing.assert_array_equal(result.as_numpy("image"), _run(packages[version], z))
        assert client.infer("digits", inputs).get_response().model_version == "2"
        assert client.is_model_ready("digits", "1") and not client.is_model_ready("digits", "9")
        index = client.get_model_repository_index(as_json=True)["models"]
        assert [(m["name"], m["version"], m["state"]) for m in index] == \
            [("digits", "1", "READY"), ("digits", "2", "READY")]
        config = client.get_model_config("digits", model_version="1", as_json=True)["config"]
        assert config["version_policy"] == {"all": {}}
        stats = client.get_inference_statistics("digits", model_version="1", as_json=True)["model_stats"]
        assert [s["version"] for s in stats] == ["1"]
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", inputs, model_version="9")
        assert "NOT_FOUND" in str(info.value.status()) and "served versions: 1, 2" in info.value.message()
    finally:
        client.close()


def _infer_inputs(client_module, z: np.ndarray) -> list:
    """tritonclient (grpc or http) inputs: latents ``z`` [2, 8] and label 3 for both rows."""
    inputs = [client_module.InferInput("z", [2, 8], "FP32"), client_module.InferInput("label", [2, 1], "INT64")]
    inputs[0].set_data_from_numpy(z)
    inputs[1].set_data_from_numpy(np.full((2, 1), 3, np.int64))
    return inputs


def test_rest_versioned_routes(both, expected, packages):
    server, port = both
    base = server.http_url
    status, _, body = _http(f"{base}/v2/models/digits")
    assert status == 200 and json.loads(body)["versions"] == ["1", "2"]
    status, _, body = _http(f"{base}/v2/models/digits/versions/9")
    assert status == 404 and "served versions: 1, 2" in json.loads(body)["error"]
    status, _, _ = _http(f"{base}/v2/models/digits/versions/1/ready")
    assert status == 200
    client = httpclient.InferenceServerClient(url=base.split("://", 1)[1])
    try:
        z = Generator.load(packages["1"]).sample_latents(2, seed=7)
        inputs = _infer_inputs(httpclient, z)
        for version in ("1", "2"):
            result = client.infer("digits", inputs, model_version=version)
            assert result.get_response()["model_version"] == version
            np.testing.assert_array_equal(result.as_numpy("image"), _run(packages[version], z))
        assert client.get_model_metadata("digits", model_version="2")["versions"] == ["1", "2"]
        index = client.get_model_repository_index()
        assert [(m["version"], m["state"]) for m in index] == [("1", "READY"), ("2", "READY")]
    finally:
        client.close()
    for version in ("1", "2"):
        status, headers, body = _http(f"{base}/v1/models/digits/versions/{version}/generate.png?n=1&seed=7&label=3")
        assert status == 200 and headers["X-Ganport-Version"] == version
        np.testing.assert_array_equal(decode_png(body), expected[version][0])
    status, headers, _ = _http(f"{base}/v1/models/digits/generate.png?n=1&seed=7&label=3")
    assert status == 200 and headers["X-Ganport-Version"] == "2"
    status, _, body = _http(f"{base}/v1/models/digits/versions/1")
    assert status == 200 and json.loads(body)["version"] == "1"
    status, _, body = _http(f"{base}/v1/models/digits/versions/3/render.png?text=1")
    assert status == 404 and "served versions: 1, 2" in json.loads(body)["error"]


# ---------------------------------------------------------------------------------- policies

@pytest.mark.parametrize("flag, config, served", [
    (None, None, ["3"]),                                            # Triton's default: latest 1
    ("latest:2", None, ["2", "3"]),
    ("all", None, ["1", "2", "3"]),
    ("specific:1,3", None, ["1", "3"]),
    ("all", "version_policy: { specific: { versions: [2] } }", ["2"]),  # the model's config wins
])
def test_version_policy_selects_the_served_versions(tmp_path, packages, flag, config, served):
    root = _repository(tmp_path / "models", packages, versions=("1", "2", "3"), config=config)
    options = {} if flag is None else {"version_policy": flag}
    server, port = create_server("127.0.0.1:0", root, **options)
    server.start()
    try:
        assert list(server.models.versions("digits")) == served
        assert server.models["digits"].version == served[-1]
        index = server.repository.index()
        assert [e["version"] for e in index if e["state"] == "READY"] == served
        for entry in index:
            if entry["state"] != "READY":
                assert entry["reason"].startswith("not selected by the version policy"), entry
        with GanportClient(f"127.0.0.1:{port}") as client:
            info = client.get_model("digits")
            assert [v.version for v in info.versions] == ["1", "2", "3"]
            assert [v.version for v in info.versions if v.state == "READY"] == served
    finally:
        server.stop(grace=1)


def test_bad_version_policy_flag_is_one_error_line(tmp_path, packages, capsys):
    root = _repository(tmp_path / "models", packages)
    with pytest.raises(SystemExit) as info:
        main(["serve", str(root), "--port", "0", "--version-policy", "newest"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid version policy 'newest'" in err and "latest:N" in err and "Traceback" not in err


# ------------------------------------------------------------------------------- model control

def test_poll_picks_up_a_new_version_and_drops_a_removed_one(tmp_path, packages, caplog):
    caplog.set_level(logging.INFO, logger="ganport.runtime.server.repository")
    root = _repository(tmp_path / "models", packages, versions=("1",))
    server, port = create_server("127.0.0.1:0", root, model_control="poll", poll_seconds=0.2)
    server.start()
    callers = Callers(f"127.0.0.1:{port}", "digits", n=8)
    model = root / "digits"
    try:
        _wait(lambda: "1" in callers.versions)
        # A new version renamed into place (as `ganport export` does): it becomes the default and,
        # with latest:1, version 1 is unloaded once 2 serves.
        shutil.copytree(packages["2"], tmp_path / "staging")
        os.rename(tmp_path / "staging", model / "2")
        _wait(lambda: list(server.models.versions("digits")) == ["2"])
        _wait(lambda: callers.versions[-1] == "2")
        index = {e["version"]: e for e in server.repository.index()}
        assert index["1"]["state"] == "UNAVAILABLE" and "version policy latest:1" in index["1"]["reason"]
        # A broken version 3 never replaces 2.
        shutil.copytree(packages["3"], model / ".3")
        onnx = model / ".3" / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:100])
        os.rename(model / ".3", model / "3")
        _wait(lambda: server.repository.index()[-1]["reason"].startswith("load failed"))
        assert "model.onnx" in server.repository.index()[-1]["reason"]
        time.sleep(0.5)  # more scans: not retried, 2 still serves
        assert list(server.models.versions("digits")) == ["2"]
        assert sum("version 3" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records) == 1
        # Removing 3 and 2: after two scans 2 is unloaded, and the policy falls back to 1.
        shutil.rmtree(model / "3")
        shutil.rmtree(model / "2")
        _wait(lambda: list(server.models.versions("digits")) == ["1"])
        _wait(lambda: callers.versions[-1] == "1")
        with GanportClient(f"127.0.0.1:{port}") as client:
            assert client.health("digits") == "SERVING"
            assert [(e["version"], e["state"]) for e in client.repository_index()] == [("1", "READY")]
    finally:
        callers.stop()
        server.stop(grace=1)
    assert callers.failures == []
    assert len(callers.versions) > 20


def test_explicit_reload_applies_a_changed_policy_and_the_cli_shows_versions(tmp_path, packages, capsys):
    root = _repository(tmp_path / "models", packages)
    server, port = create_server("127.0.0.1:0", root, http_port=0)  # explicit, latest:1
    server.start()
    target = ["models", "--target", f"127.0.0.1:{port}"]
    changed: list[str] = []  # the response cache and health listen here: every version change says NAME
    server.models.listeners.append(changed.append)
    try:
        assert list(server.models.versions("digits")) == ["2"]
        assert main([*target, "list"]) == 0
        out = capsys.readouterr().out
        assert "digits\t1\tUNAVAILABLE\tnot selected by the version policy latest:1" in out
        assert "digits\t2\tREADY" in out
        (root / "digits" / "config.pbtxt").write_text("version_policy: { all { } }")
        assert main([*target, "reload", "digits"]) == 0
        assert "reloaded digits (serving versions 1, 2)" in capsys.readouterr().out
        assert list(server.models.versions("digits")) == ["1", "2"]
        assert changed == ["digits", "digits"]  # version 2 reloaded, version 1 loaded
        assert main(["client", "--target", f"127.0.0.1:{port}", "generate", "digits", "-n", "1", "--seed", "7",
                     "--label", "3", "--model-version", "1", "-o", str(tmp_path / "v1.png")]) == 0
        assert "from digits version 1" in capsys.readouterr().out
        assert main([*target, "unload", "digits"]) == 0
        assert "digits" not in server.models
        assert main([*target, "list"]) == 0
        out = capsys.readouterr().out
        assert "digits\t1\tUNAVAILABLE\tunloaded" in out and "digits\t2\tUNAVAILABLE\tunloaded" in out
        with GanportClient(f"127.0.0.1:{port}") as client:
            assert client.health("digits") == "NOT_SERVING"
        assert main([*target, "load", "digits"]) == 0
        assert list(server.models.versions("digits")) == ["1", "2"]
        # The same through KServe REST (tritonclient.http): unload and load every version.
        client = httpclient.InferenceServerClient(url=server.http_url.split("://", 1)[1])
        try:
            client.unload_model("digits")
            assert not client.is_model_ready("digits") and "digits" not in server.models
            client.load_model("digits")
            assert client.is_model_ready("digits", "1") and client.is_model_ready("digits", "2")
        finally:
            client.close()
        assert changed.count("digits") >= 7
    finally:
        server.stop(grace=1)
