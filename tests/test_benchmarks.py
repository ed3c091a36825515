"""The benchmarks run and write well-formed results (no timing assertions: speed targets are
reported by the benchmarks themselves, not enforced here).

One quick run of two cheap benchmarks (``serving`` and ``word``, which share one exported model)
as a user would start it, ``python -m benchmarks.run --quick --only ...``, then checks of the JSON
it wrote; plus unit tests of the shared helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (make_table, percentiles, render_table, time_calls)  # noqa: E402
from benchmarks.servers import prometheus_value  # noqa: E402

MACHINE_KEYS = {"cpu_model", "cpu_count", "versions", "gpu", "date", "load_average_start", "load_average_end"}
RESULT_KEYS = {"benchmark", "schema", "quick", "machine", "settings", "rows", "tables", "headline", "notes",
               "started", "elapsed_s", "command"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``python -m benchmarks.run --quick --only serving word``; returns (results dir, stdout)."""
    base = tmp_path_factory.mktemp("bench")
    out = base / "results"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--only", "serving", "word",
               "--out", str(out), "--workdir", str(base / "work")]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"benchmarks failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return out, proc.stdout


def _load(out: Path, name: str) -> dict:
    path = out / f"{name}.json"
    assert path.is_file(), f"{path} not written"
    result = json.loads(path.read_text())
    assert RESULT_KEYS <= set(result), f"missing keys: {RESULT_KEYS - set(result)}"
    assert result["benchmark"] == name and result["quick"] is True
    machine = result["machine"]
    assert MACHINE_KEYS <= set(machine), f"missing machine keys: {MACHINE_KEYS - set(machine)}"
    assert machine["cpu_count"] >= 1 and machine["cpu_model"]
    for library in ("torch", "onnxruntime", "grpcio"):
        assert machine["versions"][library], f"no {library} version recorded"
    assert result["elapsed_s"] > 0
    assert result["tables"] and all(t["rows"] for t in result["tables"])
    return result


def test_serving_result(quick_run):
    out, stdout = quick_run
    result = _load(out, "serving")
    assert result["rows"], "no rows"
    own = [row for row in result["rows"] if row.get("server") == "own process"]
    assert len(own) == 1 and own[0]["batch"] == 64 and own[0]["images_per_s"] > 0
    assert own[0]["ratio"] == pytest.approx(own[0]["images_per_s"] / own[0]["in_process_images_per_s"])
    assert any(h["name"].startswith("gRPC (own process)/in-process mlp28") for h in result["headline"])
    for row in result["rows"]:
        assert row["model"] == "mlp28" and row["batch"] >= 1
        assert row["in_process_images_per_s"] > 0
        if row is own[0]:
            continue
        for encoding in ("png", "uint8", "float32"):
            assert row[encoding]["images_per_s"] > 0
            assert row[encoding]["ratio"] > 0
            assert row[encoding]["calls"] >= 1
    assert "serving: MLP cGAN" in stdout


def test_word_result(quick_run):
    out, stdout = quick_run
    result = _load(out, "word")
    paths = [row["path"] for row in result["rows"]]
    assert len(paths) == 6 and paths[0].startswith("in-process")
    assert paths[-3:] == ["gRPC ListModels (round-trip floor)", "gRPC, cache on, miss (new seed per call)",
                          "gRPC, cache on, hit (same seed)"]
    for row in result["rows"]:
        assert row["calls"] >= 5
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["words_per_s"] > 0
    assert result["headline"] and result["headline"][0]["value"] > 0
    cache, handling = result["headline"][1], result["headline"][2]
    assert cache["name"].startswith("RenderWord with --cache-mb") and cache["value"] > 1, cache
    # The server's own handling time: a hit skips the model, so it is far cheaper than a miss.
    assert "server handling time" in handling["name"] and handling["value"] > 1, handling
    miss, hit = result["rows"][-2:]
    assert miss["server_ms"] > hit["server_ms"] > 0
    assert "headline figures" in stdout and "RenderWord" in stdout


@pytest.fixture(scope="module")
def peer_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``python -m benchmarks.run --quick --only peer`` with the Triton peer switched off: ganport's side."""
    base = tmp_path_factory.mktemp("bench-peer")
    out = base / "results"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--only", "peer", "--out", str(out),
               "--workdir", str(base / "work")]
    env = {**os.environ, "GANPORT_BENCH_PEER": "off"}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"peer benchmark failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return out, proc.stdout


