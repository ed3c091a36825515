"""Tests of quality measurement: reference classifier, metrics, eval/sweep/explore, EMA export.

Everything runs on scikit-learn's digits at 16x16 (the ``tiny_checkpoint`` settings) with a
reference classifier trained once per module into a temporary cache, so the module needs no
pre-trained file and stays fast on two CPU cores. Generators are real modules: a "perfect" one
that returns real test images of the requested class, and untrained networks.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from ganport.cli import main  # noqa: E402
from ganport.errors import InvalidInputError  # noqa: E402
from ganport.runtime.images import decode_png  # noqa: E402
from ganport.trainer.classifier import (ClassifierSpec, get_classifier, load_classifier,  # noqa: E402
                                        train_classifier)
from ganport.trainer.datasets import load_dataset  # noqa: E402
from ganport.trainer.evaluation import (RealReference, evaluate, evaluate_during_training,  # noqa: E402
                                        feature_frechet_distance, format_report, frechet_distance, open_source,
                                        precision_recall, source_from_modules)
from ganport.trainer.models import CondMLPGenerator  # noqa: E402

SIZE = 16  # tiny_checkpoint's image size
#: Classifier training options of this module (the eval CLI tests pass the same, so they hit the cache).
CLF_EPOCHS = 6
TINY_TRAIN = {"image_size": SIZE, "n_samples": 64, "latent_dim": 8, "device": "cpu",
              "sample_interval": 2, "checkpoint_interval": 2, "log_every": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads run ~5x slower, not faster."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("classifiers")


@pytest.fixture(scope="module")
def reference(cache_dir: Path) -> RealReference:
    """Digits 16x16 reference: classifier trained once (cached in ``cache_dir``), all 359 test images."""
    return RealReference.build(ClassifierSpec("digits", SIZE, epochs=CLF_EPOCHS), 359, cache_dir)


class RealImageGenerator(nn.Module):
    """A "perfect" conditional generator: returns real test images of the requested class.

    z picks which image of the class (so different z give different images), as a generator would.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, n_classes: int):
        super().__init__()
        per_class = min(int((labels == k).sum()) for k in range(n_classes))
        bank = np.stack([images[labels == k][:per_class] for k in range(n_classes)])
        self.register_buffer("bank", torch.from_numpy(bank))  # [K, M, C, H, W]
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        index = (z[:, 0].abs() * 1000).long() % self.bank.shape[1]
        return self.bank[label, index]


def _digits_source(generator: nn.Module, kind: str = "cgan", latent_dim: int = 8):
    names = [str(d) for d in range(10)]
    return source_from_modules(kind, generator, latent_dim=latent_dim, class_names=names,
                               image_shape=[1, SIZE, SIZE], dataset="digits")


# ------------------------------------------------------------------------------ classifier


def test_classifier_on_a_small_subset_beats_chance_by_far(tmp_path):
    clf = train_classifier(ClassifierSpec("digits", SIZE, train_n=300, epochs=4), progress=lambda _: None)
    assert clf.task == "classification" and clf.n_classes == 10
    assert clf.test_metrics["n_test"] == 359
    assert clf.test_metrics["accuracy"] > 0.6  # chance is 0.1
    test = load_dataset("digits", image_size=SIZE, split="test")
    assert (clf.predict(test.images) == test.labels).mean() == pytest.approx(clf.test_metrics["accuracy"])
    features, logits = clf.embed(test.images[:5])
    assert features.shape == (5, 128) and logits.shape == (5, 10)


def test_reference_classifier_is_accurate_cached_and_weights_only(reference, cache_dir):
    clf = reference.classifier
    assert clf.test_metrics["accuracy"] >= 0.95, clf.describe()
    path = clf.path
    assert path.parent == cache_dir and path.name.startswith(f"digits-{SIZE}-")
    torch.load(path, weights_only=True)  # no pickled classes
    mtime = path.stat().st_mtime_ns
    again = get_classifier(ClassifierSpec("digits", SIZE, epochs=CLF_EPOCHS), cache_dir)
    assert again.path == path and path.stat().st_mtime_ns == mtime  # loaded, not retrained
    assert again.test_metrics == clf.test_metrics
    images = reference.images[:16]
    np.testing.assert_allclose(again.embed(images)[1], clf.embed(images)[1], atol=1e-5)
    # Other options -> another file.
    assert ClassifierSpec("digits", SIZE, epochs=1).cache_name() != path.name


