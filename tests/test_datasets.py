"""Tests for ganport.trainer.datasets: built-in sets and file loaders on files written here."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ganport.trainer.datasets import DataInfo, available_datasets, describe_datasets, load_dataset

from ganport.errors import DatasetError, SplitNotFoundError

# ---------------------------------------------------------------------------------------------
# Registry and common arguments


def test_registry_lists_sets_and_rejects_unknown_name():
    names = available_datasets()
    assert {"glyphs", "digits"} <= set(names)
    assert [n for n, _ in describe_datasets()] == names
    with pytest.raises(DatasetError) as err:
        load_dataset("no-such-set")
    assert "no-such-set" in str(err.value) and "glyphs" in str(err.value)


def test_unknown_option_is_named_with_valid_ones():
    with pytest.raises(DatasetError) as err:
        load_dataset("glyphs", n=62, colour="red")
    assert "colour" in str(err.value) and "per_class" in str(err.value)
    with pytest.raises(DatasetError, match="distortion"):
        load_dataset("glyphs", n=62, distortion=9)


def test_datainfo_roundtrip():
    info = DataInfo("glyphs", ["a", "b"], [1, 28, 28])
    data = info.to_dict()
    assert data == {"name": "glyphs", "class_names": ["a", "b"], "image_shape": [1, 28, 28], "value_range": [-1.0, 1.0]}
    assert DataInfo.from_dict(data) == info and info.n_classes == 2
    with pytest.raises(DatasetError, match="image_shape"):
        DataInfo.from_dict({"name": "x"})


def test_datasets_package_does_not_import_torch():
    # The data layer must stay usable without torch (checked in a clean interpreter).
    import subprocess

    code = (
        "import sys, ganport.trainer.datasets as d; d.load_dataset('fractal-dream', n=2, image_size=8);"
        "d.load_dataset('glyphs', n=62, fonts='pillow'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_range_and_split():
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    assert train.images.shape == (1438, 1, 28, 28) and len(test) == 359
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int64
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert train.info.class_names == [str(d) for d in range(10)]
    assert set(np.unique(train.labels)) == set(range(10))
    # Held-out part: no test image equals a train image.
    flat_train = {row.tobytes() for row in train.images.reshape(len(train), -1)}
    assert not any(row.tobytes() in flat_train for row in test.images.reshape(len(test), -1))


def test_digits_match_sklearn_pixels():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", image_size=8)  # native size: no resampling
    bunch = load_digits()
    raw = bunch.images.reshape(len(bunch.images), -1) / 8.0 - 1.0
    lookup = {np.round(r, 4).tobytes(): t for r, t in zip(raw, bunch.target)}
    for image, label in zip(ds.images[:50], ds.labels[:50]):
        assert lookup[np.round(image.reshape(-1).astype(np.float64), 4).tobytes()] == label


def test_digits_n_cap_is_deterministic():
    a = load_dataset("digits", n=100, seed=1)
    b = load_dataset("digits", n=100, seed=1)
    c = load_dataset("digits", n=100, seed=2)
    assert len(a) == 100
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


# ---------------------------------------------------------------------------------------------
# glyphs


def test_glyphs_shape_classes_and_determinism():
    a = load_dataset("glyphs", n=124, seed=5)
    b = load_dataset("glyphs", n=124, seed=5)
    c = load_dataset("glyphs", n=124, seed=6)
    t = load_dataset("glyphs", n=124, seed=5, split="test")
    assert a.images.shape == (124, 1, 28, 28) and a.images.dtype == np.float32
    assert a.images.min() >= -1.0 and a.images.max() <= 1.0 and a.images.max() > 0.9
    assert a.info.n_classes == 62 and a.info.class_names[:11] == list("0123456789A")
    assert a.info.class_names[36] == "a" and a.info.class_names[-1] == "z"
    np.testing.assert_array_equal(a.labels, np.arange(124) % 62)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images, t.images)


def test_glyphs_default_size_and_image_size():
    ds = load_dataset("glyphs", per_class=2)
    assert ds.images.shape == (124, 1, 28, 28)
    big = load_dataset("glyphs", n=62, image_size=48)
    assert big.images.shape == (62, 1, 48, 48) and big.info.image_shape == [1, 48, 48]


def _ink_rows(image):
    """First and last row with ink of one [-1, 1] image [1, H, W]."""
    rows = np.flatnonzero(((image[0] + 1) / 2).max(axis=1) > 0.5)
    return rows[0], rows[-1]


def test_glyphs_are_white_on_black_on_a_common_baseline():
    ds = load_dataset("glyphs", n=620, distortion=0, fonts="pillow")
    ink = (ds.images + 1) / 2
    # Background black: the border rows/columns are empty, the ink is inside, ascenders and
    # descenders included.
    assert ink[:, :, [0, -1], :].max() < 0.05 and ink[:, :, :, [0, -1]].max() < 0.05
    # Ink covers a minority of the frame (glyph on background, not inverted).
    assert 0.05 < ink.mean() < 0.3
    names = ds.info.class_names
    first = {names[k]: _ink_rows(ds.images[k]) for k in range(62)}
    # Letters without descenders end on the same row (the baseline); descenders go below it,
    # x-height letters start below the capitals: the cues between o/O, p/P, x/X...
    baseline = first["H"][1]
    assert all(abs(first[c][1] - baseline) <= 1 for c in "Hxaoz0E")
    assert all(first[c][1] >= baseline + 3 for c in "pgqy")
    assert all(first[c][0] >= first[c.upper()][0] + 3 for c in "oxswzcv")
    # Centred horizontally on the ink.
    mass = ink.sum(axis=(1, 2))
    cx = (mass * np.arange(28)).sum(1) / mass.sum(1)
    assert abs(cx.mean() - 13.5) < 1.0


def test_glyph_lookalikes_are_left_out_per_font():
    from ganport.trainer.datasets.glyphs import CLASS_NAMES, LOOKALIKE_PAIRS, LOOKALIKE_THRESHOLD, _prototypes

    protos = _prototypes(28, "all")
    # Every class keeps several fonts, and look-alike pairs were found (DejaVu Sans I/l at least).
    assert protos.available.sum(axis=0).min() >= 3
    assert not protos.available[protos.font_names.index("DejaVuSans"), CLASS_NAMES.index("l")]
    # No glyph left in the set looks like a glyph of its pair's other class, in any font.
    images = protos.images.astype(np.float32)
    for first, second in LOOKALIKE_PAIRS:
        a, b = CLASS_NAMES.index(first), CLASS_NAMES.index(second)
        for i in np.flatnonzero(protos.available[:, a]):
            for j in np.flatnonzero(protos.available[:, b]):
                for x in images[i, a]:
                    for y in images[j, b]:
                        assert np.abs(x - y).sum() >= LOOKALIKE_THRESHOLD * max(x.sum(), y.sum())
    # Samples only come from fonts that draw their class: undistorted, a class has at most
    # (its fonts x stroke weights) distinct renders.
    data = load_dataset("glyphs", n=62 * 120, distortion=0)

    def distinct(char):
        return len({img.tobytes() for img in data.images[data.labels == CLASS_NAMES.index(char)]})

    n_strokes = protos.images.shape[2]
    assert distinct("l") <= n_strokes * protos.available[:, CLASS_NAMES.index("l")].sum() < distinct("a")


def _nearest_neighbour(train_x, train_y, test_x):
    d = (test_x**2).sum(1)[:, None] - 2 * test_x @ train_x.T + (train_x**2).sum(1)[None, :]
    return train_y[d.argmin(1)]


def test_glyph_classes_are_distinct():
    # Lightly distorted glyphs from an independent random stream are recognised by a plain
    # 1-nearest-neighbour on pixels: every class renders consistently and unlike the others.
    train = load_dataset("glyphs", per_class=44, distortion=0.3)
    test = load_dataset("glyphs", per_class=10, distortion=0.3, split="test")
    pred = _nearest_neighbour(train.images.reshape(len(train), -1), train.labels, test.images.reshape(len(test), -1))
    assert (pred == test.labels).mean() > 0.88


def test_glyphs_are_learnable_with_full_distortion():
    # With the default (EMNIST-like) distortion a small PCA + RBF-SVM still reaches far above
    # chance (1/62); pooled pixels lose some of the size and baseline cues (C/c, S/s...).
    from sklearn.decomposition import PCA
    from sklearn.svm import SVC

    train = load_dataset("glyphs", per_class=50, seed=0)
    test = load_dataset("glyphs", per_class=10, seed=0, split="test")

    def features(x):  # 2x2 average pooling to 14x14
        return x.reshape(len(x), 14, 2, 14, 2).mean((2, 4)).reshape(len(x), -1)

    pca = PCA(40, random_state=0).fit(features(train.images))
    svm = SVC(C=10).fit(pca.transform(features(train.images)), train.labels)
    pred = svm.predict(pca.transform(features(test.images)))
    assert (pred == test.labels).mean() > 0.6
    names = np.array(train.info.class_names)
    merge = {c: g[0] for g in ["0Oo", "1Il", "Cc", "Kk", "Pp", "Ss", "Uu", "Vv", "Ww", "Xx", "Zz"] for c in g}
    merged = np.array([merge.get(c, c) for c in names[pred]]) == np.array([merge.get(c, c) for c in names[test.labels]])
    assert merged.mean() > 0.65


def test_glyphs_pillow_font_fallback():
    from ganport.trainer.datasets.glyphs import glyph_fonts

    assert glyph_fonts("pillow") == ["pillow-default"]
    assert len(glyph_fonts("all")) > 5
    ds = load_dataset("glyphs", n=62, fonts="pillow", distortion=0)
    assert ds.images.shape == (62, 1, 28, 28)
    # All 62 renders differ from each other.
    assert len({img.tobytes() for img in ds.images}) == 62


def test_bad_common_arguments():
    with pytest.raises(DatasetError, match="split"):
        load_dataset("digits", split="validation")
    with pytest.raises(DatasetError, match="variant='balanced'"):
        load_dataset("emnist", split="balanced")
    with pytest.raises(DatasetError, match="n must be"):
        load_dataset("digits", n=0)
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset("digits", image_size=-3)
    with pytest.raises(DatasetError, match="root"):
        load_dataset("mnist")
    assert len(load_dataset("digits", n=np.int64(3))) == 3


# ---------------------------------------------------------------------------------------------
# fractal-dream


def test_fractal_dream_shapes_params_and_determinism():
    from ganport.trainer.datasets.fractal import MIN_COVERAGE

    a = load_dataset("fractal-dream", n=24, seed=1)
    b = load_dataset("fractal-dream", n=24, seed=1)
    c = load_dataset("fractal-dream", n=24, seed=2)
    t = load_dataset("fractal-dream", n=24, seed=1, split="test")
    assert a.images.shape == (24, 1, 32, 32) and a.images.dtype == np.float32
    assert a.labels is None and a.info.class_names == [] and a.info.n_classes == 0
    assert a.params.shape == (24, 4) and a.params.dtype == np.float32
    assert (np.abs(a.params[:, :2]) <= 3).all() and ((a.params[:, 2:] >= 0.5) & (a.params[:, 2:] <= 1.5)).all()
    assert a.images.min() == -1.0 and a.images.max() == 1.0
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params) and not np.array_equal(a.params, t.params)
    # Every image shows an attractor, not a collapsed orbit.
    assert ((a.images > -1).mean(axis=(1, 2, 3)) >= MIN_COVERAGE).all()
    # Different parameters give different images.
    assert len({img.tobytes() for img in a.images}) == 24


def test_render_attractor_reproduces_dataset_images():
    from ganport.trainer.datasets.fractal import render_attractor

    ds = load_dataset("fractal-dream", n=6, seed=4, palette=3, image_size=24, iterations=60)
    assert ds.images.shape == (6, 3, 24, 24) and ds.info.image_shape == [3, 24, 24]
    # Rendering a subset on its own (a different batch) gives the very same pixels.
    again = render_attractor(ds.params[2:5], image_size=24, channels=3, iterations=60)
    np.testing.assert_allclose(again, ds.images[2:5], atol=1e-6)
    # A nearby parameter vector gives a nearby but different image; a far one a different one.
    near = render_attractor(ds.params[:1] + np.float32(0.01), 24, 3, 60)
    far = render_attractor(ds.params[1:2], 24, 3, 60)
    d_near = np.abs(near - ds.images[:1]).mean()
    d_far = np.abs(far - ds.images[:1]).mean()
    assert 0 < d_near < d_far


def test_fractal_dream_bad_palette():
    with pytest.raises(DatasetError, match="palette"):
        load_dataset("fractal-dream", n=2, palette=2)


# ---------------------------------------------------------------------------------------------
# File loaders: every test writes small files in the real on-disk format.


def _pattern(n, *shape, seed=0):
    """Random uint8 images: asymmetric, so a flipped or transposed read would be caught."""
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _to_uint8(images):
    return np.round((images + 1.0) * 127.5).astype(np.uint8)


def write_idx(path, array, magic=None):
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends with .gz."""
    import gzip

    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def mnist_root(tmp_path):
    raw = tmp_path / "raw"  # a common layout: files in root/raw
    raw.mkdir()
    train_x, train_y = _pattern(7, 28, 28), np.array([5, 0, 4, 1, 9, 2, 1], np.uint8)
    test_x, test_y = _pattern(3, 28, 28, seed=1), np.array([7, 2, 1], np.uint8)
    write_idx(raw / "train-images-idx3-ubyte.gz", train_x)  # gzipped
    write_idx(raw / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)  # plain
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return tmp_path, (train_x, train_y), (test_x, test_y)


