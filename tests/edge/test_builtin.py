"""The built-in glyphs model from the installed wheel: it works right after
``pip install 'ganport[cpu]'``, with no training, no download and no torch.

Run by ``make test-edge`` in the runtime-only venv, where ganport is installed from a wheel (not
the checkout), so these tests prove the package data ships in the wheel.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import ganport
from ganport.runtime import Generator
from ganport.runtime.builtins import BUILTINS, DEFAULT_BUILTIN, builtin_path
from ganport.runtime.manifest import read_manifest

#: The checkout these tests live in: the wheel's files must not come from here.
CHECKOUT = Path(__file__).resolve().parents[2]


def test_builtin_comes_from_the_installed_wheel():
    installed = Path(ganport.__file__).resolve().parent
    # Installed from the wheel into site-packages, not the checkout's source folders.
    assert installed.parent.name == "site-packages", f"ganport imported from {installed}"
    assert installed not in (CHECKOUT / "ganport", CHECKOUT / "runtime")
    for name in BUILTINS:
        path = builtin_path(name)
        assert installed.parent in path.parents  # site-packages/ganport/runtime/builtin/NAME
        info = read_manifest(path)
        assert info.provenance["eval"]["package"]["onnx"]["conditional_accuracy"] >= 0.97


def test_builtin_renders_a_word():
    gen = Generator.load(f"builtin:{DEFAULT_BUILTIN}")  # verifies the package against its manifest
    assert gen.backend_name == "onnx" and gen.info.n_classes == 62
    word = gen.render_word("Hello", seed=1)
    assert word.dtype == np.uint8 and word.ndim == 3 and word.shape[2] == 1
    assert word.shape[0] >= gen.info.height and word.shape[1] > 2 * gen.info.width  # 5 glyphs, trimmed
    assert word.std() > 20 and (word < 64).any() and (word > 192).any()  # ink and background, not a blank picture
    np.testing.assert_array_equal(word, gen.render_word("Hello", seed=1))
    assert not np.array_equal(word, gen.render_word("Hello", seed=2))


def test_render_command_needs_no_package(tmp_path):
    out = tmp_path / "hello.png"
    proc = subprocess.run([sys.executable, "-m", "ganport", "render", "Hello", "-o", str(out), "--seed", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with Image.open(io.BytesIO(out.read_bytes())) as image:
        pixels = np.asarray(image)
    expected = Generator.load(f"builtin:{DEFAULT_BUILTIN}").render_word("Hello", seed=1)
    np.testing.assert_array_equal(pixels.reshape(expected.shape), expected)


def test_builtin_int8_runs_without_torch():
    fp32 = Generator.load(f"builtin:{DEFAULT_BUILTIN}")
    int8 = Generator.load(f"builtin:{DEFAULT_BUILTIN}", backend="onnx-int8")
    assert int8.backend_name == "onnx-int8"
    a = int8.generate(16, labels="A", seed=4)
    np.testing.assert_array_equal(a, int8.generate(16, labels="A", seed=4))
    grey = np.abs(a.astype(int) - fp32.generate(16, labels="A", seed=4).astype(int))
    assert grey.mean() < 4  # int8 rounding, not another picture