def test_generated_sets_give_their_judge_more_training_images():
    from ganport.trainer.classifier import _train_n, load_reference_data
    from ganport.trainer.datasets.registry import REGISTRY

    # glyphs renders as many images as asked: its judge trains on 100,000 unless told otherwise.
    assert _train_n(ClassifierSpec("glyphs", 28)) == REGISTRY["glyphs"].reference_train_n == 100_000
    assert _train_n(ClassifierSpec("glyphs", 28, train_n=500)) == 500
    assert _train_n(ClassifierSpec("digits", 28)) is None  # a fixed set: all of its training split
    # The resolved size is part of the cache key: a registry change retrains instead of reusing.
    assert ClassifierSpec("glyphs", 28).key() == ClassifierSpec("glyphs", 28, train_n=100_000).key()
    assert ClassifierSpec("glyphs", 28).key() != ClassifierSpec("glyphs", 28, train_n=50_000).key()
    train, test = load_reference_data(ClassifierSpec("digits", 28))
    assert len(train.images) == 1438 and len(test.images) == 359


def test_reference_classifier_reads_shapes_through_speckle_noise(reference):
    # Generators leave isolated bright pixels; a judge trained only on clean images collapses on
    # them (glyphs: 97% -> 24% with 3% speckles before noise augmentation).
    rng = np.random.default_rng(0)
    speckled = reference.images.copy()
    speckled[rng.random(speckled.shape) < 0.03] = 1.0
    assert (reference.classifier.predict(speckled) == reference.labels).mean() >= 0.9


def test_same_spec_trains_the_same_judge_whatever_ran_before():
    spec = ClassifierSpec("digits", SIZE, train_n=200, epochs=2)
    torch.manual_seed(1)
    first = train_classifier(spec, progress=lambda _: None)
    torch.manual_seed(2)
    torch.rand(5)
    state = torch.random.get_rng_state()
    second = train_classifier(spec, progress=lambda _: None)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG stream is untouched
    for (name, a), b in zip(first.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(a, b), name


def test_corrupt_or_mismatched_cache_file_is_retrained(tmp_path, reference):
    spec = ClassifierSpec("digits", SIZE, train_n=100, epochs=1)
    (tmp_path / spec.cache_name()).write_bytes(b"not a checkpoint")
    clf = get_classifier(spec, tmp_path, progress=lambda _: None)
    assert load_classifier(clf.path).test_metrics == clf.test_metrics
    assert load_classifier(clf.path).spec == spec
    # A valid file of other options under this name is not trusted either.
    (tmp_path / spec.cache_name()).write_bytes(reference.classifier.path.read_bytes())
    assert get_classifier(spec, tmp_path, progress=lambda _: None).spec == spec


def _write_idx(path: Path, array: np.ndarray) -> Path:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())
    return path


def _mnist_files(root: Path, n_train: int = 40, n_test: int = 10, test: bool = True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    _write_idx(root / "train-labels-idx1-ubyte", (np.arange(n_train) % 10).astype(np.uint8))
    if test:
        _write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
        _write_idx(root / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8))
    return root


