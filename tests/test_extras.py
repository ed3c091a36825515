"""The install extras: ``ganport.extras.EXTRAS`` agrees with pyproject.toml, ``'ganport[cpu]'``
still brings everything it brought before the embed-only install existed, and without the
``serve`` extra the runtime still works while server code says, in one line, what to install.

A missing package is simulated the way Python itself records one (``sys.modules[name] = None``:
``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` returns None) in a child
interpreter; the real embed-only install is measured by benchmarks/footprint.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ganport.extras import EXTRAS, INSTALL

ROOT = Path(__file__).resolve().parent.parent
#: What `pip install 'ganport[cpu]'` installed directly before the `serve`/`embed` split.
CPU_BEFORE = {"numpy", "pillow", "grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf",
              "prometheus-client", "starlette", "uvicorn", "onnxruntime"}


def _optional() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: [Requirement(r) for r in v] for k, v in project["optional-dependencies"].items()}
    extras[""] = [Requirement(r) for r in project["dependencies"]]
    return extras


def _direct(extra: str, table: dict[str, list[Requirement]]) -> set[str]:
    """Distribution names an extra brings directly, following ganport's own extras."""
    names = set()
    for req in table[extra]:
        if req.name == "ganport":
            for inner in req.extras:
                names |= _direct(inner, table)
        else:
            names.add(req.name)
    return names


def test_table_agrees_with_pyproject():
    table = _optional()
    for extra, (_, modules) in EXTRAS.items():
        assert extra in table, f"extra {extra!r} is in ganport.extras but not in pyproject.toml"
        assert set(modules.values()) <= _direct(extra, table), extra
        assert extra in INSTALL
    assert set(EXTRAS["serve"][1].values()) == _direct("serve", table)
    assert set(EXTRAS["embed"][1].values()) == _direct("embed", table)


def test_cpu_still_brings_everything():
    table = _optional()
    assert _direct("", table) | _direct("cpu", table) == CPU_BEFORE
    assert _direct("", table) | _direct("embed", table) == {"numpy", "pillow", "onnxruntime"}
    assert _direct("gpu", table) - {"onnxruntime-gpu"} == _direct("serve", table)


def _without_serve(code: str) -> subprocess.CompletedProcess:
    hide = ", ".join(repr(m) for m in EXTRAS["serve"][1])
    script = textwrap.dedent(f"""
        import sys
        for name in ({hide}):
            sys.modules[name] = None
        """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("argv", [["serve", "--builtin"], ["client", "health"], ["models", "list"]])
def test_server_commands_without_serve_extra_are_one_line(argv):
    proc = _without_serve(f"from ganport.cli import main; sys.exit(main({argv!r}))")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "'serve' extra" in lines[0] and "pip install 'ganport[serve]'" in lines[0]
    assert "grpcio" in lines[0]


def test_runtime_works_without_serve_extra(tmp_path):
    out = tmp_path / "hello.png"
    proc = _without_serve(f"""
        from ganport.cli import main
        assert main(["render", "Hi", "-o", {str(out)!r}, "--seed", "1"]) == 0
        try:
            from ganport.runtime.server import create_server
        except ImportError as exc:
            from ganport.errors import MissingExtraError
            assert isinstance(exc, MissingExtraError), type(exc)
            print("library:", exc)
        else:
            raise AssertionError("server imported without grpc")
        """)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    assert "library: the ganport server needs ganport's 'serve' extra" in proc.stdout