def test_mnist_reads_gzipped_and_plain_idx(mnist_root):
    root, (train_x, train_y), (test_x, test_y) = mnist_root
    train = load_dataset("mnist", root)
    test = load_dataset("mnist", root, split="test")
    assert train.images.shape == (7, 1, 28, 28) and train.images.dtype == np.float32
    np.testing.assert_array_equal(_to_uint8(train.images[:, 0]), train_x)
    np.testing.assert_array_equal(train.labels, train_y.astype(np.int64))
    np.testing.assert_array_equal(_to_uint8(test.images[:, 0]), test_x)
    np.testing.assert_array_equal(test.labels, test_y)
    assert train.info.class_names == [str(d) for d in range(10)] and train.info.name == "mnist"
    assert train.images.min() >= -1 and train.images.max() <= 1


def test_idx_n_cap_and_resize(mnist_root):
    root, (train_x, train_y), _ = mnist_root
    a = load_dataset("mnist", root, n=4, seed=3)
    b = load_dataset("mnist", root, n=4, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    # The subset is made of real (image, label) pairs from the file.
    for image, label in zip(_to_uint8(a.images[:, 0]), a.labels):
        (match,) = [i for i in range(7) if np.array_equal(train_x[i], image)]
        assert train_y[match] == label
    small = load_dataset("mnist", root, image_size=14)
    assert small.images.shape == (7, 1, 14, 14) and small.info.image_shape == [1, 14, 14]
    # 2x downsampling averages 2x2 blocks (up to the triangle filter's weights).
    block = train_x.reshape(7, 14, 2, 14, 2).astype(np.float32).mean((2, 4)) / 127.5 - 1
    assert np.abs(small.images[:, 0] - block).mean() < 0.15


def test_fashion_mnist_class_names(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", _pattern(2, 28, 28))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 9], np.uint8))
    ds = load_dataset("fashion-mnist", tmp_path, split="test")
    assert ds.info.class_names[0] == "T-shirt/top" and ds.info.class_names[9] == "Ankle boot"
    assert [ds.info.class_names[i] for i in ds.labels] == ["T-shirt/top", "Ankle boot"]


def test_idx_missing_file_is_named(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", _pattern(2, 28, 28))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def test_idx_bad_magic_is_named(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", _pattern(2, 28, 28), magic=0x1234)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2], np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "0x00001234" in msg and "0x00000803" in msg


def test_idx_truncated_file_is_named(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", _pattern(3, 28, 28))
    path.write_bytes(path.read_bytes()[:-100])
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2, 3], np.uint8))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: truncated"):
        load_dataset("mnist", tmp_path)


