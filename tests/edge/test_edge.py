"""The runtime in an environment without torch: every operation on the ONNX backend, the CLI,
and proof that torch was never imported.

Run by ``make test-edge`` in the runtime-only virtual environment; see conftest.py.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ganport.errors import BackendUnavailableError, InvalidInputError


def test_environment_has_no_torch():
    # The point of this run: if torch is installed here, the edge guarantees are untested.
    assert importlib.util.find_spec("torch") is None, "the edge environment must not have torch installed"


def test_load_describes_model(gen):
    assert gen.backend_name == "onnx"
    assert gen.device == "cpu"
    assert gen.providers == ["CPUExecutionProvider"]
    assert gen.info.conditional and gen.info.n_classes == 62
    assert gen.info.class_names[10] == "A"


def test_generate_is_seeded_and_labelled(gen):
    c, h, w = gen.info.image_shape
    images = gen.generate(6, labels="A", seed=3)
    assert images.shape == (6, h, w, c) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, gen.generate(6, labels=10, seed=3))  # name == index
    assert not np.array_equal(images, gen.generate(6, labels="A", seed=4))
    assert not np.array_equal(images, gen.generate(6, labels="B", seed=3))


def test_decode_matches_generate(gen):
    z = gen.sample_latents(4, seed=9)
    np.testing.assert_array_equal(gen.decode(z, labels=["a", "b", "c", "d"]),
                                  gen.generate(4, labels=["a", "b", "c", "d"], seed=9))
    with pytest.raises(InvalidInputError, match="NaN"):
        gen.decode(np.full((1, gen.info.latent_dim), np.nan, np.float32), labels=0)


def test_interpolate_ends_are_the_end_points(gen):
    z0, z1 = gen.sample_latents(2, seed=1)
    frames = gen.interpolate(z0, z1, steps=5, labels="Q")
    assert frames.shape[0] == 5
    np.testing.assert_array_equal(frames[0], gen.decode(z0[None], labels="Q")[0])
    np.testing.assert_array_equal(frames[-1], gen.decode(z1[None], labels="Q")[0])


def test_render_word_and_png(gen):
    image = gen.render_word("Hello 2026\nok", seed=1)
    assert image.ndim == 3 and image.dtype == np.uint8
    assert image.shape[0] > 2 * gen.info.height  # two lines
    from ganport.runtime import encode_png

    decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))))
    np.testing.assert_array_equal(decoded, image[..., 0])
    with pytest.raises(InvalidInputError, match="'#'"):
        gen.render_word("a#b")


def test_torchscript_without_torch_is_a_clear_error(package):
    from ganport.runtime import Generator

    with pytest.raises(BackendUnavailableError, match="PyTorch") as info:
        Generator.load(package, backend="torchscript")
    assert "onnx" in (info.value.hint or "")


def test_cli_in_process(package, tmp_path, capsys):
    from ganport.cli import main

    out = tmp_path / "grid.png"
    assert main(["generate", str(package), "-n", "4", "--seed", "1", "--label", "A", "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 0
    assert main(["render", str(package), "Hi there", "-o", str(tmp_path / "w.png")]) == 0
    assert main(["interpolate", str(package), "--steps", "4", "--label", "B", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["render", str(package), "a~", "-o", str(tmp_path / "bad.png")]) == 2
    assert "error: cannot render '~'" in capsys.readouterr().err


def test_cli_subprocess(package, tmp_path):
    out = tmp_path / "word.png"
    done = subprocess.run([sys.executable, "-m", "ganport", "render", str(package), "Edge 1", "--seed", "2",
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).mode == "L"


def test_torch_never_imported():
    # Kept last in the file: by now every runtime operation above has run in this process.
    loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
    assert loaded == []
