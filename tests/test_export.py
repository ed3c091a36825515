"""Tests of ganport.export: checkpoint -> verified, self-describing model package.

Every kind is trained for a few steps (the ``tiny_checkpoint`` fixture), exported once in every
format of ``FORMATS`` (plus the fp16 variant), and the tests then check the package
independently of the exporter's own verification: each artifact is loaded with its runtime and
compared with the generator rebuilt straight from the checkpoint, the metadata is read back from
every artifact, and the Triton configs are parsed with Triton's ``model_config.proto`` (shipped
by tritonclient).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from google.protobuf import text_format

from ganport.cli import main
from ganport.errors import CheckpointError, ExportError
from ganport.export import FORMATS, export_package, run_export
from ganport.export.formats import OPTION_DEFAULTS, OPTION_FLAGS, check_options, select_formats
from ganport.export.torchscript_export import METADATA_FILE, request_extra_files
from ganport.export.verify import TOLERANCE_INT8
from ganport.runtime.manifest import PRECISION_KEY, ModelInfo, read_manifest
from ganport.trainer.checkpoint import build_from_checkpoint, file_sha256, load_checkpoint, save_checkpoint

KINDS = ("gan", "dcgan", "cgan", "cdcgan", "aae")
ALL_FORMATS = tuple(f.name for f in FORMATS)
BATCHES = (1, 7, 64)
TOL = 1e-4
TOL_FP16 = 1e-2


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """``exported(kind) -> (report, checkpoint)``: every format + fp16, once per kind."""
    root = tmp_path_factory.mktemp("export")
    cache = {}

    def get(kind: str):
        if kind not in cache:
            ckpt = tiny_checkpoint(kind)
            report = run_export(ckpt, root / kind, ALL_FORMATS, fp16=True, name=f"tiny-{kind}")
            cache[kind] = (report, ckpt)
        return cache[kind]

    return get


def _inputs(info: ModelInfo, role: str, batch: int):
    """Fixed inputs, made here (not by the exporter): normal z, labels cycling, images in [-1, 1]."""
    rng = np.random.default_rng(1000 + batch)
    if role == "encoder":
        return [rng.uniform(-1, 1, size=(batch, *info.image_shape)).astype(np.float32)]
    z = rng.standard_normal((batch, info.latent_dim)).astype(np.float32)
    if info.conditional:
        return [z, (np.arange(batch) % info.n_classes).astype(np.int64)]
    return [z]


def _eager(ckpt: Path, role: str):
    net = build_from_checkpoint(load_checkpoint(ckpt), role)
    assert not net.training

    def run(inputs):
        with torch.no_grad():
            return net(*(torch.from_numpy(x) for x in inputs)).numpy()

    return run


def _load_torch(path: Path, loader):
    extra = request_extra_files()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = loader(path, extra)

    def run(inputs):
        with torch.no_grad():
            return module(*(torch.from_numpy(x) for x in inputs)).numpy()

    return run, extra


def _open(path: Path):
    """(run, metadata) of any artifact, with the loader of its runtime."""
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return (lambda inputs: session.run(None, dict(zip(names, inputs)))[0]), props
    if path.suffix in (".ts", ".pt"):
        run, extra = _load_torch(path, lambda p, e: torch.jit.load(str(p), _extra_files=e))
    else:
        run, extra = _load_torch(path, lambda p, e: torch.export.load(str(p), extra_files=e).module())
    decoded = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in extra.items() if v}
    whole = json.loads(decoded.pop(METADATA_FILE))
    assert decoded == whole, f"{path.name}: per-key extra files differ from {METADATA_FILE}"
    return run, whole


# --- every kind, every format -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_artifact_matches_eager(exported, kind):
    report, ckpt = exported(kind)
    info = read_manifest(report.path)
    roles = ("generator", "encoder") if kind == "aae" else ("generator",)
    expected_keys = {"onnx", "onnx_int8", "torchscript", "pt2", "onnx_fp16", "triton"}
    if kind == "aae":
        expected_keys |= {"encoder_onnx", "encoder_torchscript", "encoder_pt2"}
    assert set(info.files) == expected_keys
    for role in roles:
        eager = _eager(ckpt, role)
        stem = "model" if role == "generator" else "encoder"
        for suffix in (".onnx", ".ts", ".pt2") + ((".fp16.onnx",) if role == "generator" else ()):
            path = report.path / f"{stem}{suffix}"
            run, _ = _open(path)
            tol = TOL_FP16 if "fp16" in suffix else TOL
            for batch in BATCHES:
                inputs = _inputs(info, role, batch)
                got, want = run(inputs), eager(inputs)
                assert got.dtype == np.float32 and got.shape == want.shape
                diff = float(np.abs(got - want).max())
                assert diff <= tol, f"{path.name} batch {batch}: {diff}"
    # The exporter's own verification covered every model file at 1, 7 and 64.
    for artifact in report.artifacts:
        if artifact.load is not None:
            assert set(artifact.diffs) == set(BATCHES), artifact.relpath
            assert artifact.max_diff <= {"fp32": TOL, "fp16": TOL_FP16, "int8": TOLERANCE_INT8}[artifact.precision]


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_is_the_same_in_every_artifact(exported, kind):
    report, ckpt = exported(kind)
    manifest = json.loads((report.path / "manifest.json").read_text())
    info = read_manifest(report.path)
    expected = info.to_metadata()
    data = load_checkpoint(ckpt)["data"]
    assert info.kind == kind and info.latent_dim == 8 and info.name == f"tiny-{kind}"
    assert info.image_shape == [1, 16, 16] and info.value_range == [-1.0, 1.0]
    assert info.source_checkpoint_sha256 == file_sha256(ckpt)
    assert info.dataset == "digits" and info.exporter in ("dynamo", "legacy") and info.opset >= 13
    if info.conditional:
        assert info.class_names == data["class_names"] and info.n_classes == 10
    else:
        assert info.class_names == [] and info.n_classes == 0
    assert manifest["inputs"][0]["name"] == "z"
    artifacts = [report.path / name for name in info.files.values() if name != "triton"]
    artifacts += sorted((report.path / "triton").glob("*/1/model.*"))
    for path in artifacts:
        _, metadata = _open(path)
        # Half-precision and int8 files also say what they are (PRECISION_KEY); nothing else differs.
        assert metadata.get(PRECISION_KEY) == {"model.fp16.onnx": '"fp16"', "model.int8.onnx": '"int8"'}.get(
            path.name), path.name
        found = {k: v for k, v in metadata.items() if not k.startswith("pkg.") and k != PRECISION_KEY}
        assert found == expected, path.name
        assert ModelInfo.from_metadata(found) == info
    # The ONNX one, as a user would read it.
    props = {p.key: p.value for p in onnx.load(str(report.path / "model.onnx")).metadata_props}
    assert {k: json.loads(v) for k, v in props.items()} == manifest


@pytest.mark.parametrize("kind", ["cgan", "aae"])
def test_onnx_graphs_are_self_contained_checked_and_batch_dynamic(exported, kind):
    report, _ = exported(kind)
    info = read_manifest(report.path)
    assert not list(report.path.rglob("*.data"))
    for name, role in [("model.onnx", "generator"), ("model.fp16.onnx", "generator"),
                       ("encoder.onnx", "encoder")]:
        if role == "encoder" and not info.has_encoder:
            continue
        model = onnx.load(str(report.path / name), load_external_data=False)
        onnx.checker.check_model(model, full_check=True)
        assert not {n.op_type for n in model.graph.node} & {
            "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Dropout", "BatchNormalization_training"}
        spec = info.io_spec()
        want_in = spec["encoder_inputs" if role == "encoder" else "inputs"]
        want_out = spec["encoder_outputs" if role == "encoder" else "outputs"]
        for value, want in zip(list(model.graph.input) + list(model.graph.output), want_in + want_out):
            dims = value.type.tensor_type.shape.dim
            assert value.name == want["name"]
            assert value.type.tensor_type.elem_type == (
                onnx.TensorProto.INT64 if want["dtype"] == "int64" else onnx.TensorProto.FLOAT)
            assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch axis must be symbolic"
            assert [d.dim_value for d in dims[1:]] == want["shape"][1:]
        if "fp16" in name:
            assert {t.data_type for t in model.graph.initializer if t.dims and len(t.dims) > 1} == {
                onnx.TensorProto.FLOAT16}


# --- Triton ---------------------------------------------------------------------------------


def _parse_config(path: Path):
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("kind", ["gan", "cdcgan"])
def test_triton_repository_parses_and_matches_the_graph(exported, kind):
    from tritonclient.grpc import model_config_pb2 as mc

    report, _ = exported(kind)
    info = read_manifest(report.path)
    repo = report.path / info.files["triton"]
    onnx_cfg = _parse_config(repo / info.name / "config.pbtxt")
    torch_cfg = _parse_config(repo / f"{info.name}_libtorch" / "config.pbtxt")
    assert (repo / info.name / "1" / "model.onnx").is_file()
    assert (repo / f"{info.name}_libtorch" / "1" / "model.pt").is_file()
    assert onnx_cfg.name == info.name and onnx_cfg.platform == "onnxruntime_onnx"
    assert torch_cfg.name == f"{info.name}_libtorch" and torch_cfg.platform == "pytorch_libtorch"
    graph = onnx.load(str(repo / info.name / "1" / "model.onnx")).graph
    dtypes = {onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.INT64: mc.TYPE_INT64}
    for cfg in (onnx_cfg, torch_cfg):
        assert cfg.max_batch_size == 64
        assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds > 0
        assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert [i.name for i in cfg.input] == [v.name for v in graph.input]
        for entry, value in zip(list(cfg.input) + list(cfg.output), list(graph.input) + list(graph.output)):
            model_dims = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
            assert entry.data_type == dtypes[value.type.tensor_type.elem_type]
            if model_dims:
                assert list(entry.dims) == model_dims and not entry.HasField("reshape")
            else:  # [N] label: Triton needs dims [1] and reshapes to the model's [N]
                assert list(entry.dims) == [1] and entry.HasField("reshape") and list(entry.reshape.shape) == []
        metadata = json.loads(cfg.parameters["ganport.metadata"].string_value)
        assert ModelInfo.from_dict(metadata) == info
    assert [o.name for o in onnx_cfg.output] == ["image"]
    assert [o.name for o in torch_cfg.output] == ["image__0"]
    # libtorch binds inputs by forward()'s argument names: they must be the config's names.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(repo / f"{info.name}_libtorch" / "1" / "model.pt"))
    assert [a.name for a in module.forward.schema.arguments[1:]] == [i.name for i in torch_cfg.input]


def test_triton_options(tiny_checkpoint, tmp_path):
    out = export_package(tiny_checkpoint("gan"), tmp_path / "g", ["triton"], triton_device="gpu",
                         max_batch=8, name="faces")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "triton"]
    for model in ("faces", "faces_libtorch"):
        cfg = _parse_config(out / "triton" / model / "config.pbtxt")
        assert cfg.max_batch_size == 8
        assert [g.kind for g in cfg.instance_group] == [cfg.instance_group[0].KIND_GPU]
    assert read_manifest(out).exporter in ("dynamo", "legacy")


def test_a_version_folder_is_named_after_its_model(tiny_checkpoint, tmp_path):
    """``-o repo/digits/2`` (Triton's layout, as ``ganport serve`` reads it) is version 2 of ``digits``."""
    out = export_package(tiny_checkpoint("gan"), tmp_path / "repo" / "digits" / "2", ["onnx"])
    assert read_manifest(out).name == "digits"
    assert read_manifest(export_package(tiny_checkpoint("gan"), tmp_path / "faces", ["onnx"])).name == "faces"


# --- options, formats, errors --------------------------------------------------------------


def test_format_table_drives_selection():
    names = [f.name for f in FORMATS]
    assert names[:2] == ["onnx", "torchscript"] and {"pt2", "triton"} <= set(names)
    assert [f.name for f in select_formats(None)] == [f.name for f in FORMATS if f.default]
    assert [f.name for f in select_formats(["triton", "onnx", "onnx"])] == ["onnx", "triton"]
    with pytest.raises(ExportError, match="unknown export format 'png'.*onnx, torchscript"):
        select_formats(["png"])


@pytest.mark.parametrize("option", sorted(OPTION_DEFAULTS))
def test_option_not_accepted_by_selected_formats_is_an_error(option):
    value = {"opset": 17, "fp16": True, "triton_device": "gpu", "max_batch": 8}[option]
    takers = [f for f in FORMATS if option in f.options]
    others = [f for f in FORMATS if option not in f.options]
    assert takers and others
    with pytest.raises(ExportError) as err:
        check_options(others, {option: value})
    assert OPTION_FLAGS[option] in str(err.value)
    assert all(f.name in err.value.hint for f in takers)
    check_options(takers, {option: value})  # accepted where the table says so
    check_options(others, {option: OPTION_DEFAULTS[option]})  # the default is "not given"


def test_option_mismatch_is_refused_before_any_work(tmp_path):
    # No checkpoint is read: the missing file would be a CheckpointError otherwise.
    with pytest.raises(ExportError, match="--opset"):
        export_package(tmp_path / "missing.pt", tmp_path / "pkg", ["torchscript"], opset=17)
    with pytest.raises(ExportError, match="--fp16"):
        export_package(tmp_path / "missing.pt", tmp_path / "pkg", ["torchscript", "pt2"], fp16=True)
    assert list(tmp_path.iterdir()) == []


def _bad_checkpoints(tmp_path: Path, good: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    return {"missing": tmp_path / "missing.pt", "truncated": truncated, "foreign": foreign,
            "garbage": garbage}


def test_bad_checkpoints_exit_2_with_one_error_line(tiny_checkpoint, tmp_path, capsys):
    for label, path in _bad_checkpoints(tmp_path, tiny_checkpoint("gan")).items():
        with pytest.raises(CheckpointError):
            export_package(path, tmp_path / f"api-{label}")
        code = main(["export", str(path), "-o", str(tmp_path / f"pkg-{label}")])
        out, err = capsys.readouterr()
        assert code == 2, label
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (label, err)
        assert not (tmp_path / f"pkg-{label}").exists() and not (tmp_path / f"api-{label}").exists()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("argv, message", [
    (["--format", "png"], "unknown export format 'png'"),
    (["--format", "torchscript", "--opset", "17"], "--opset does not apply"),
    (["--format", "onnx", "--max-batch", "8"], "--max-batch does not apply"),
])
def test_cli_usage_errors(tiny_checkpoint, tmp_path, capsys, argv, message):
    code = main(["export", str(tiny_checkpoint("gan")), "-o", str(tmp_path / "pkg"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pkg").exists()


def test_unwritable_destination(tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["export", str(tiny_checkpoint("gan")), "-o", str(blocker / "pkg")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot create") and len(err.strip().splitlines()) == 1
    code = main(["export", str(tiny_checkpoint("gan")), "-o", str(blocker)])
    assert code == 2 and "not a directory" in capsys.readouterr().err


def test_cli_prints_diffs_and_refuses_to_overwrite_without_force(tiny_checkpoint, tmp_path, capsys):
    ckpt, out = tiny_checkpoint("cgan"), tmp_path / "pkg"
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.ts"]
    for name in ("model.onnx", "model.ts"):
        line = next(line for line in stdout.splitlines() if name in line)
        assert "batch 1:" in line and "batch 7:" in line and "batch 64:" in line
    assert "ONNX exporter: " in stdout and stdout.strip().splitlines()[-1].endswith(str(out))
    before = read_manifest(out).created
    assert main(["export", str(ckpt), "-o", str(out), "--format", "pt2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert read_manifest(out).created == before and (out / "model.onnx").exists()
    assert main(["export", str(ckpt), "-o", str(out), "--format", "pt2", "--force", "--no-verify"]) == 0
    assert "(not verified)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.pt2"]
    assert read_manifest(out).files == {"pt2": "model.pt2"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failing_export_leaves_nothing_behind(tiny_checkpoint, tmp_path):
    """A generator with NaN weights exports but fails verification: no package, no temp dir."""
    ckpt = load_checkpoint(tiny_checkpoint("dcgan"))
    state = ckpt["networks"]["generator"]["state_dict"]
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    ckpt.pop("ema_generator", None)
    broken = save_checkpoint(tmp_path / "nan.pt", {k: v for k, v in ckpt.items()
                                                    if k not in ("format", "format_version")})
    with pytest.raises(ExportError, match="differs from the eager model"):
        export_package(broken, tmp_path / "pkg", ["onnx", "torchscript"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]
    # The same export replacing an existing package keeps the old one intact.
    good = export_package(tiny_checkpoint("dcgan"), tmp_path / "pkg", ["torchscript"])
    with pytest.raises(ExportError):
        export_package(broken, good, ["torchscript"], overwrite=True)
    assert sorted(p.name for p in good.iterdir()) == ["manifest.json", "model.ts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt", "pkg"]


def test_legacy_exporter_also_matches_eager(tiny_checkpoint, tmp_path):
    """The fallback exporter must work too: force it first and verify the result."""
    from ganport.export import onnx_export
    from ganport.export.job import ExportJob
    from ganport.export.package import _model_info
    from ganport.export.verify import verify_artifact

    path = tiny_checkpoint("cdcgan")
    ckpt = load_checkpoint(path)
    info = _model_info(ckpt, "legacy", file_sha256(path))
    job = ExportJob(info=info, networks={"generator": build_from_checkpoint(ckpt, "generator")},
                    staging=tmp_path, options={}, onnx_exporter=onnx_export.LEGACY)
    (artifact,) = onnx_export.write_onnx(job)
    assert artifact.exporter == onnx_export.LEGACY
    metadata = info.to_metadata()
    artifact.save(tmp_path / "model.onnx", metadata)
    diffs = verify_artifact(job, artifact, tmp_path / "model.onnx", metadata)
    assert set(diffs) == set(BATCHES) and max(diffs.values()) <= TOL


def test_requested_opset_is_honoured_by_falling_back(tiny_checkpoint, tmp_path, caplog):
    """The dynamo exporter writes opset >= 18; asking for 13 must not silently give 18."""
    caplog.set_level(logging.INFO, logger="ganport.export")
    out = export_package(tiny_checkpoint("cgan"), tmp_path / "pkg", ["onnx"], opset=13)
    info = read_manifest(out)
    assert info.opset == 13
    assert onnx.load(str(out / "model.onnx")).opset_import[0].version == 13
    # Below 18 the legacy exporter (which writes the opset asked for) goes first, and says so.
    assert info.exporter == "legacy"
    assert any("with the legacy exporter, opset 13" in r.getMessage() for r in caplog.records)