def test_idx_truncated_gzip_is_named(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", _pattern(3, 28, 28))
    path.write_bytes(path.read_bytes()[:40])
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2, 3], np.uint8))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz"):
        load_dataset("mnist", tmp_path)


def test_idx_count_mismatch_names_both_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", _pattern(3, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2], np.uint8))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value) and "train-labels-idx1-ubyte" in str(err.value)


def test_idx_labels_out_of_range(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", _pattern(2, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 12], np.uint8))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte: label 12"):
        load_dataset("mnist", tmp_path)


def test_emnist_letters_transposed_with_mapping(tmp_path):
    gz = tmp_path / "gzip"  # the layout of the official EMNIST archive
    gz.mkdir()
    upright = _pattern(4, 28, 28)
    # EMNIST stores every image transposed; labels of "letters" are 1..26.
    write_idx(gz / "emnist-letters-train-images-idx3-ubyte.gz", upright.transpose(0, 2, 1))
    write_idx(gz / "emnist-letters-train-labels-idx1-ubyte.gz", np.array([1, 26, 3, 1], np.uint8))
    (gz / "emnist-letters-mapping.txt").write_text("".join(f"{i} {64 + i} {96 + i}\n" for i in range(1, 27)))
    ds = load_dataset("emnist", tmp_path, variant="letters")
    np.testing.assert_array_equal(_to_uint8(ds.images[:, 0]), upright)
    np.testing.assert_array_equal(ds.labels, [0, 25, 2, 0])
    assert ds.info.class_names == [chr(c) for c in range(65, 91)]


