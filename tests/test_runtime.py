"""Tests of ganport.runtime: every operation on every backend, validation, word layout, PNG
helpers and the runtime CLI commands.

The packages are tiny deterministic networks built by tests/runtime_helpers.py (about a second
each), exported with the package contract: onnx, torchscript and pt2 artifacts plus manifest.json.
"""

from __future__ import annotations

import doctest
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runtime_helpers as helpers
from ganport.cli import main
from ganport.errors import (BackendUnavailableError, InvalidInputError, ModelNotFoundError, PackageError)
from ganport.runtime import Generator, encode_png, make_grid, save_png, to_uint8
from ganport.runtime.backends import BACKENDS as BACKEND_TABLE, Backend
from ganport.runtime.images import decode_png, from_uint8, resize_to_height

BACKENDS = ("onnx", "torchscript", "pt2")
KINDS = ("glyphs", "gan", "aae")


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packages")
    return {
        "glyphs": helpers.build_package(root / "glyphs", kind="cgan", class_names=helpers.GLYPH_CLASSES),
        "gan": helpers.build_package(root / "gan", kind="gan", image_shape=(3, 8, 8), latent_dim=6, seed=1),
        "aae": helpers.build_package(root / "aae", kind="aae", image_shape=(1, 8, 8), latent_dim=4, seed=2),
        "digits": helpers.build_package(root / "digits", kind="cgan", class_names=helpers.DIGIT_CLASSES,
                                        formats=("onnx",), seed=3),
        "upper": helpers.build_package(root / "upper", kind="cgan", class_names=helpers.UPPER_CLASSES,
                                       formats=("onnx",), seed=4),
    }


@pytest.fixture(scope="session")
def load(packages):
    """``load(kind, backend="onnx", **options)``, cached for the default options."""
    cache: dict[tuple[str, str], Generator] = {}

    def _load(kind: str, backend: str = "onnx", **options) -> Generator:
        if options:
            return Generator.load(packages[kind], backend=backend, **options)
        if (kind, backend) not in cache:
            cache[kind, backend] = Generator.load(packages[kind], backend=backend)
        return cache[kind, backend]

    return _load


@pytest.fixture()
def glyphs(load) -> Generator:
    return load("glyphs")


