"""The built-in models (runtime/builtins.py): shipped packages that work with no training.

Every row of ``BUILTINS`` must be a complete, verified package with its provenance; the entry
points (``builtin:NAME``, ``ganport render`` without a package, ``generate --builtin``,
``serve --builtin``) must reach it; and ``ganport eval`` must reproduce the figures its manifest
records (slow: the first eval on a machine trains the reference classifier, ~12 minutes on one core).
The torch-free, installed-wheel side is tests/edge/test_builtin.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ganport.errors import InvalidInputError, ModelNotFoundError
from ganport.runtime import Generator
from ganport.runtime.builtins import BUILTIN_DIR, BUILTINS, DEFAULT_BUILTIN, builtin_path
from ganport.runtime.images import decode_png
from ganport.runtime.manifest import read_manifest
from server_helpers import ServeProcess

#: A built-in package must fit in the wheel.
MAX_BYTES = 8 * 2**20
#: Points of conditional accuracy an eval rerun may differ from the recorded one (same latents,
#: same classifier: in practice 0; the margin covers a classifier retrained on another CPU).
ACCURACY_TOLERANCE_POINTS = 0.5


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganport", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_package_is_complete_and_small(name):
    path = builtin_path(name)
    assert path.parent == BUILTIN_DIR
    info = read_manifest(path)
    assert info.name == name and info.kind == "cgan" and info.n_classes == 62
    assert sum(p.stat().st_size for p in path.iterdir()) <= MAX_BYTES
    assert sorted(p.name for p in path.iterdir()) == sorted(["manifest.json", *info.files.values()])
    prov = info.provenance
    assert prov["training_command"].startswith("ganport train cgan --dataset glyphs")
    assert prov["steps"] > 0 and prov["source_checkpoint_sha256"] == info.source_checkpoint_sha256
    assert len(info.source_checkpoint_sha256) == 64
    recorded = prov["eval"]["package"]
    assert set(recorded) == {"onnx"} | ({"onnx-int8"} if "onnx_int8" in info.files else set())
    assert recorded["onnx"]["conditional_accuracy"] >= 0.97
    if "onnx-int8" in recorded:  # shipped only when it keeps accuracy within 1 point
        assert recorded["onnx"]["conditional_accuracy"] - recorded["onnx-int8"]["conditional_accuracy"] <= 0.01


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_builtin_loads_and_renders(backend):
    if backend == "onnx-int8" and "onnx_int8" not in read_manifest(builtin_path(DEFAULT_BUILTIN)).files:
        pytest.skip("the built-in model ships without an int8 file")
    gen = Generator.load(f"builtin:{DEFAULT_BUILTIN}", backend=backend)
    word = gen.render_word("Hello", seed=1)
    assert word.dtype == np.uint8 and word.ndim == 3 and word.shape[2] == 1
    assert word.std() > 20  # ink on paper, not a blank or uniform picture
    np.testing.assert_array_equal(word, gen.render_word("Hello", seed=1))


def test_unknown_builtin_names_the_choices():
    with pytest.raises(ModelNotFoundError, match=f"no built-in model 'nope'.*{DEFAULT_BUILTIN}"):
        Generator.load("builtin:nope")


def test_cli_render_without_a_package_uses_the_builtin(tmp_path):
    out = tmp_path / "hello.png"
    proc = _run("render", "Hello", "-o", str(out), "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    picture = decode_png(out.read_bytes())
    expected = Generator.load(f"builtin:{DEFAULT_BUILTIN}").render_word("Hello", seed=1)
    np.testing.assert_array_equal(picture.reshape(expected.shape), expected)


def test_cli_generate_builtin_and_conflicts(tmp_path):
    out = tmp_path / "grid.png"
    proc = _run("generate", "--builtin", DEFAULT_BUILTIN, "-n", "8", "--label", "A", "--seed", "2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    proc = _run("generate", "some/package", "--builtin", DEFAULT_BUILTIN, "-o", str(out))
    assert proc.returncode == 2 and proc.stderr.startswith("error: give a package or --builtin, not both")
    proc = _run("generate", "--builtin", "nope", "-o", str(out))
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_serve_builtin_answers_like_the_library():
    server = ServeProcess("--builtin")
    try:
        assert server.n_models == len(BUILTINS)
        from ganport.runtime.server.client import GanportClient

        with GanportClient(server.target) as client:
            word = client.render_word(DEFAULT_BUILTIN, "Hi 42", seed=5)
        expected = Generator.load(f"builtin:{DEFAULT_BUILTIN}").render_word("Hi 42", seed=5)
        np.testing.assert_array_equal(word, expected)
    finally:
        server.kill()
    proc = _run("serve", "models/", "--builtin")
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_model_path_picks_the_package_or_a_builtin():
    from ganport.runtime.cli import model_path

    assert model_path(None, None) == f"builtin:{DEFAULT_BUILTIN}"
    assert model_path("pkg", None) == "pkg"
    with pytest.raises(InvalidInputError):
        model_path("pkg", DEFAULT_BUILTIN)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILTINS))
def test_eval_reproduces_the_recorded_figures(name, tmp_path):
    info = read_manifest(builtin_path(name))
    recorded = info.provenance["eval"]
    n = recorded["package"]["onnx"]["n_generated"]
    for backend, figures in recorded["package"].items():
        out = tmp_path / f"{backend}.json"
        proc = _run("eval", f"builtin:{name}", "--dataset", "glyphs", "-n", str(n), "--seed", str(figures["seed"]),
                    "--backend", backend, "--threads", "1", "--out", str(out), timeout=3600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = json.loads(out.read_text())
        assert abs(got["conditional_accuracy"] - figures["conditional_accuracy"]) * 100 <= ACCURACY_TOLERANCE_POINTS
        assert got["fd_equal_n"] == pytest.approx(figures["fd_equal_n"], rel=0.05)