def test_emnist_default_mapping_and_bad_mapping_line(tmp_path):
    write_idx(tmp_path / "emnist-byclass-test-images-idx3-ubyte", _pattern(2, 28, 28))
    write_idx(tmp_path / "emnist-byclass-test-labels-idx1-ubyte", np.array([10, 61], np.uint8))
    ds = load_dataset("emnist", tmp_path, split="test")  # no mapping file: standard byclass
    assert ds.info.n_classes == 62 and [ds.info.class_names[i] for i in ds.labels] == ["A", "z"]
    (tmp_path / "emnist-byclass-mapping.txt").write_text("0 48\n1 forty-nine\n")
    with pytest.raises(DatasetError, match=r"emnist-byclass-mapping.txt: line 2"):
        load_dataset("emnist", tmp_path, split="test")
    with pytest.raises(DatasetError, match="variant"):
        load_dataset("emnist", tmp_path, variant="everything")


def test_emnist_balanced_mapping_file_defines_classes(tmp_path):
    write_idx(tmp_path / "emnist-balanced-train-images-idx3-ubyte", _pattern(2, 28, 28))
    write_idx(tmp_path / "emnist-balanced-train-labels-idx1-ubyte", np.array([2, 0], np.uint8))
    (tmp_path / "emnist-balanced-mapping.txt").write_text("0 48\n1 49\n2 97\n")
    ds = load_dataset("emnist", tmp_path, variant="balanced")
    assert ds.info.class_names == ["0", "1", "a"] and ds.labels.tolist() == [2, 0]