def test_only_a_missing_test_split_falls_back_to_the_training_split(tmp_path):
    from ganport.errors import DatasetError
    from ganport.trainer.classifier import load_reference_data, load_test_data

    root = _mnist_files(tmp_path / "mnist", test=False)
    held_out = load_test_data(ClassifierSpec("mnist", 28, data_root=str(root)), 100)
    assert len(held_out.images) == 4  # the last 10% of 40 training images
    _mnist_files(root)
    assert len(load_test_data(ClassifierSpec("mnist", 28, data_root=str(root)), 100).images) == 10
    test_images = root / "t10k-images-idx3-ubyte"
    test_images.write_bytes(test_images.read_bytes()[:-50])  # truncated: corrupt, not missing
    spec = ClassifierSpec("mnist", 28, data_root=str(root))
    for load in (lambda: load_test_data(spec, 100), lambda: load_reference_data(spec)):
        with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte: truncated"):
            load()


def test_eval_of_a_corrupt_test_split_is_a_clean_error(tiny_checkpoint, tmp_path, capsys):
    root = _mnist_files(tmp_path / "mnist")
    (root / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")  # header cut short
    checkpoint = tiny_checkpoint("cgan")
    capsys.readouterr()
    rc = main(["eval", str(checkpoint), "--dataset", "mnist", "--data-root", str(root),
               "-n", "50", "--cache-dir", str(tmp_path / "cache"), "--classifier-epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: t10k-labels-idx1-ubyte: truncated IDX header") and err.count("\n") == 1
    assert not list((tmp_path / "cache").glob("*.pt"))  # no judge trained on a stand-in split


def test_judge_cache_key_covers_the_data_files(tmp_path):
    root = _mnist_files(tmp_path / "mnist")
    key = ClassifierSpec("mnist", 28, data_root=str(root)).key()
    assert ClassifierSpec("mnist", 28, data_root=str(root)).key() == key  # same files, same judge
    labels = root / "t10k-labels-idx1-ubyte"
    data = labels.read_bytes()
    labels.write_bytes(data[:-1] + bytes([(data[-1] + 1) % 10]))  # same size, new mtime
    os_stat = labels.stat()
    import os

    os.utime(labels, ns=(os_stat.st_atime_ns, os_stat.st_mtime_ns + 10**9))
    second = ClassifierSpec("mnist", 28, data_root=str(root)).key()
    assert second != key
    _write_idx(root / "t10k-images-idx3-ubyte", np.zeros((12, 28, 28), np.uint8))  # another size
    assert ClassifierSpec("mnist", 28, data_root=str(root)).key() not in (key, second)
    (tmp_path / "elsewhere").mkdir()
    assert ClassifierSpec("digits", 28, data_root=str(tmp_path / "elsewhere")).data_fingerprint is None  # built-in


# ------------------------------------------------------------------------------ metrics


def test_frechet_distance_closed_form():
    # 1-D Gaussians: FD = (mu1 - mu2)^2 + (s1 - s2)^2.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(5.0)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert feature_frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fd_real_vs_real_is_far_below_real_vs_noise(reference):
    noise = np.random.default_rng(0).uniform(-1, 1, reference.images.shape).astype(np.float32)
    fd_noise = feature_frechet_distance(reference.features, reference.classifier.embed(noise)[0])
    assert reference.fd_real_vs_real < fd_noise / 10


def test_lookalike_groups_merge_same_shape_classes_of_mixed_case_alphabets():
    from ganport.trainer.datasets.glyphs import CLASS_NAMES
    from ganport.trainer.evaluation import lookalike_groups

    groups = lookalike_groups(CLASS_NAMES)
    group_of = dict(zip(CLASS_NAMES, groups.tolist()))
    assert group_of["O"] == group_of["o"] == group_of["0"] and group_of["I"] == group_of["l"] == group_of["1"]
    assert group_of["W"] == group_of["w"] and group_of["A"] != group_of["a"] and group_of["8"] != group_of["B"]
    assert len(set(groups.tolist())) == 44
    assert lookalike_groups([str(d) for d in range(10)]) is None


def test_precision_recall_separates_overlap_from_disjoint():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 4))
    assert min(precision_recall(real, rng.normal(size=(300, 4)))) > 0.8
    assert max(precision_recall(real, rng.normal(size=(300, 4)) + 20.0)) == 0.0


