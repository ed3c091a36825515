"""scripts/gpu_check.py: the CPU dry-run passes every step, and the report has the layout the GPU
run fills (README's GPU rows come from it). GPU-only checks are marked ``gpu`` and skip without CUDA."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"
STEP_NAMES = ["environment", "train", "reference", "resume", "torchrun", "export", "backends", "serving"]


def _load_module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def _run(out: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    report = json.loads((out / "report.json").read_text())
    return proc, report


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc, report = _run(out, "--device", "cpu", "--tiny", "--budget", "240")
    return out, proc, report


def test_dry_run_passes_every_step(dry_run):
    out, proc, report = dry_run
    failed = {s["name"]: (s["error"], s["traceback"]) for s in report["steps"] if s["status"] != "passed"}
    assert not failed, failed
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [s["name"] for s in report["steps"]] == STEP_NAMES
    assert report["summary"] == {"passed": 8, "failed": 0, "skipped": 0, "partial": 0, "steps": 8, "all_passed": True}
    assert "8 passed, 0 failed" in proc.stdout
    assert (out / "gpu_check.log").stat().st_size > 0
    assert report["elapsed_s"] < 240


def test_dry_run_report_layout(dry_run):
    _out, _proc, report = dry_run
    assert report["schema"] == 1 and report["device"] == "cpu" and report["tiny"] is True
    assert report["started"] and report["finished"] and report["aborted"] is None
    env = report["environment"]
    for key in ("python", "torch", "torch_cuda", "cudnn", "gpu", "versions", "onnxruntime", "nvidia_smi"):
        assert key in env
    assert "CPUExecutionProvider" in env["onnxruntime"]["available_providers"]
    steps = {s["name"]: s for s in report["steps"]}
    for name, step in steps.items():
        assert set(step) >= {"status", "seconds", "error", "traceback", "checks", "figures", "notes"}
        if name != "environment":
            assert step["checks"] and all(c["ok"] for c in step["checks"]), (name, step["checks"])

    train = steps["train"]["figures"]
    assert len(train["steps_per_s"]) == 10  # 5 kinds x AMP off/on
    assert all(rate > 0 for rate in train["steps_per_s"].values())
    assert steps["reference"]["figures"]["reference"]["steps_per_s"] > 0
    assert set(steps["reference"]["figures"]["ganport_over_reference"]) == {"cgan", "cgan amp"}

    resume = steps["resume"]["figures"]
    assert resume["differing_tensors"] == [] and resume["differing_metrics"] == []
    assert resume["resumed_from_step"] == resume["half"]

    assert steps["torchrun"]["figures"]["process_group"]["backend_used"] == "gloo"

    backends = steps["backends"]["figures"]["cgan"]
    for label in ("onnx", "onnx-fp16", "torchscript", "pt2"):
        assert backends[label]["max_abs_diff_vs_cpu"] <= backends[label]["tolerance"]
        assert backends[label]["images_per_s"] > 0
    assert backends["onnx"]["providers"][0] == "CPUExecutionProvider"

    rows = steps["serving"]["figures"]["rows"]
    assert {(r["max_batch"], r["clients"], r["batch"]) for r in rows} == {
        (mb, c, b) for mb in (64, 1) for c, b in ((1, 1), (4, 1), (1, 16))}
    assert all(r["images_per_s"] > 0 and r["error_count"] == 0 for r in rows)

    assert len(report["targets"]) == 3
    assert all(t["applies"] is False for t in report["targets"])  # targets are for the GPU run
    assert report["readme_row"].startswith("| ") and report["readme_row"].count("|") == 8


def _cpu_context(gc, tmp_path, budget: int):
    """A tiny CPU run's Context with ``--budget budget`` seconds, writing into ``tmp_path``."""
    args = gc.parse_args(["--out", str(tmp_path), "--budget", str(budget)])
    return gc.Context(device="cpu", sizes=gc.TINY, workdir=tmp_path, out_dir=tmp_path, budget=float(budget),
                      report=gc.Report(tmp_path, args, "cpu"), args=args)


def test_a_failing_step_is_recorded_and_the_next_runs(tmp_path):
    gc = _load_module()
    ctx = _cpu_context(gc, tmp_path, 100)

    def boom(_ctx, _step):
        raise RuntimeError("planted failure")

    def fine(_ctx, step):
        step.check("ok", True)
        step.check("planted check", False, "a detail")

    first = gc.run_step(ctx, "train", boom)
    second = gc.run_step(ctx, "reference", fine)
    assert first.status == "failed" and "planted failure" in first.error and "RuntimeError" in first.traceback
    assert second.status == "failed" and second.error == "planted check: a detail"
    data = json.loads((tmp_path / "report.json").read_text())
    assert [s["status"] for s in data["steps"]] == ["failed", "failed"]
    assert data["summary"]["all_passed"] is False


def test_budget_skips_what_does_not_fit(tmp_path):
    gc = _load_module()
    ctx = _cpu_context(gc, tmp_path, 0)
    ran = []
    step = gc.run_step(ctx, "train", lambda _c, _s: ran.append(1))
    assert step.status == "skipped" and step.error.startswith("budget:") and not ran


def test_readme_row_of_an_empty_report():
    gc = _load_module()
    row = gc.readme_row({"steps": [], "device": "cuda", "started": "2026-12-01T00:00:00Z"})
    assert row.startswith("| 2026-12-01 | none (cuda) |")


@pytest.mark.gpu
def test_gpu_check_on_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    proc, report = _run(tmp_path, "--device", "cuda", "--tiny", "--budget", "300", timeout=600)
    failed = {s["name"]: s["error"] for s in report["steps"] if s["status"] != "passed"}
    assert not failed and proc.returncode == 0, failed