def test_idx_gzip_is_told_by_its_magic_bytes_not_its_name(tmp_path):
    # A plain IDX file named .gz and a gzip file without .gz: both load.
    train_x, train_y = _pattern(3, 28, 28), np.array([1, 2, 3], np.uint8)
    write_idx(tmp_path / "plain.idx", train_x).rename(tmp_path / "train-images-idx3-ubyte.gz")
    write_idx(tmp_path / "packed.gz", train_y).rename(tmp_path / "train-labels-idx1-ubyte")
    assert (tmp_path / "train-labels-idx1-ubyte").read_bytes()[:2] == b"\x1f\x8b"
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(_to_uint8(ds.images[:, 0]), train_x)
    np.testing.assert_array_equal(ds.labels, train_y)
    # Corrupt gzip data (right magic, broken stream) is still named as such.
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: gzip data is corrupt"):
        load_dataset("mnist", tmp_path)


def test_idx_file_inside_a_folder_of_the_same_name(tmp_path):
    # What unpacking train-images-idx3-ubyte.gz with some tools leaves behind.
    train_x, train_y = _pattern(2, 28, 28), np.array([4, 7], np.uint8)
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y)):
        (tmp_path / name).mkdir()
        write_idx(tmp_path / name / name, array)
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(_to_uint8(ds.images[:, 0]), train_x)
    np.testing.assert_array_equal(ds.labels, train_y)