def test_perfect_generator_scores_high_and_untrained_one_low(reference):
    perfect = RealImageGenerator(reference.images, reference.labels, 10)
    good = evaluate(_digits_source(perfect), n=500, reference=reference)
    torch.manual_seed(0)
    untrained = evaluate(_digits_source(CondMLPGenerator(8, 10, [1, SIZE, SIZE])), n=500, reference=reference)
    # Real images of class y are classified y as often as the classifier is right on real data.
    assert good.conditional_accuracy >= 0.95
    assert good.conditional_accuracy == pytest.approx(reference.classifier.test_metrics["accuracy"], abs=0.03)
    assert untrained.conditional_accuracy < 0.3  # chance 0.1
    assert set(good.per_class_accuracy) == {str(d) for d in range(10)}
    # FD: the perfect generator is near real-vs-real at equal sample sizes, the untrained one far above.
    assert good.fd_equal_n < 2 * good.fd_real_vs_real
    assert untrained.fd > 10 * good.fd
    assert good.precision > 0.8 and good.recall > 0.5
    assert untrained.precision < 0.2

    # A generator that ignores z (one image per class) still scores on accuracy but not on recall.
    class OneImagePerClass(RealImageGenerator):
        def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return self.bank[label, 0]

    collapsed = evaluate(_digits_source(OneImagePerClass(reference.images, reference.labels, 10)), n=500,
                         reference=reference)
    assert collapsed.conditional_accuracy >= 0.9 and collapsed.recall < 0.1 < good.recall
    assert "mode collapse" in format_report(collapsed) and "mode collapse" not in format_report(good)


def test_eval_result_is_typed_and_round_trips_through_json(reference):
    from ganport.trainer.eval_result import EvalResult

    result = evaluate(_digits_source(RealImageGenerator(reference.images, reference.labels, 10)), n=200,
                      reference=reference)
    assert isinstance(result, EvalResult) and result.classifier.task == "classification"
    data = json.loads(json.dumps(result.to_dict()))
    assert "reconstruction" not in data and "class_histogram" not in data  # what does not apply is left out
    assert "test_r2" not in data["classifier"] and data["classifier"]["test_accuracy"] > 0.9
    assert EvalResult.from_dict(data) == result
    with pytest.raises(InvalidInputError, match="unknown key.*accuracy"):
        EvalResult.from_dict({**data, "accuracy": 1.0})
    assert set(result.log_metrics()) == {"eval_fd", "eval_fd_equal_n", "eval_fd_real", "eval_cond_acc",
                                         "eval_precision", "eval_recall", "eval_seconds"}


def test_worst_classes_never_round_up_to_a_perfect_score(reference):
    import dataclasses

    result = evaluate(_digits_source(RealImageGenerator(reference.images, reference.labels, 10)), n=100,
                      reference=reference, precision_recall_samples=0)
    per_class = {str(d): 1.0 for d in range(10)} | {"3": 0.995, "7": 0.18}
    shown = dataclasses.replace(result, per_class_accuracy=per_class,
                                per_class_accuracy_real={k: 0.9996 for k in per_class})
    (line,) = [line for line in format_report(shown).splitlines() if line.startswith("worst classes")]
    assert "7 18.0% (99.9%), 3 99.5% (99.9%), " in line and "100%" in line  # only perfect classes read 100%


def test_evaluate_during_training_returns_loggable_floats(reference, cache_dir):
    from ganport.trainer.config import TrainConfig
    from ganport.trainer.datasets import DataInfo

    config = TrainConfig(kind="cgan", dataset="digits", image_size=SIZE, latent_dim=8)
    info = DataInfo("digits", [str(d) for d in range(10)], [1, SIZE, SIZE])
    generator = RealImageGenerator(reference.images, reference.labels, 10).train()
    row = evaluate_during_training(config, info, generator, n=200, cache_dir=cache_dir,
                                   classifier_options={"epochs": CLF_EPOCHS})
    assert {"eval_fd", "eval_fd_real", "eval_cond_acc", "eval_seconds"} <= set(row)
    assert all(isinstance(v, float) for v in row.values())
    assert row["eval_cond_acc"] > 0.9
    assert generator.training  # mode restored