class CountingBackend(Backend):
    """Wraps a real backend and records the batch size of every call."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name, self.path, self.device = inner.name, inner.path, inner.device
        self.providers, self.input_names = inner.providers, inner.input_names
        self.batches: list[int] = []

    def __call__(self, feeds):
        self.batches.append(len(feeds["z"]))
        return self.inner(feeds)


# ----------------------------------------------------------------------------------- loading

def test_load_package_describes_model(glyphs, packages):
    assert glyphs.info.kind == "cgan" and glyphs.info.n_classes == 62
    assert glyphs.info.latent_dim == 8 and glyphs.info.image_shape == [1, 12, 12]
    assert (glyphs.backend_name, glyphs.device, glyphs.providers) == ("onnx", "cpu", ["CPUExecutionProvider"])
    assert "glyphs" in repr(glyphs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_in_use_is_reported(load, backend):
    gen = load("glyphs", backend)
    assert gen.backend_name == backend and gen.device == "cpu"
    assert gen.providers == (["CPUExecutionProvider"] if backend == "onnx" else ["torch:cpu"])


@pytest.mark.parametrize("file_name", ["model.onnx", "model.ts", "model.pt2"])
def test_load_single_file_reads_embedded_metadata(packages, load, file_name):
    gen = Generator.load(packages["glyphs"] / file_name)
    assert gen.info.to_dict() == load("glyphs").info.to_dict()
    np.testing.assert_allclose(gen.generate(3, labels="k", seed=5).astype(int),
                               load("glyphs").generate(3, labels="k", seed=5).astype(int), atol=1)


def test_single_aae_file_finds_its_encoder(packages, load):
    gen = Generator.load(packages["aae"] / "model.onnx")
    images = gen.generate(2, seed=1)
    np.testing.assert_array_equal(gen.encode(images), load("aae").encode(images))


def test_load_errors(packages, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model package"):
        Generator.load(tmp_path / "missing")
    with pytest.raises(PackageError, match="manifest.json not found"):
        Generator.load(tmp_path)
    with pytest.raises(PackageError, match="no pt2 artifact") as info:
        Generator.load(packages["digits"], backend="pt2")
    assert "available backends: onnx" in str(info.value)
    with pytest.raises(InvalidInputError, match="valid backends are " + ", ".join(BACKEND_TABLE)):
        Generator.load(packages["glyphs"], backend="tensorflow")
    with pytest.raises(InvalidInputError, match="valid devices are cpu, cuda"):
        Generator.load(packages["glyphs"], device="tpu")
    with pytest.raises(InvalidInputError, match="it is a onnx file"):
        Generator.load(packages["glyphs"] / "model.onnx", backend="torchscript")
    with pytest.raises(InvalidInputError, match="max_batch"):
        Generator.load(packages["glyphs"], max_batch=0)
    with pytest.raises(PackageError, match="neither a package directory"):
        Generator.load(packages["glyphs"] / "manifest.json")


def test_corrupt_or_foreign_artifacts_are_package_errors(packages, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all")
    with pytest.raises(PackageError, match="cannot load ONNX model") as caught:
        Generator.load(broken)
    # onnxruntime's own wording, without its numeric prefix or the path a second time.
    assert "INVALID_PROTOBUF: " in str(caught.value) and "[ONNXRuntimeError]" not in str(caught.value)
    assert str(caught.value).count("broken.onnx") == 1 and "re-export" in (caught.value.hint or "")
    import onnx

    foreign = onnx.load(str(packages["glyphs"] / "model.onnx"))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(PackageError, match="carries no ganport metadata"):
        Generator.load(tmp_path / "foreign.onnx")
    (tmp_path / "broken.ts").write_bytes(b"garbage")
    with pytest.raises(PackageError, match="cannot load torchscript model"):
        Generator.load(tmp_path / "broken.ts")


def test_cuda_unavailable_is_an_error_not_a_silent_cpu_fallback(packages):
    import onnxruntime
    import torch

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="no CUDA provider"):
            Generator.load(packages["glyphs"], device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="sees no CUDA device"):
            Generator.load(packages["glyphs"], backend="torchscript", device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_matches_cpu(load, backend):
    try:
        gpu = load("glyphs", backend, device="cuda", max_batch=7)
    except BackendUnavailableError as exc:
        pytest.skip(f"no CUDA for {backend}: {exc}")
    assert gpu.device == "cuda:0"
    if backend == "onnx":
        assert gpu.providers[0] == "CUDAExecutionProvider"
    cpu = load("glyphs", backend)
    diff = np.abs(gpu.generate(20, seed=3).astype(int) - cpu.generate(20, seed=3).astype(int))
    assert diff.max() <= 1


def test_threads_option(load):
    single = load("glyphs", "onnx", threads=1)
    np.testing.assert_array_equal(single.generate(4, seed=2), load("glyphs").generate(4, seed=2))
    with pytest.raises(InvalidInputError, match="threads"):
        load("glyphs", "onnx", threads=0)


# ----------------------------------------------------------------------------------- every op, every backend

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_generate_shape_and_seed(load, kind, backend):
    gen = load(kind, backend)
    c, h, w = gen.info.image_shape
    images = gen.generate(5, seed=11)
    assert images.shape == (5, h, w, c) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, gen.generate(5, seed=11))
    assert not np.array_equal(images, gen.generate(5, seed=12))
    assert images.std() > 5  # not a constant image


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_images_on_every_backend(load, packages, kind):
    results = {backend: load(kind, backend).generate(9, seed=7) for backend in BACKENDS}
    for backend in BACKENDS[1:]:
        diff = np.abs(results[backend].astype(int) - results["onnx"].astype(int))
        assert diff.max() <= 1, f"{backend} differs from onnx by {diff.max()} grey levels"
    # And all of them equal the artifact run directly with torch, outside the runtime.
    gen = load(kind)
    z = gen.sample_latents(9, seed=7)
    labels = gen.resolve_labels(None, 9)
    reference = to_uint8(helpers.reference_images(packages[kind], z, labels))
    assert np.abs(reference.astype(int) - results["onnx"].astype(int)).max() <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_equals_generate_for_the_same_latents(load, backend):
    gen = load("glyphs", backend)
    z = gen.sample_latents(4, seed=21)
    np.testing.assert_array_equal(gen.decode(z, labels=["A", "b", 3, "7"]),
                                  gen.generate(4, labels=["A", "b", 3, "7"], seed=21))
    assert gen.decode(z.astype(np.float64), labels="A").shape == (4, 12, 12, 1)  # float64 accepted


@pytest.mark.parametrize("backend", BACKENDS)
def test_encode_then_decode_reconstructs(load, backend):
    gen = load("aae", backend)
    z = gen.sample_latents(6, seed=4)
    images = gen.decode(z)
    latents = gen.encode(images)
    assert latents.shape == (6, 4) and latents.dtype == np.float32
    np.testing.assert_allclose(latents, z, atol=0.05)
    assert np.abs(gen.decode(latents).astype(int) - images.astype(int)).max() <= 2
    # float NCHW input in [-1, 1] is the same as uint8 pixels
    np.testing.assert_allclose(gen.encode(from_uint8(images)), latents, atol=1e-5)
    # grayscale [N, H, W] works too
    np.testing.assert_allclose(gen.encode(images[..., 0]), latents, atol=1e-6)


def test_encode_errors(load):
    with pytest.raises(InvalidInputError, match="has no encoder: encode works only for AAE"):
        load("glyphs").encode(np.zeros((1, 12, 12, 1), np.uint8))
    aae = load("aae")
    with pytest.raises(InvalidInputError, match=r"uint8 \[N, 8, 8, 1\].*got uint8 shape \[1, 9, 8, 1\]"):
        aae.encode(np.zeros((1, 9, 8, 1), np.uint8))
    with pytest.raises(InvalidInputError, match=r"must lie in \[-1, 1\]"):
        aae.encode(np.full((1, 1, 8, 8), 3.0, np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        aae.encode(np.full((1, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="got dtype int64"):
        aae.encode(np.zeros((1, 1, 8, 8), np.int64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate(load, backend):
    gen = load("glyphs", backend)
    z0, z1 = gen.sample_latents(2, seed=8)
    frames = gen.interpolate(z0, z1, steps=5, labels="G")
    assert frames.shape == (5, 12, 12, 1)
    np.testing.assert_array_equal(frames[0], gen.decode(z0[None], labels="G")[0])
    np.testing.assert_array_equal(frames[-1], gen.decode(z1[None], labels="G")[0])
    np.testing.assert_array_equal(frames[2], gen.decode(((z0 + z1) / 2)[None], labels="G")[0])
    slerp = gen.interpolate(z0[None], z1[None], steps=5, labels="G", mode="slerp")
    np.testing.assert_array_equal(slerp[[0, -1]], frames[[0, -1]])
    assert not np.array_equal(slerp[2], frames[2])
    # labels=None on a conditional model walks within class 0
    np.testing.assert_array_equal(gen.interpolate(z0, z1, 3), gen.interpolate(z0, z1, 3, labels=0))


def test_interpolate_errors(load):
    gen = load("gan")
    z0, z1 = gen.sample_latents(2, seed=1)
    assert gen.interpolate(z0, z1, 1).shape == (1, 8, 8, 3)
    with pytest.raises(InvalidInputError, match="steps must be an integer >= 1"):
        gen.interpolate(z0, z1, 0)
    with pytest.raises(InvalidInputError, match="valid modes are linear, slerp"):
        gen.interpolate(z0, z1, 3, mode="cubic")
    with pytest.raises(InvalidInputError, match=r"z0 must have shape \[N, 6\]"):
        gen.interpolate(z0[:3], z1, 3)
    with pytest.raises(InvalidInputError, match="z1 must be one latent vector"):
        gen.interpolate(z0, np.stack([z1, z1]), 3)


# ----------------------------------------------------------------------------------- inputs

def test_sample_latents_is_numpy_default_rng(glyphs):
    z = glyphs.sample_latents(3, seed=42)
    expected = np.random.default_rng(42).standard_normal((3, 8), dtype=np.float32)
    np.testing.assert_array_equal(z, expected)
    assert z.dtype == np.float32
    assert not np.array_equal(glyphs.sample_latents(3), glyphs.sample_latents(3))  # fresh entropy
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(InvalidInputError, match="seed must be a non-negative integer"):
            glyphs.sample_latents(1, seed=bad)
    with pytest.raises(InvalidInputError, match="n must be an integer >= 0"):
        glyphs.sample_latents(-1)


def test_resolve_labels_by_index_and_name(glyphs, load):
    np.testing.assert_array_equal(glyphs.resolve_labels("A", 3), [10, 10, 10])
    np.testing.assert_array_equal(glyphs.resolve_labels(10, 2), [10, 10])
    np.testing.assert_array_equal(glyphs.resolve_labels(np.int32(5), 1), [5])
    np.testing.assert_array_equal(glyphs.resolve_labels(["a", 0, "Z", "9"], 4), [36, 0, 35, 9])
    np.testing.assert_array_equal(glyphs.resolve_labels(np.array([1, 61]), 2), [1, 61])
    np.testing.assert_array_equal(glyphs.resolve_labels(["x"], 3), [59, 59, 59])  # one label broadcasts
    np.testing.assert_array_equal(glyphs.resolve_labels(None, 64)[[0, 61, 62, 63]], [0, 61, 0, 1])  # cycles
    assert glyphs.resolve_labels("A", 3).dtype == np.int64
    upper = load("upper")
    assert upper.resolve_labels("q", 1).tolist() == [16]  # case-insensitive where unambiguous
    assert upper.resolve_labels("3", 1).tolist() == [3]   # not a class name: an index
    assert load("gan").resolve_labels(None, 4) is None


@pytest.mark.parametrize("labels, message", [
    ("foo", "unknown label 'foo': valid labels are 0..61 or class names '0'..'9', 'A'..'Z', 'a'..'z'"),
    (62, "unknown label 62: valid labels are 0..61"),
    (-1, "unknown label -1"),
    (np.array([0, 99]), "unknown label 99"),
    (True, "unknown label True"),
    (1.5, "labels must be a class index, a class name or a sequence"),
    ([1.5], "unknown label 1.5"),
    (["A", "B"], "got 2 labels for 3 images: pass one label or exactly 3"),
])
def test_resolve_labels_errors(glyphs, labels, message):
    with pytest.raises(InvalidInputError) as info:
        glyphs.resolve_labels(labels, 3)
    assert message in str(info.value)


def test_labels_on_unconditional_model_are_an_error(load):
    with pytest.raises(InvalidInputError, match="model 'gan' \\(kind gan\\) is unconditional and takes no labels"):
        load("gan").generate(2, labels="A")


@pytest.mark.parametrize("z, message", [
    (np.zeros(8, np.float32), r"z must have shape \[N, 8\] \(N latent vectors of length 8\), got \[8\]"),
    (np.zeros((2, 7), np.float32), r"got \[2, 7\]"),
    (np.zeros((1, 2, 8), np.float32), r"got \[1, 2, 8\]"),
    (np.array([[0.0] * 7 + [np.nan]], np.float32), r"NaN or infinite values \(row\(s\) 0\)"),
    (np.array([[0.0] * 8, [np.inf] + [0.0] * 7]), r"row\(s\) 1\)"),
    (np.array([[1e39] * 8]), "NaN or infinite"),  # overflows float32
    (np.array([["a"] * 8]), "got dtype <U1"),
    ([[0.0] * 8, [0.0] * 7], "must be a numeric array"),
])
def test_run_validates_latents(glyphs, z, message):
    with pytest.raises(InvalidInputError, match=message):
        glyphs.run(z, labels=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_batch_split_equals_one_big_call(load, backend):
    gen = load("glyphs", backend)
    z = gen.sample_latents(23, seed=5)
    whole = gen.run(z)
    split = load("glyphs", backend, max_batch=4)
    counting = CountingBackend(split._model)
    split._model = counting
    parts = split.run(z)
    assert counting.batches == [4, 4, 4, 4, 4, 3]
    if backend == "onnx":
        np.testing.assert_array_equal(parts, whole)  # onnxruntime CPU: bit for bit
    else:
        # torch picks GEMM kernels by batch size: the last float bit may differ, pixels by <= 1 level
        np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-6)
        assert np.abs(to_uint8(parts).astype(int) - to_uint8(whole).astype(int)).max() <= 1
    assert whole.shape == (23, 1, 12, 12) and whole.dtype == np.float32


def test_empty_batch(glyphs):
    assert glyphs.generate(0).shape == (0, 12, 12, 1)


# ----------------------------------------------------------------------------------- words

def test_render_word_is_one_batch_of_the_planned_glyphs(glyphs):
    plan = glyphs.plan_word("Hi 2026", seed=3)
    assert plan.characters == list("Hi2026") and plan.n_glyphs == 6
    np.testing.assert_array_equal(plan.labels, [17, 44, 2, 0, 2, 6])
    assert plan.z.shape == (6, 8) and plan.z.dtype == np.float32
    composed = plan.compose(to_uint8(glyphs.run(plan.z, plan.labels)))
    np.testing.assert_array_equal(glyphs.render_word("Hi 2026", seed=3), composed)
    assert composed.dtype == np.uint8 and composed.shape[2] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_word_same_on_every_backend(load, backend):
    image = load("glyphs", backend).render_word("Ab1", seed=2, noise="shared")
    reference = load("glyphs").render_word("Ab1", seed=2, noise="shared")
    assert image.shape == reference.shape
    assert np.abs(image.astype(int) - reference.astype(int)).max() <= 1


def test_word_layout_without_trim(glyphs):
    def width(text: str, **options) -> int:
        return glyphs.render_word(text, seed=1, trim=False, **options).shape[1]

    # untrimmed glyphs are 12 px: each extra letter adds 12 px plus the spacing
    assert width("abc", spacing=3) - width("ab", spacing=3) == 15
    assert width("ab", spacing=-4) - width("a", spacing=-4) == 8
    gap = width("a b", spacing=3) - width("ab", spacing=3)
    assert gap > 3
    image = glyphs.render_word("a b", seed=1, trim=False, spacing=3)
    margin = (image.shape[1] - 2 * 12 - 2 * 3 - (gap - 3)) // 2
    gap_columns = image[:, margin + 12 + 3: margin + 12 + 3 + gap - 3]
    assert gap_columns.size and (gap_columns == gap_columns[0, 0]).all()  # the space is background only
    one_line = glyphs.render_word("ab", seed=1, trim=False)
    two_lines = glyphs.render_word("ab\ncd", seed=1, trim=False)
    assert two_lines.shape[0] > one_line.shape[0] + 12 and two_lines.shape[1] == one_line.shape[1]
    assert glyphs.render_word("ab\r\nc", seed=1).shape[0] == two_lines.shape[0]
    tall = glyphs.render_word("ab", seed=1, trim=False, height=36, spacing=0)
    # two 36-px glyphs side by side; the margins add the same to both dimensions
    assert tall.shape[0] > 36 and tall.shape[1] - 72 == tall.shape[0] - 36


def test_shared_noise_repeats_glyphs_and_per_glyph_varies(glyphs):
    shared = glyphs.plan_word("lol", seed=4, noise="shared")
    per_glyph = glyphs.plan_word("lol", seed=4, noise="per-glyph")
    assert (shared.z == shared.z[0]).all()
    assert not np.array_equal(per_glyph.z[0], per_glyph.z[2])
    np.testing.assert_array_equal(shared.z[0], per_glyph.z[0])  # same seed, same first draw
    shared_images = to_uint8(glyphs.run(shared.z, shared.labels))
    per_glyph_images = to_uint8(glyphs.run(per_glyph.z, per_glyph.labels))
    np.testing.assert_array_equal(shared_images[0], shared_images[2])
    assert not np.array_equal(per_glyph_images[0], per_glyph_images[2])


def _bar_glyphs(plan, ink: int, background: int) -> np.ndarray:
    """Synthetic glyphs: a 2-px vertical bar (columns 5-6) on a flat background."""
    glyphs = np.full((plan.n_glyphs, *plan.glyph_shape), background, np.uint8)
    glyphs[:, 2:-2, 5:7] = ink
    return glyphs


@pytest.mark.parametrize("ink, background", [(255, 0), (0, 255)])
def test_trim_packs_glyphs_close(glyphs, ink, background):
    trimmed = glyphs.plan_word("ab", spacing=0)
    untrimmed = glyphs.plan_word("ab", spacing=0, trim=False)
    wide = untrimmed.compose(_bar_glyphs(untrimmed, ink, background))
    narrow = trimmed.compose(_bar_glyphs(trimmed, ink, background))
    margin = (wide.shape[1] - 24) // 2
    assert narrow.shape[1] == 2 * margin + 2 * 4  # each glyph: the 2-px bar plus one pixel each side
    assert narrow.shape[0] == wide.shape[0]
    ink_columns = np.flatnonzero((narrow[..., 0] == ink).any(axis=0))
    np.testing.assert_array_equal(ink_columns, margin + np.array([1, 2, 5, 6]))
    assert (narrow[0] == background).all()  # canvas filled with the glyphs' background
    # negative spacing overlaps the glyphs and keeps both bars' ink (max/min merge)
    overlapped = glyphs.plan_word("ab", spacing=-3)
    tight = overlapped.compose(_bar_glyphs(overlapped, ink, background))
    assert tight.shape[1] == narrow.shape[1] - 3
    # second glyph starts 3 px into the first one: bars at +1..+2 and +2..+3
    assert np.flatnonzero((tight[..., 0] == ink).any(axis=0)).tolist() == (margin + np.array([1, 2, 3])).tolist()


def test_invert_swaps_dark_and_light(glyphs):
    plan = glyphs.plan_word("a", invert=True, trim=False)
    image = plan.compose(_bar_glyphs(plan, 255, 0))
    assert (image[0] == 255).all() and (image[..., 0] == 0).any()
    with pytest.raises(InvalidInputError, match=r"compose expects uint8 glyphs of shape \[1, 12, 12, 1\]"):
        plan.compose(np.zeros((2, 12, 12, 1), np.uint8))


def test_case_and_digit_fallback(load):
    upper = load("upper")
    np.testing.assert_array_equal(upper.plan_word("hello").labels, upper.plan_word("HELLO").labels)
    digits = load("digits")
    np.testing.assert_array_equal(digits.plan_word("2026").labels, [2, 0, 2, 6])
    with pytest.raises(InvalidInputError) as info:
        digits.render_word("a1b")
    assert str(info.value) == ("cannot render 'a', 'b': model 'digits' has no class for them "
                               "(renderable characters: '0'..'9', space and newline)")
    assert upper.renderable_characters()[:3] == ["A", "B", "C"] and len(upper.renderable_characters()) == 52


@pytest.mark.parametrize("text, options, message", [
    ("héllo", {}, "cannot render 'é': model 'glyphs' has no class for it"),
    ("", {}, "has no characters to render"),
    ("  \n ", {}, "has no characters to render"),
    (42, {}, "text must be a string, got int"),
    ("ab", {"noise": "random"}, "unknown noise mode 'random': valid modes are per-glyph, shared"),
    ("ab", {"height": 0}, "height must be an integer in 1..1024"),
    ("ab", {"spacing": -100}, "spacing must be an integer in -12..48"),
])
def test_render_word_errors(glyphs, text, options, message):
    with pytest.raises(InvalidInputError, match=message):
        glyphs.render_word(text, **options)


def test_render_word_needs_a_conditional_model(load):
    with pytest.raises(InvalidInputError, match="is unconditional: render_word needs a character-conditioned"):
        load("gan").render_word("hi")


# ----------------------------------------------------------------------------------- images

def test_to_uint8_maps_range_and_keeps_channels():
    values = np.array([-1.0, -0.5, 0.0, 1.0, 2.0, -7.0, np.nan], np.float32).reshape(1, 1, 1, 7)
    assert to_uint8(values).reshape(-1).tolist() == [0, 64, 128, 255, 255, 0, 0]
    assert to_uint8(np.zeros((2, 1, 4, 5), np.float32)).shape == (2, 4, 5, 1)
    rgb = np.zeros((1, 3, 2, 2), np.float32)
    rgb[:, 0] = 1.0
    assert to_uint8(rgb)[0, 0, 0].tolist() == [255, 128, 128]
    pixels = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(from_uint8(pixels)), pixels)
    with pytest.raises(InvalidInputError, match=r"\[N, C, H, W\]"):
        to_uint8(np.zeros((4, 4), np.float32))


def test_make_grid_places_images_row_by_row():
    images = np.stack([np.full((3, 4, 1), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (3 * 4 + 1, 2 * 5 + 1, 1)
    assert grid[1, 1, 0] == 10 and grid[1, 6, 0] == 20 and grid[5, 1, 0] == 30 and grid[9, 1, 0] == 50
    assert grid[9, 6, 0] == 0  # the empty cell is padding
    assert make_grid(images).shape == (2 * 5 + 2, 3 * 6 + 2, 1)  # default: ceil(sqrt(5)) = 3 per row
    with pytest.raises(InvalidInputError, match="nrow"):
        make_grid(images, nrow=0)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_png_round_trip_through_pil(tmp_path, channels, mode):
    image = np.random.default_rng(channels).integers(0, 256, (7, 9, channels), dtype=np.uint8)
    data = encode_png(image)
    with Image.open(io.BytesIO(data)) as pil:
        assert pil.mode == mode and pil.size == (9, 7)
        np.testing.assert_array_equal(np.asarray(pil).reshape(7, 9, channels), image)
    path = save_png(tmp_path / "sub" / "img.png", image)
    np.testing.assert_array_equal(decode_png(path.read_bytes()), image)


def test_png_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="expected a uint8 image"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="cannot write"):
        save_png(tmp_path / "file.png" / "below.png", np.zeros((2, 2, 1), np.uint8))  # parent is a file
    assert resize_to_height(np.zeros((10, 4, 2), np.uint8), 20).shape == (20, 8, 2)


# ----------------------------------------------------------------------------------- CLI

def test_cli_generate_render_interpolate(packages, tmp_path, capsys):
    package = str(packages["glyphs"])
    grid = tmp_path / "grid.png"
    assert main(["generate", package, "-n", "16", "--seed", "1", "--label", "A", "-o", str(grid)]) == 0
    gen = Generator.load(package)
    expected = make_grid(gen.generate(16, labels="A", seed=1))
    np.testing.assert_array_equal(decode_png(grid.read_bytes()), expected)
    assert "wrote" in capsys.readouterr().out

    word = tmp_path / "word.png"
    assert main(["render", package, "Hello 2026", "--seed", "3", "--noise", "shared", "--spacing", "-1",
                 "--height", "24", "-o", str(word)]) == 0
    np.testing.assert_array_equal(decode_png(word.read_bytes()),
                                  gen.render_word("Hello 2026", seed=3, noise="shared", spacing=-1, height=24))
    two_lines = tmp_path / "lines.png"
    # Seeded: trimmed glyphs make a word's width depend on the drawn glyphs.
    assert main(["render", package, "ab\\ncd", "--seed", "5", "-o", str(two_lines)]) == 0
    assert decode_png(two_lines.read_bytes()).shape == gen.render_word("ab\ncd", seed=5).shape

    strip = tmp_path / "strip.png"
    assert main(["interpolate", package, "--steps", "10", "--seed", "1", "--label", "A", "--label", "b",
                 "-o", str(strip)]) == 0
    assert decode_png(strip.read_bytes()).shape == (2 * 14 + 2, 10 * 14 + 2, 1)
    assert main(["interpolate", str(packages["gan"]), "--steps", "4", "--mode", "slerp", "-o", str(strip)]) == 0
    assert decode_png(strip.read_bytes()).shape == (8 + 4, 4 * 10 + 2, 3)

    labelled = tmp_path / "labelled.png"
    assert main(["generate", package, "--label", "a", "--label", "b", "--label", "c", "--nrow", "3",
                 "--backend", "torchscript", "-o", str(labelled)]) == 0
    assert decode_png(labelled.read_bytes()).shape == (14 + 2, 3 * 14 + 2, 1)


def test_cli_errors_print_one_line(packages, tmp_path, capsys):
    package = str(packages["glyphs"])
    assert main(["generate", package, "--label", "foo", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown label 'foo'") and err.count("\n") == 1
    assert main(["render", package, "a|b", "-o", str(tmp_path / "x.png")]) == 2
    assert "error: cannot render '|'" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "nope"), "-o", str(tmp_path / "x.png")]) == 2
    assert "error: no model package or file at" in capsys.readouterr().err
    # The text forgotten: the package path must not be rendered as the text.
    assert main(["render", package, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {package!r} is a model package and no text was given") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganport", *args], capture_output=True, text=True, timeout=120)


def test_cli_subprocess(packages, tmp_path):
    package = str(packages["glyphs"])
    done = _run_cli("generate", package, "-n", "4", "--seed", "2", "-o", str(tmp_path / "g.png"))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "g.png").size == (2 * 14 + 2, 2 * 14 + 2)
    done = _run_cli("render", package, "Hello 2026", "-o", str(tmp_path / "w.png"))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "w.png").mode == "L"
    done = _run_cli("render", package, "tab\u00e9", "-o", str(tmp_path / "bad.png"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot render 'é'")


def test_onnx_path_never_imports_torch(packages, tmp_path):
    # torch is installed here; the runtime must still not import it on the ONNX path.
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ganport.runtime import Generator, make_grid, save_png
        from ganport.cli import main
        gen = Generator.load({str(packages['glyphs'])!r})
        save_png({str(tmp_path / 'a.png')!r}, make_grid(gen.generate(4, labels="A", seed=1)))
        gen.decode(gen.sample_latents(2, seed=1), labels=[1, 2])
        gen.interpolate(*gen.sample_latents(2, seed=1), steps=3)
        gen.render_word("Hi 1", seed=1)
        aae = Generator.load({str(packages['aae'])!r})
        aae.encode(aae.generate(2, seed=1))
        assert main(["render", {str(packages['glyphs'])!r}, "ok", "-o", {str(tmp_path / 'b.png')!r}]) == 0
        loaded = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        assert not loaded, loaded
        print("no torch")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no torch" in done.stdout


def test_torch_backends_load_without_warnings(packages):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for backend in ("torchscript", "pt2"):
            Generator.load(packages["glyphs"], backend=backend).generate(2, seed=1)


def test_bundled_metadata_file_is_read(packages, tmp_path):
    # export also writes the whole metadata as one JSON extra file; a .ts holding only that loads too.
    import json
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(packages["gan"] / "model.ts"))
        info = Generator.load(packages["gan"]).info
        torch.jit.save(module, str(tmp_path / "bundled.ts"),
                       _extra_files={"ganport.json": json.dumps(info.to_metadata())})
    gen = Generator.load(tmp_path / "bundled.ts")
    assert gen.info.to_dict() == info.to_dict()


# ----------------------------------------------------------------------------------- real export

@pytest.fixture(scope="session")
def exported(tiny_checkpoint, tmp_path_factory):
    """``exported(kind)``: a package written by ganport.export from a real (3-step) checkpoint."""
    from ganport.export import export_package

    root = tmp_path_factory.mktemp("exported")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = export_package(tiny_checkpoint(kind), root / kind, formats=BACKENDS, verify=False)
        return cache[kind]

    return get


def test_real_cgan_package_on_every_backend(exported):
    package = exported("cgan")  # scikit-learn digits, 10 classes, 16x16
    gens = {backend: Generator.load(package, backend=backend) for backend in BACKENDS}
    onnx = gens["onnx"]
    assert onnx.info.class_names == helpers.DIGIT_CLASSES and onnx.info.image_shape == [1, 16, 16]
    for backend, gen in gens.items():
        assert np.abs(gen.generate(12, labels="7", seed=3).astype(int)
                      - onnx.generate(12, labels="7", seed=3).astype(int)).max() <= 1, backend
        lone = Generator.load(package / gen.info.files[backend])
        assert lone.info.to_dict() == onnx.info.to_dict()
        assert gen.render_word("2026", seed=1).shape == onnx.render_word("2026", seed=1).shape
    with pytest.raises(InvalidInputError, match="cannot render 'x'"):
        onnx.render_word("x1")


def test_real_aae_package_encodes_on_every_backend(exported):
    package = exported("aae")
    gens = {backend: Generator.load(package, backend=backend) for backend in BACKENDS}
    images = gens["onnx"].generate(5, seed=2)
    latents = {backend: gen.encode(images) for backend, gen in gens.items()}
    assert latents["onnx"].shape == (5, gens["onnx"].info.latent_dim)
    for backend in BACKENDS[1:]:
        np.testing.assert_allclose(latents[backend], latents["onnx"], atol=1e-4)
    assert gens["pt2"].decode(latents["pt2"]).shape == images.shape


@pytest.mark.parametrize("module_name", ["images", "words", "generator", "backends"])
def test_docstring_examples_run(module_name):
    import importlib

    module = importlib.import_module(f"ganport.runtime.{module_name}")
    result = doctest.testmod(module, extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0


def test_save_png_writes_atomically_and_refuses_other_image_suffixes(tmp_path):
    from ganport.errors import InvalidInputError
    from ganport.runtime.images import save_png

    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    path = save_png(tmp_path / "out" / "grid.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temp file left
    with pytest.raises(InvalidInputError, match=r"writes PNG images, not \.jpg") as info:
        save_png(tmp_path / "grid.jpg", image)
    assert info.value.hint == "use grid.png"
    assert not (tmp_path / "grid.jpg").exists()
