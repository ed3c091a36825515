"""The ``onnx-int8`` export format and runtime backend, on real (tiny, trained) checkpoints.

The int8 file is run in onnxruntime against the eager float32 network (like every format, with
its own tolerance), its graph is checked for what the method promises (QDQ nodes for the
convolutional generator, integer matrix products for the MLP), the calibration inputs are the
runtime's own latents, and the runtime refuses an fp32 file where the manifest names the int8
one. Whether int8 keeps the pictures readable is measured by ``benchmarks/int8.py`` on the trained
built-in model (and recorded in its manifest), not asserted on a few-step model here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from ganport.errors import ExportError, PackageError
from ganport.export import FORMAT_NAMES, run_export
from ganport.export.int8_export import CALIBRATION_SAMPLES, calibration_feeds, choose_method
from ganport.export.job import ExportJob
from ganport.export.verify import TOLERANCE_INT8
from ganport.runtime import Generator
from ganport.runtime.backends import BACKENDS, backend_for_file
from ganport.runtime.manifest import PRECISION_KEY, read_manifest
from ganport.trainer.checkpoint import build_from_checkpoint, load_checkpoint


@pytest.fixture(scope="module")
def packages(tiny_checkpoint, tmp_path_factory):
    """``packages(kind) -> (report, checkpoint)``: onnx + onnx-int8, once per kind."""
    root = tmp_path_factory.mktemp("int8")
    cache = {}

    def get(kind: str):
        if kind not in cache:
            ckpt = tiny_checkpoint(kind)
            cache[kind] = (run_export(ckpt, root / kind, ["onnx", "onnx-int8"], name=f"tiny-{kind}"), ckpt)
        return cache[kind]

    return get


def test_format_and_backend_come_from_the_tables():
    assert "onnx-int8" in FORMAT_NAMES and "onnx-int8" in BACKENDS
    spec = BACKENDS["onnx-int8"]
    assert (spec.model_key, spec.model_file, spec.precision) == ("onnx_int8", "model.int8.onnx", "int8")
    assert BACKENDS["onnx"].precision == "fp32"
    from pathlib import Path

    assert backend_for_file(Path("x/model.int8.onnx")) == "onnx-int8"
    assert backend_for_file(Path("x/model.onnx")) == "onnx"


@pytest.mark.parametrize("kind, method", [("cgan", "dynamic"), ("dcgan", "static")])
def test_int8_artifact_matches_eager_within_its_tolerance(packages, kind, method):
    report, ckpt = packages(kind)
    info = read_manifest(report.path)
    assert info.files == {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx"}
    assert info.quantization["method"] == method and info.quantization["verify_tolerance"] == TOLERANCE_INT8
    int8 = next(a for a in report.artifacts if a.key == "onnx_int8")
    fp32 = next(a for a in report.artifacts if a.key == "onnx")
    assert int8.precision == "int8" and set(int8.diffs) == {1, 7, 64}
    assert 0 < int8.max_diff <= TOLERANCE_INT8  # rounding shows, within the tolerance
    assert fp32.max_diff <= 1e-4

    # Independently of the exporter's check: onnxruntime on fresh inputs against eager.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(report.path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    net = build_from_checkpoint(load_checkpoint(ckpt), "generator")
    rng = np.random.default_rng(7)
    z = rng.standard_normal((32, info.latent_dim)).astype(np.float32)
    feeds = {"z": z}
    args = [torch.from_numpy(z)]
    if info.conditional:
        labels = (np.arange(32) % info.n_classes).astype(np.int64)
        feeds["label"] = labels
        args.append(torch.from_numpy(labels))
    with torch.no_grad():
        want = net(*args).numpy()
    got = session.run(None, feeds)[0]
    diff = np.abs(got - want)
    print(f"{kind} int8 vs eager: max abs diff {diff.max():.4f}, mean {diff.mean():.5f}")
    assert got.shape == want.shape and diff.max() <= TOLERANCE_INT8

    graph_ops = {n.op_type for n in onnx.load(str(report.path / "model.int8.onnx")).graph.node}
    if method == "static":
        assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops
    else:
        assert "MatMulInteger" in graph_ops or "DynamicQuantizeLinear" in graph_ops
    # Weights are stored as 8-bit integers: the file is far smaller than the float32 one.
    assert (report.path / "model.int8.onnx").stat().st_size < 0.5 * (report.path / "model.onnx").stat().st_size


def test_int8_file_says_it_is_int8(packages):
    report, _ = packages("cgan")
    props = {p.key: p.value for p in onnx.load(str(report.path / "model.int8.onnx")).metadata_props}
    assert json.loads(props[PRECISION_KEY]) == "int8"
    fp32_props = {p.key for p in onnx.load(str(report.path / "model.onnx")).metadata_props}
    assert PRECISION_KEY not in fp32_props


def test_calibration_uses_the_runtime_latents_and_every_class(packages):
    report, _ = packages("cgan")
    info = read_manifest(report.path)
    job = ExportJob(info=info, networks={}, staging=report.path, options={})
    feeds = calibration_feeds(job)
    z = np.concatenate([f["z"] for f in feeds])
    labels = np.concatenate([f["label"] for f in feeds])
    gen = Generator.load(report.path)
    assert z.shape == (CALIBRATION_SAMPLES, info.latent_dim) and z.dtype == np.float32
    np.testing.assert_array_equal(z, gen.sample_latents(CALIBRATION_SAMPLES, seed=0))
    counts = np.bincount(labels, minlength=info.n_classes)
    assert counts.min() >= CALIBRATION_SAMPLES // info.n_classes and counts.max() - counts.min() <= 1


def test_choose_method_by_graph():
    helper = onnx.helper
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"])
    assert choose_method(helper.make_model(helper.make_graph([conv], "g", [], []))) == "static"
    assert choose_method(helper.make_model(helper.make_graph([gemm], "g", [], []))) == "dynamic"


@pytest.mark.parametrize("kind", ["cgan", "dcgan"])
def test_runtime_int8_backend(packages, kind):
    report, _ = packages(kind)
    fp32 = Generator.load(report.path)
    int8 = Generator.load(report.path, backend="onnx-int8")
    assert int8.backend_name == "onnx-int8" and fp32.backend_name == "onnx"
    a, b = int8.generate(8, seed=3), int8.generate(8, seed=3)
    ref = fp32.generate(8, seed=3)
    assert a.dtype == np.uint8 and a.shape == ref.shape
    np.testing.assert_array_equal(a, b)  # deterministic for a seed
    grey = np.abs(a.astype(int) - ref.astype(int))
    assert grey.max() <= TOLERANCE_INT8 / 2 * 255 + 1 and grey.mean() < 8
    # A lone int8 file loads with its own backend.
    assert Generator.load(report.path / "model.int8.onnx").backend_name == "onnx-int8"


def test_swapped_files_are_refused(packages, tmp_path):
    report, _ = packages("cgan")
    swapped = tmp_path / "swapped"
    shutil.copytree(report.path, swapped)
    shutil.copy(report.path / "model.onnx", swapped / "model.int8.onnx")
    with pytest.raises(PackageError, match=r"precision is 'int8' for backend 'onnx-int8'.*'fp32'"):
        Generator.load(swapped, backend="onnx-int8")
    shutil.copy(report.path / "model.int8.onnx", swapped / "model.onnx")
    with pytest.raises(PackageError, match=r"precision is 'fp32' for backend 'onnx'.*'int8'"):
        Generator.load(swapped)


def test_missing_int8_artifact_names_the_available_backends(tiny_checkpoint, tmp_path):
    report = run_export(tiny_checkpoint("cgan"), tmp_path / "fp32only", ["onnx"])
    with pytest.raises(PackageError, match="no onnx-int8 artifact.*available backends: onnx"):
        Generator.load(report.path, backend="onnx-int8")


def test_int8_option_checks():
    with pytest.raises(ExportError, match="--fp16"):
        run_export("missing.pt", "out", ["onnx-int8"], fp16=True)


def test_cli_export_prints_the_int8_diff_and_generates(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint("cgan")
    out = tmp_path / "pkg"
    proc = subprocess.run([sys.executable, "-m", "ganport", "export", str(ckpt), "-o", str(out), "--format", "onnx",
                           "onnx-int8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "model.int8.onnx" in l)
    assert "max abs diff" in line and "batch 64" in line
    assert proc.stderr.strip() == ""  # the quantizer's chatter is captured
    png = tmp_path / "g.png"
    proc = subprocess.run([sys.executable, "-m", "ganport", "generate", str(out), "--backend", "onnx-int8", "-n", "4",
                           "--seed", "1", "-o", str(png)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "onnx-int8 on cpu" in proc.stdout and png.stat().st_size > 0