def test_idx_missing_split_and_half_split_are_told_apart(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", _pattern(2, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2], np.uint8))
    with pytest.raises(SplitNotFoundError, match="t10k-images-idx3-ubyte not found"):
        load_dataset("mnist", tmp_path, split="test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", _pattern(2, 28, 28))
    with pytest.raises(DatasetError, match="not t10k-labels-idx1-ubyte") as err:
        load_dataset("mnist", tmp_path, split="test")
    assert not isinstance(err.value, SplitNotFoundError)  # an incomplete split is not a missing one


def test_emnist_short_mapping_file_is_blamed(tmp_path):
    write_idx(tmp_path / "emnist-balanced-train-images-idx3-ubyte", _pattern(3, 28, 28))
    write_idx(tmp_path / "emnist-balanced-train-labels-idx1-ubyte", np.array([0, 46, 2], np.uint8))
    (tmp_path / "emnist-balanced-mapping.txt").write_text("0 48\n1 49\n2 50\n")  # cut short
    with pytest.raises(DatasetError) as err:
        load_dataset("emnist", tmp_path, variant="balanced")
    message = str(err.value)
    assert message.startswith("emnist-balanced-mapping.txt: lists 3 classes")
    assert "emnist-balanced-train-labels-idx1-ubyte holds label 46" in message and "mapping" in err.value.hint
    # Without the mapping file the standard balanced classes (47) hold label 46.
    (tmp_path / "emnist-balanced-mapping.txt").unlink()
    assert load_dataset("emnist", tmp_path, variant="balanced").info.class_names[46] == "t"


# -- CIFAR --------------------------------------------------------------------------------------


def _write_pickle(path, obj, protocol=2):
    import pickle

    path.write_bytes(pickle.dumps(obj, protocol=protocol))


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def cifar10_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i in range(1, 6):
        data = _pattern(3, 3072, seed=i)
        labels = [int(v) for v in np.random.default_rng(i).integers(0, 10, 3)]
        # The real batches are dicts with (Python 2 str ->) bytes keys.
        _write_pickle(
            folder / f"data_batch_{i}",
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [b"x.png"] * 3,
            },
        )
        batches.append((data, labels))
    _write_pickle(folder / "test_batch", {b"labels": [3], b"data": _pattern(1, 3072, seed=9)}, protocol=5)
    _write_pickle(
        folder / "batches.meta",
        {
            b"label_names": [n.encode() for n in CIFAR10_NAMES],
            b"num_cases_per_batch": 3,
            b"num_vis": 3072,
        },
    )
    return tmp_path, batches


def test_cifar10_reads_python_batches(cifar10_root):
    root, batches = cifar10_root
    ds = load_dataset("cifar10", root)
    data = np.concatenate([d for d, _ in batches])
    labels = [label for _, batch_labels in batches for label in batch_labels]
    assert ds.images.shape == (15, 3, 32, 32) and ds.info.class_names == CIFAR10_NAMES
    # Row i is three 32x32 planes R, G, B.
    np.testing.assert_array_equal(_to_uint8(ds.images), data.reshape(15, 3, 32, 32))
    assert ds.labels.tolist() == labels
    test = load_dataset("cifar10", root, split="test")  # written at pickle protocol 5
    assert test.labels.tolist() == [3]
    np.testing.assert_array_equal(_to_uint8(test.images).reshape(-1), _pattern(1, 3072, seed=9)[0])


def test_cifar_refuses_code_in_pickle(cifar10_root, tmp_path):
    import os

    root, _ = cifar10_root
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    _write_pickle(root / "cifar-10-batches-py" / "test_batch", {b"data": Evil(), b"labels": [0]})
    with pytest.raises(DatasetError, match=r"test_batch: .*not allowed"):
        load_dataset("cifar10", root, split="test")
    assert not marker.exists()


