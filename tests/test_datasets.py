"""Tests for ganport.trainer.datasets: built-in sets and file loaders on files written here."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ganport.errors import DatasetError
from ganport.trainer.datasets import DataInfo, available_datasets, describe_datasets, load_dataset

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

    code = "import sys, ganport.trainer.datasets as d; d.load_dataset('digits', n=5); print('torch' in sys.modules)"
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


def test_glyphs_are_white_on_black_and_centred():
    ds = load_dataset("glyphs", n=620, distortion=0)
    ink = (ds.images + 1) / 2
    # Background black: the border rows/columns are (almost) empty, the ink is inside.
    assert ink[:, :, :2, :].max() < 0.05 and ink[:, :, -2:, :].max() < 0.05
    mass = ink.sum(axis=(1, 2))
    cy = (mass * np.arange(28)).sum(1) / mass.sum(1)
    assert abs(cy.mean() - 13.5) < 1.0
    # Ink covers a minority of the frame (glyph on background, not inverted).
    assert 0.05 < ink.mean() < 0.3


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
    # chance (1/62); the remaining errors are true look-alikes (0/O/o, I/l/1, C/c...).
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
