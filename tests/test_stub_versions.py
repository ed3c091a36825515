"""The protobuf/grpcio versions the generated stubs need, and what the CLI says when they are wrong.

The floors in ``ganport.v1`` must equal what the committed stubs check at import (protobuf gencode
version, ``GRPC_GENERATED_VERSION``), the pinned generator and ``pyproject.toml``. A runtime the
stubs refuse must give one ``error:`` line naming the packages and the fix, never a traceback:
checked with the real checks that generated code runs (protobuf's ``ValidateProtobufRuntimeVersion``,
the version test at the top of ``*_pb2_grpc.py``), made to see an old version in a subprocess.
A real old protobuf in a real environment is exercised by tests/test_coinstall.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ganport.v1
from ganport.errors import GanportError
from ganport.v1 import GRPCIO_FLOOR, PROTOBUF_FLOOR, PROTOBUF_REQUIREMENT, runtime_mismatch

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "ganport" / "v1"
sys.path.insert(0, str(ROOT / "scripts"))
import gen_protos  # noqa: E402


def test_floors_are_what_the_committed_stubs_check():
    for pb2 in sorted(STUBS.glob("*_pb2.py")):
        assert f"# Protobuf Python Version: {PROTOBUF_FLOOR}\n" in pb2.read_text(), pb2.name
    for grpc_module in sorted(STUBS.glob("*_pb2_grpc.py")):
        assert f"GRPC_GENERATED_VERSION = '{GRPCIO_FLOOR}'" in grpc_module.read_text(), grpc_module.name
    assert gen_protos.GRPCIO_TOOLS_VERSION == GRPCIO_FLOOR


def test_pyproject_ranges_match_the_floors():
    text = (ROOT / "pyproject.toml").read_text()
    # The gRPC requirements live in the `serve` extra (which `cpu` and `gpu` include).
    deps = re.search(r"^serve = \[(.*?)^\]", text, re.S | re.M).group(1)
    listed = set(re.findall(r'"([^"]+)"', deps))
    assert {PROTOBUF_REQUIREMENT, ganport.v1.GRPCIO_REQUIREMENT, f"grpcio-health-checking>={GRPCIO_FLOOR}",
            f"grpcio-reflection>={GRPCIO_FLOOR}"} <= listed
    dev = re.search(r'^dev = \[(.*)\]$', text, re.M).group(1)
    assert '"tritonclient[grpc,http]>=2.73"' in dev and "grpcio-tools" not in dev


def _version_error(location: str, gencode: tuple[int, int, int]) -> Exception:
    from google.protobuf import runtime_version

    try:
        runtime_version.ValidateProtobufRuntimeVersion(runtime_version.Domain.PUBLIC, *gencode, "", location)
    except runtime_version.VersionError as exc:
        return exc
    raise AssertionError("protobuf accepted the gencode")


def test_protobuf_newer_gencode_of_a_grpc_add_on():
    from google.protobuf import __version__ as protobuf_version

    error = runtime_mismatch(_version_error("grpc_health/v1/health.proto", (99, 0, 0)))
    assert isinstance(error, GanportError)
    assert error.message.startswith(f"protobuf {protobuf_version} is installed, but grpcio-health-checking ")
    assert "protobuf>=99.0.0" in error.message
    assert f"pip install 'protobuf=={protobuf_version}' grpcio-health-checking grpcio-reflection" in error.hint


def test_protobuf_newer_gencode_of_ganport_itself():
    error = runtime_mismatch(_version_error("ganport/v1/generator.proto", (99, 0, 0)))
    assert "ganport" in error.message and PROTOBUF_REQUIREMENT in error.message
    assert error.hint == f"pip install '{PROTOBUF_REQUIREMENT}'"


def test_unrelated_errors_are_left_alone():
    assert runtime_mismatch(ValueError("bad")) is None
    assert runtime_mismatch(RuntimeError("something else")) is None
    assert runtime_mismatch(ImportError("No module named 'yaml'", name="yaml")) is None
    wrapped = RuntimeError("while starting")
    wrapped.__cause__ = _version_error("ganport/v1/generator.proto", (99, 0, 0))
    assert runtime_mismatch(wrapped) is not None


# In a fresh interpreter: make protobuf / grpcio report an old version, then run the real CLI.
_OLD_PROTOBUF = ("from google.protobuf import runtime_version as r; r.MAJOR, r.MINOR, r.PATCH = 5, 29, 5",
                 "error: protobuf 5.29.5 is installed, but ganport needs protobuf>=6.30.0,<8 (")
_OLD_GRPCIO = ("import grpc; grpc.__version__ = '1.70.0'",
               "error: grpcio 1.70.0 is installed, but the generated gRPC code in ")


@pytest.mark.parametrize("patch, expected", [_OLD_PROTOBUF, _OLD_GRPCIO], ids=["protobuf", "grpcio"])
@pytest.mark.parametrize("argv", [["serve", "MODELS"], ["client", "models"]], ids=["serve", "client"])
def test_cli_prints_one_error_line(tmp_path, patch, expected, argv):
    argv = [str(tmp_path) if a == "MODELS" else a for a in argv]
    code = f"{patch}\nimport sys\nfrom ganport.cli import main\nsys.exit(main({argv!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "(pip install '" in lines[0]
