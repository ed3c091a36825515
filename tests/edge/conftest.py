"""Fixtures for the torch-free edge tests.

These tests run in a virtual environment with only the runtime extras (numpy, onnxruntime,
Pillow, grpc; no torch). The model package they load is built beforehand by the full environment
(``scripts/build_edge_package.py``) and named by the environment variable
``GANPORT_EDGE_PACKAGE``. Without it every test fails: a skipped edge run would hide exactly the
regression these tests exist to catch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ENV_VAR = "GANPORT_EDGE_PACKAGE"


@pytest.fixture(scope="session", autouse=True)
def package() -> Path:
    """The conditional glyph package directory built by scripts/build_edge_package.py."""
    value = os.environ.get(ENV_VAR)
    if not value:
        pytest.fail(f"{ENV_VAR} is not set: build a package with `python scripts/build_edge_package.py DIR` "
                    f"in the full environment and export {ENV_VAR}=DIR (`make test-edge` does both)")
    path = Path(value)
    if not (path / "manifest.json").is_file():
        pytest.fail(f"{ENV_VAR}={value} is not a model package (no manifest.json)")
    return path


@pytest.fixture(scope="session")
def gen(package):
    """The package loaded with the default (ONNX, CPU) backend."""
    from ganport.runtime import Generator

    return Generator.load(package)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything in it (runtime or server tests, in any order) imported torch."""
    loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
    if loaded:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(f"FAILED: the edge run imported torch ({', '.join(loaded[:5])})", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