def test_cifar_malformed_batches(cifar10_root):
    root, _ = cifar10_root
    folder = root / "cifar-10-batches-py"
    _write_pickle(folder / "test_batch", {b"data": _pattern(2, 1000), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match=r"test_batch: 'data' is uint8 \(2, 1000\)"):
        load_dataset("cifar10", root, split="test")
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(X")  # truncated pickle
    with pytest.raises(DatasetError, match="test_batch: not a CIFAR python batch"):
        load_dataset("cifar10", root, split="test")
    (folder / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match="data_batch_4 not found"):
        load_dataset("cifar10", root)


def test_cifar100_fine_and_coarse(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = _pattern(4, 3072)
    _write_pickle(
        folder / "train",
        {
            b"filenames": [b"a.png"] * 4,
            b"batch_label": b"training batch 1 of 1",
            b"fine_labels": [0, 99, 42, 7],
            b"coarse_labels": [4, 19, 0, 3],
            b"data": data,
        },
    )
    _write_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )
    fine = load_dataset("cifar100", tmp_path)
    coarse = load_dataset("cifar100", tmp_path, label_mode="coarse", image_size=16)
    assert fine.info.n_classes == 100 and fine.labels.tolist() == [0, 99, 42, 7]
    assert fine.info.class_names[99] == "fine99"
    np.testing.assert_array_equal(_to_uint8(fine.images), data.reshape(4, 3, 32, 32))
    assert coarse.info.n_classes == 20 and coarse.labels.tolist() == [4, 19, 0, 3]
    assert coarse.images.shape == (4, 3, 16, 16)
    with pytest.raises(DatasetError, match="test not found"):
        load_dataset("cifar100", tmp_path, split="test")


# -- STL-10 -------------------------------------------------------------------------------------


def _write_stl(folder, split, images, labels=None):
    # On disk each channel is column-major: write the transpose of the upright image.
    (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
    if labels is not None:
        (folder / f"{split}_y.bin").write_bytes(np.asarray(labels, np.uint8).tobytes())


@pytest.fixture
def stl_root(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    train = _pattern(3, 3, 96, 96)
    _write_stl(folder, "train", train, [1, 10, 4])
    unlabeled = _pattern(5, 3, 96, 96, seed=2)
    _write_stl(folder, "unlabeled", unlabeled)
    return tmp_path, names, train, unlabeled


def test_stl10_column_major_images_and_labels(stl_root):
    root, names, train, unlabeled = stl_root
    ds = load_dataset("stl10", root)
    np.testing.assert_array_equal(_to_uint8(ds.images), train)
    assert ds.labels.tolist() == [0, 9, 3] and ds.info.class_names == names
    un = load_dataset("stl10", root, split="unlabeled", n=2, seed=1, image_size=48)
    assert un.labels is None and un.images.shape == (2, 3, 48, 48) and un.info.class_names == []
    full = load_dataset("stl10", root, split="unlabeled", image_size=96)
    np.testing.assert_array_equal(_to_uint8(full.images), unlabeled)


def test_stl10_malformed(stl_root):
    root, _, _, _ = stl_root
    folder = root / "stl10_binary"
    x = folder / "train_X.bin"
    x.write_bytes(x.read_bytes()[:-5])
    with pytest.raises(DatasetError, match=r"train_X.bin: .*not a whole number"):
        load_dataset("stl10", root)
    _write_stl(folder, "train", _pattern(2, 3, 96, 96), [1, 11])
    with pytest.raises(DatasetError, match=r"train_y.bin: labels must be 1..10"):
        load_dataset("stl10", root)
    _write_stl(folder, "train", _pattern(2, 3, 96, 96), [1])
    with pytest.raises(DatasetError, match=r"train_y.bin holds 1 labels but train_X.bin holds 2"):
        load_dataset("stl10", root)
    with pytest.raises(DatasetError, match="test_X.bin not found"):
        load_dataset("stl10", root, split="test")


# -- folder -------------------------------------------------------------------------------------


def _save_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_subfolder_labels_crop_and_channels(tmp_path):
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 200
    # A wide image: the centre square is white, the side strips (cropped away) are black.
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255
    _save_png(tmp_path / "dog" / "b.png", red)
    _save_png(tmp_path / "cat" / "nested" / "a.png", wide)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset("folder", tmp_path, labels="subfolders", image_size=16)
    assert ds.info.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1]
    assert ds.images.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(ds.images[0], 1.0, atol=1e-6)  # only the white centre is left
    np.testing.assert_allclose(ds.images[1, 0], 200 / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(ds.images[1, 1:], -1.0)
    gray = load_dataset("folder", tmp_path, channels=1)
    assert gray.images.shape == (2, 1, 64, 64) and gray.labels is None and gray.info.class_names == []


def test_folder_errors_and_test_split(tmp_path):
    for i in range(10):
        _save_png(tmp_path / "faces" / f"{i:02d}.png", np.full((8, 8, 3), i * 20, np.uint8))
    root = tmp_path / "faces"
    with pytest.raises(DatasetError, match="no test split"):
        load_dataset("folder", root, split="test")
    train = load_dataset("folder", root, test_fraction=0.2, image_size=8)
    test = load_dataset("folder", root, test_fraction=0.2, split="test", image_size=8)
    assert len(train) == 8 and len(test) == 2
    assert not set(train.images[:, 0, 0, 0].tolist()) & set(test.images[:, 0, 0, 0].tolist())
    with pytest.raises(DatasetError, match="labels='subfolders'.*00.png"):
        load_dataset("folder", root, labels="subfolders")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        load_dataset("folder", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset("folder", tmp_path / "empty")
    with pytest.raises(DatasetError, match="channels"):
        load_dataset("folder", root, channels=2)


def test_folder_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    with Image.open(tmp_path / "ramp.png") as opened:
        assert opened.mode.startswith("I")  # Pillow reads it back as 16-bit (I;16 or I)
    ds = load_dataset("folder", tmp_path, channels=1, image_size=16)
    expected = np.round(ramp / 257.0) / 127.5 - 1  # each 16-bit value scaled to 8 bits
    np.testing.assert_allclose(ds.images[0, 0], expected, atol=1.5 / 127.5)
    rgb = load_dataset("folder", tmp_path, channels=3, image_size=16)
    np.testing.assert_allclose(rgb.images[0, 1], expected, atol=1.5 / 127.5)


def test_folder_transparent_images_are_composited(tmp_path):
    from PIL import Image

    # Black ink on a transparent page, and white ink on one.
    ink = np.zeros((16, 16, 4), np.uint8)
    ink[4:12, 7:9, 3] = 255  # an opaque black bar; everything else transparent (and black)
    Image.fromarray(ink, "RGBA").save(tmp_path / "a_dark.png")
    light = ink.copy()
    light[..., :3] = 255
    Image.fromarray(light, "RGBA").save(tmp_path / "b_light.png")
    ds = load_dataset("folder", tmp_path, channels=1, image_size=16)
    dark, bright = ds.images[:, 0]
    bar = np.zeros((16, 16), bool)
    bar[4:12, 7:9] = True
    # auto: dark ink over white, light ink over black; the bar is visible in both.
    np.testing.assert_allclose(dark[bar], -1.0)
    np.testing.assert_allclose(dark[~bar], 1.0)
    np.testing.assert_allclose(bright[bar], 1.0)
    np.testing.assert_allclose(bright[~bar], -1.0)
    black = load_dataset("folder", tmp_path, channels=3, image_size=16, background="black")
    np.testing.assert_allclose(black.images[1, :, ~bar], -1.0)
    white = load_dataset("folder", tmp_path, channels=1, image_size=16, background="white")
    np.testing.assert_allclose(white.images[1, 0], 1.0)  # white ink on white: the forced choice
    with pytest.raises(DatasetError, match="background") as err:
        load_dataset("folder", tmp_path, background="grey")
    assert "auto, white, black" in err.value.hint
    # A palette image with a transparent index is composited too.
    palette = Image.fromarray(np.where(bar, 1, 0).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
    palette.save(tmp_path / "c_palette.png", transparency=0)
    ds = load_dataset("folder", tmp_path, channels=1, image_size=16)
    np.testing.assert_allclose(ds.images[2, 0][~bar], 1.0)
    np.testing.assert_allclose(ds.images[2, 0][bar], -1.0)


def test_folder_without_test_split_raises_split_not_found(tmp_path):
    _save_png(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SplitNotFoundError, match="no test split"):
        load_dataset("folder", tmp_path, split="test")