def test_peer_benchmark_reports_ganport_without_the_peer(peer_run):
    out, stdout = peer_run
    result = _load(out, "peer")
    assert result["peer"] == {"measured": False, "reason": "skipped (GANPORT_BENCH_PEER=off)"}
    reason_lines = [line for line in stdout.splitlines() if "Triton peer not measured" in line]
    assert reason_lines and all("GANPORT_BENCH_PEER=off" in line for line in reason_lines)
    assert result["notes"][0] == "Triton peer not measured: skipped (GANPORT_BENCH_PEER=off)"
    rows = result["rows"]
    assert {r["server"] for r in rows} == {"ganport", "ganport-mb1", "ganport-i2"}  # no Triton row, nothing invented
    assert {(r["load"], r["protocol"]) for r in rows if r["server"] == "ganport"} == {
        (load, protocol) for load in ("many", "batch64", "sequential") for protocol in ("kserve", "native")}
    for row in rows:
        assert row["calls"] >= 1 and row["images_per_s"] > 0 and row["error_count"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["mean_batch"] >= 1
    batch64 = [r for r in rows if r["load"] == "batch64"]
    assert batch64 and all(r["batch"] == 64 and r["mean_batch"] >= 32 for r in batch64)
    assert result["startup"]["ganport"]["startup_s"] > 0 and result["startup"]["ganport"]["rss_mib"] > 0
    assert "triton" not in result["startup"]
    names = [item["name"] for item in result["headline"]]
    assert any("cold start" in n for n in names) and any("native / KServe" in n for n in names)
    triton = [item for item in result["headline"] if "ganport / Triton" in item["name"]]
    assert triton and all(item["value"] is None and item["met"] is None for item in triton)


def test_peer_env_reasons(tmp_path):
    from benchmarks.peer_env import PeerUnavailable, ensure_peer_venv, peer_ready

    requirements = tmp_path / "req.txt"
    requirements.write_text("numpy\n")
    assert not peer_ready(tmp_path / "venv", requirements)
    with pytest.raises(PeerUnavailable, match="make peer-venv"):
        ensure_peer_venv(tmp_path / "venv", requirements=requirements, build=False)
    with pytest.raises(PeerUnavailable, match="no /nonexistent/python3.11"):
        ensure_peer_venv(tmp_path / "venv", interpreter=Path("/nonexistent/python3.11"), requirements=requirements)


def test_process_tree_includes_children():
    from benchmarks.peer import process_tree

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_tree(os.getpid())[0] == os.getpid()
        assert child.pid in process_tree(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_unknown_benchmark_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--only", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_time_calls_is_bounded_by_count_and_time():
    calls = []
    timing = time_calls(lambda: calls.append(1), seconds=10.0, max_calls=7, warmup=2)
    assert timing.calls == 7 and len(calls) == 9  # warm-up calls are not measured
    timing = time_calls(lambda: None, seconds=0.0, max_calls=1000, min_calls=3, warmup=0)
    assert timing.calls == 3
    assert timing.rate(items_per_call=8) > 0
    summary = timing.summary(8)
    assert summary["images_per_s"] > 0 and {"p50_ms", "p95_ms", "p99_ms"} <= set(summary)


def test_time_calls_waits_on_the_start_barrier():
    barrier = threading.Barrier(2)
    results = []
    worker = threading.Thread(target=lambda: results.append(
        time_calls(lambda: None, seconds=0.0, max_calls=2, warmup=1, start_barrier=barrier)))
    worker.start()
    barrier.wait(timeout=10)
    worker.join(10)
    assert results and results[0].calls >= 1


def test_percentiles():
    assert percentiles([1.0, 2.0, 3.0, 4.0, 5.0]) == {"p50": 3.0, "p95": pytest.approx(4.8), "p99": pytest.approx(4.96)}
    assert percentiles([0.001], qs=(50,), scale=1000, suffix="_ms") == {"p50_ms": 1.0}
    assert all(v != v for v in percentiles([]).values())  # NaN for no samples


def test_table_alignment():
    table = make_table("t", ["name", "images/s"], [["eager", 1234.5], ["onnx", 98765.4]], note="n")
    lines = render_table(table).splitlines()
    assert lines[0] == "t" and lines[-1] == "  note: n"
    assert lines[3].endswith(" 1,234") and lines[4].endswith("98,765")
    assert len(lines[3]) == len(lines[4])


def test_prometheus_value():
    text = ('# TYPE ganport_batch_size histogram\n'
            'ganport_batch_size_bucket{model="a",le="1"} 3\n'
            'ganport_batch_size_sum{model="a"} 12\n'
            'ganport_batch_size_sum{model="b"} 5\n'
            'ganport_batch_size_count{model="a"} 4\n')
    assert prometheus_value(text, "ganport_batch_size_sum", {"model": "a"}) == 12.0
    assert prometheus_value(text, "ganport_batch_size_count", {"model": "a"}) == 4.0
    assert prometheus_value(text, "ganport_batch_size_sum") == 17.0
    assert prometheus_value(text, "ganport_missing", {"model": "a"}) == 0.0


def test_docstring_examples():
    import doctest

    import benchmarks.common
    import benchmarks.servers

    for module in (benchmarks.common, benchmarks.servers):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