# ------------------------------------------------------------------------------ eval CLI


def _eval_cli(model: Path, out: Path, cache_dir: Path, *extra: str) -> dict:
    rc = main(["eval", str(model), "--dataset", "digits", "-n", "200", "--out", str(out),
               "--cache-dir", str(cache_dir), "--classifier-epochs", str(CLF_EPOCHS), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_eval_cli_on_a_tiny_cgan_checkpoint(tiny_checkpoint, reference, cache_dir, tmp_path, capsys):
    results = _eval_cli(tiny_checkpoint("cgan"), tmp_path / "eval.json", cache_dir)
    expected = {"model", "kind", "dataset", "n_generated", "n_real", "classifier", "fd", "fd_equal_n",
                "fd_real_vs_real", "fd_half_n",
                "precision", "recall", "conditional_accuracy", "per_class_accuracy", "seconds"}
    assert expected <= set(results)
    assert results["kind"] == "cgan" and results["n_generated"] == 200
    assert results["classifier"]["path"] == str(reference.classifier.path)  # the cached one
    assert 0.0 <= results["conditional_accuracy"] <= 1.0 and len(results["per_class_accuracy"]) == 10
    assert "conditional_accuracy_merged" not in results  # digits have no look-alike classes
    assert results["per_class_accuracy_real"] == dict(zip(
        [str(d) for d in range(10)], reference.classifier.test_metrics["per_class_accuracy"]))
    assert results["n_real"] == 200 and results["fd_real_vs_real"] > 0  # halves of 200 real images
    out = capsys.readouterr().out
    assert "conditional accuracy" in out and "real vs real" in out and "worst classes" in out


def test_eval_cli_on_a_tiny_aae_reports_reconstruction_and_latents(tiny_checkpoint, reference, cache_dir, tmp_path):
    results = _eval_cli(tiny_checkpoint("aae"), tmp_path / "aae.json", cache_dir)
    assert {"reconstruction", "latent", "fd"} <= set(results)
    assert "conditional_accuracy" not in results and "classes_covered" in results
    rec = results["reconstruction"]
    assert rec["mse"] > 0 and rec["psnr"] == pytest.approx(10 * np.log10(4 / rec["mse"]))
    assert len(results["latent"]["std_per_dim"]) == 8


def test_eval_of_a_run_checkpoint_keeps_its_json_in_the_run(tiny_checkpoint, reference, cache_dir, capsys):
    ckpt = Path(tiny_checkpoint("cgan"))
    expected = ckpt.parent.parent / "eval" / "latest-digits.json"
    expected.unlink(missing_ok=True)
    assert main(["eval", str(ckpt), "--dataset", "digits", "-n", "100", "--pr-samples", "0",
                 "--cache-dir", str(cache_dir), "--classifier-epochs", str(CLF_EPOCHS)]) == 0
    assert json.loads(expected.read_text())["n_generated"] == 100
    assert f"results: {expected}" in capsys.readouterr().out


def test_eval_of_unknown_model_is_a_clean_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing"), "--dataset", "digits"]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_eval_against_an_unknown_data_set_is_one_error_line_without_a_warning(tiny_checkpoint, capsys, caplog):
    ckpt = tiny_checkpoint("cgan")
    capsys.readouterr()  # the fixture's training output
    with caplog.at_level(logging.WARNING):
        assert main(["eval", str(ckpt), "--dataset", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown data set 'nosuch'") and "glyphs" in err  # names the valid choices
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a warning came before the error"


# ------------------------------------------------------------------------------ EMA export


@pytest.fixture(scope="module")
def ema_package(tiny_checkpoint, tmp_path_factory):
    from ganport.export import export_package

    ckpt = tiny_checkpoint("cgan", ema=0.9)
    return ckpt, export_package(ckpt, tmp_path_factory.mktemp("pkg") / "cgan-ema", formats=("onnx",))


def test_ema_weights_are_what_build_and_export_use(ema_package):
    from ganport.runtime import Generator
    from ganport.trainer.checkpoint import build_from_checkpoint, load_checkpoint

    ckpt_path, package = ema_package
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["ema_generator"] is not None
    ema = build_from_checkpoint(ckpt, use_ema=True)
    raw = build_from_checkpoint(ckpt, use_ema=False)
    for name, tensor in ema.state_dict().items():
        assert torch.equal(tensor, ckpt["ema_generator"][name])
    assert any(not torch.equal(a, b) for a, b in zip(ema.state_dict().values(), raw.state_dict().values()))
    gen = Generator.load(package)
    z = gen.sample_latents(16, seed=3)
    labels = np.arange(16) % 10
    exported = gen.run(z, labels)
    with torch.no_grad():
        want = ema(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
        other = raw(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(exported, want, atol=1e-5)
    assert np.abs(exported - other).max() > 1e-3


def test_ema_decay_warms_up_with_the_step():
    from ganport.trainer.config import TrainConfig
    from ganport.trainer.ema import EMA

    net = torch.nn.Linear(3, 2)
    ema = EMA(net, 0.999)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, step=0)  # decay min(0.999, 1/10): the average moves 90% of the way
    torch.testing.assert_close(ema.module.weight, start + 0.9)
    ema.update(net, step=None)  # no step: the plain decay
    torch.testing.assert_close(ema.module.weight, start + 0.9 + 0.1 * 0.001)
    late = EMA(net, 0.999)
    with torch.no_grad():
        net.weight.add_(1.0)
    late.update(net, step=100_000)
    torch.testing.assert_close(late.module.weight, start + 1.0 + 0.001)
    assert TrainConfig(kind="cgan", dataset="glyphs").validate().ema == 0.999  # on by default...
    assert TrainConfig(kind="aae", dataset="digits").validate().ema == 0.0  # ...but aae keeps E and G paired
    assert TrainConfig(kind="aae", dataset="digits", ema=0.99).validate().ema == 0.99


def test_package_and_checkpoint_evaluate_the_same(ema_package, reference):
    ckpt_path, package = ema_package
    from_ckpt = evaluate(open_source(ckpt_path), n=300, reference=reference)
    from_pkg = evaluate(open_source(package), n=300, reference=reference)
    assert from_pkg.model.startswith("package") and "EMA" in from_ckpt.model
    assert from_pkg.conditional_accuracy == pytest.approx(from_ckpt.conditional_accuracy, abs=1 / 300)
    assert from_pkg.fd == pytest.approx(from_ckpt.fd, rel=1e-3)


# ------------------------------------------------------------------------------ sweep


def test_sweep_of_four_runs_ranks_writes_and_resumes(reference, cache_dir, tmp_path):
    from ganport.trainer.sweep import parse_grid, run_sweep

    grid = parse_grid(["lr_g=1e-4,2e-4", "batch-size=8,16"])
    assert grid == {"lr_g": [1e-4, 2e-4], "batch_size": [8, 16]}
    kwargs = {"steps": 2, "out_dir": tmp_path / "sweep", "settings": TINY_TRAIN, "eval_n": 100,
              "cache_dir": cache_dir, "classifier_options": {"epochs": CLF_EPOCHS}, "progress": lambda _: None}
    result = run_sweep("cgan", "digits", grid, **kwargs)
    assert len(result.ran) == 4 and not result.skipped
    assert [row.rank for row in result.rows] == [1, 2, 3, 4]
    accs = [row.metrics.conditional_accuracy for row in result.rows]
    assert accs == sorted(accs, reverse=True)
    with result.csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4 and {"lr_g", "batch_size", "conditional_accuracy", "fd", "fd_real_vs_real"} <= set(table[0])
    assert {row["run"] for row in table} == {"lr_g-0.0001_batch_size-8", "lr_g-0.0001_batch_size-16",
                                              "lr_g-0.0002_batch_size-8", "lr_g-0.0002_batch_size-16"}
    markdown = result.markdown_path.read_text()
    assert markdown.count("\n| ") == 5  # header + 4 runs
    sheet = decode_png(result.contact_sheet.read_bytes())
    one = decode_png(Path(result.rows[0].samples).read_bytes())
    assert sheet.shape[1] > 4 * one.shape[1]  # four runs side by side

    # Rerun: everything is skipped, nothing is retrained.
    checkpoints = {row.run: Path(row.checkpoint).stat().st_mtime_ns for row in result.rows}
    again = run_sweep("cgan", "digits", grid, **kwargs)
    assert not again.ran and len(again.skipped) == 4
    assert {row.run: Path(row.checkpoint).stat().st_mtime_ns for row in again.rows} == checkpoints

    # An interrupted run is continued (from its latest.pt) and evaluated; the others stay skipped.
    state_path = result.out_dir / "sweep.json"
    state = json.loads(state_path.read_text())
    state["runs"]["lr_g-0.0002_batch_size-8"]["status"] = "interrupted"
    state_path.write_text(json.dumps(state))
    third = run_sweep("cgan", "digits", grid, **kwargs)
    assert third.ran == ["lr_g-0.0002_batch_size-8"] and len(third.skipped) == 3

    # Another sweep definition in the same folder is refused.
    with pytest.raises(InvalidInputError, match="different sweep"):
        run_sweep("cgan", "digits", grid, **{**kwargs, "steps": 3})


def test_parallel_sweep_matches_the_sequential_one(reference, cache_dir, tmp_path):
    from ganport.trainer.sweep import run_sweep

    grid = {"lr_g": [1e-4, 2e-4]}
    settings = {**TINY_TRAIN, "threads": 1}  # the same threads both ways: bit-identical training
    kwargs = {"steps": 3, "settings": settings, "eval_n": 100, "cache_dir": cache_dir,
              "classifier_options": {"epochs": CLF_EPOCHS}}
    lines: list[str] = []
    one = run_sweep("cgan", "digits", grid, out_dir=tmp_path / "one", progress=lambda _: None, **kwargs)
    two = run_sweep("cgan", "digits", grid, out_dir=tmp_path / "two", jobs=2, progress=lines.append, **kwargs)
    assert sorted(two.ran) == sorted(one.ran) and len(two.ran) == 2
    assert any("2 at a time (1 torch thread(s) each)" in line for line in lines)
    for a, b in zip(one.rows, two.rows):  # same ranking, same scores, same weights
        assert a.run == b.run and a.status == b.status == "done"
        assert a.metrics.conditional_accuracy == b.metrics.conditional_accuracy
        assert a.metrics.fd == pytest.approx(b.metrics.fd, rel=1e-6)
        weights_a = torch.load(a.checkpoint, weights_only=True)["networks"]["generator"]["state_dict"]
        weights_b = torch.load(b.checkpoint, weights_only=True)["networks"]["generator"]["state_dict"]
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
        log = (two.out_dir / "logs" / f"{b.run}.log").read_text()
        assert "step 3/3" in log and "\r" not in log  # the run's progress: plain lines in a log file
    assert json.loads((two.out_dir / "sweep.json").read_text())["ranking"] == [r.run for r in one.rows]
    with pytest.raises(InvalidInputError, match="jobs"):
        run_sweep("cgan", "digits", grid, out_dir=tmp_path / "three", jobs=0, **kwargs)


def test_sweep_rejects_unknown_options_listing_valid_ones(tmp_path, capsys):
    from ganport.trainer.sweep import parse_grid

    with pytest.raises(InvalidInputError) as info:
        parse_grid(["learning_rate=1e-4"])
    assert "lr_g" in info.value.hint and "batch_size" in info.value.hint
    with pytest.raises(InvalidInputError):
        parse_grid(["batch_size=eight"])
    rc = main(["sweep", "cgan", "--dataset", "digits", "--grid", "lr=1,2", "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown sweep option 'lr'" in err and "lr_g" in err
    assert not any(tmp_path.iterdir())  # refused before anything ran


# ------------------------------------------------------------------------------ explore


@pytest.mark.parametrize("kind", ["cgan", "gan", "aae"])
def test_explore_writes_pngs(kind, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / kind
    assert main(["explore", str(tiny_checkpoint(kind)), "--out", str(out), "--rows", "3", "--steps", "5"]) == 0
    expected = {"interpolation.png", "latent_dims.png"}
    expected |= {"class_walks.png"} if kind == "cgan" else set()
    expected |= {"encoded_interpolation.png"} if kind == "aae" else set()
    assert {p.name for p in out.iterdir()} == expected
    pad = 2
    grid = decode_png((out / "interpolation.png").read_bytes())
    assert grid.shape[:2] == (3 * (SIZE + pad) + pad, 5 * (SIZE + pad) + pad)
    if kind == "cgan":  # one row per class
        walks = decode_png((out / "class_walks.png").read_bytes())
        assert walks.shape[0] == 10 * (SIZE + pad) + pad


def test_fractal_experiment_on_a_tiny_aae(tiny_checkpoint, tmp_path, capsys):
    from ganport.trainer.explore import denormalise_params, normalise_params

    ckpt = tiny_checkpoint("aae", dataset="fractal-dream", latent_dim=4)
    out = tmp_path / "fractal"
    assert main(["explore", "--fractal", str(ckpt), "--out", str(out), "-n", "4", "--fit-n", "16"]) == 0
    summary = json.loads((out / "fractal_summary.json").read_text())
    for key in ("mse_direct", "mse_direct_control", "mse_affine", "mse_affine_control", "mse_reconstruction",
                "mse_mean_image"):
        assert np.isfinite(summary[key]) and summary[key] >= 0
    assert summary["n_eval"] == 256  # the means use more held-out vectors than the table shows
    assert set(summary["r2_params_from_codes"]) == set(summary["r2_params_from_codes_knn"]) == {"a", "b", "c", "d"}
    assert "sqrt(12)" in summary["normalisation"] and summary["verdict"]
    with (out / "fractal_mse.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:5] == ["index", "a", "b", "c", "d"] and len(rows) == 1 + 4 + 1  # header, 4 vectors, mean
    assert rows[-1][0] == "mean of 256"
    picture = decode_png((out / "fractal_side_by_side.png").read_bytes())
    assert picture.shape[0] > 4 * SIZE and picture.shape[1] > 4 * SIZE
    assert "R²" in capsys.readouterr().out
    v = np.array([[-3.0, 3.0, 0.5, 1.5], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(denormalise_params(normalise_params(v)), v, atol=1e-5)
    np.testing.assert_allclose(np.abs(normalise_params(v)[0]), np.sqrt(3), atol=1e-5)


def test_fractal_experiment_needs_an_aae_with_four_latents(tiny_checkpoint, tmp_path, capsys):
    assert main(["explore", "--fractal", str(tiny_checkpoint("aae")), "--out", str(tmp_path)]) == 2
    assert "latent_dim 4" in capsys.readouterr().err
    assert main(["explore", "--fractal", str(tiny_checkpoint("cgan")), "--out", str(tmp_path)]) == 2
    assert "needs an AAE" in capsys.readouterr().err


# ------------------------------------------------------------------------------ TensorBoard


def test_tensorboard_logger_is_a_no_op_without_tensorboard(tmp_path):
    from ganport.trainer.tb import TensorBoardLogger, tensorboard_available

    if tensorboard_available():
        pytest.skip("tensorboard is installed here")
    with TensorBoardLogger(tmp_path / "tb") as tb:
        assert not tb.active
        tb.scalars({"step": 1, "d_loss": 0.5, "eval_fd": 3.0}, step=1)
        tb.images("samples", np.zeros((8, 8, 1), np.uint8), step=1)
    assert not (tmp_path / "tb").exists()
