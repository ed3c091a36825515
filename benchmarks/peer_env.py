"""Build (once, cached) the Triton peer's environment: ``build/peer-venv``.

``python -m benchmarks.peer_env`` (``make peer-venv``; the ``peer`` benchmark calls
:func:`ensure_peer_venv` too). The venv is made from Debian's system interpreter
``/usr/bin/python3.11`` (3.11.2), not from the Python that runs the benchmarks: PyTriton 0.7.0
cannot load a model under pyenv's 3.11.7 (``'_thread.RLock' object has no attribute
'_recursion_count'``, a known PyTriton issue). It gets ``benchmarks/peer-requirements.txt``
(``nvidia-pytriton==0.7.0``, onnxruntime, numpy) from the ordinary package index.

How the venv is made, first that works:

1. ``python3.11 -m venv DIR`` when the interpreter has ``venv`` and ``ensurepip``;
2. Debian without ``python3.11-venv`` (no ``ensurepip``): ``apt-get install -y python3.11-venv``
   when running as root with apt-get, then 1.;
3. ``python3.11 -m venv --without-pip DIR`` and the packages installed with *this* interpreter's
   pip into it (``pip --python DIR/bin/python install ...``, pip >= 22.3);
4. ``virtualenv -p python3.11 DIR`` when ``virtualenv`` is installed.

A stamp file (``DIR/.ganport-peer``) records the requirements' hash; a venv whose stamp matches is
reused as it is. Every failure is a :class:`PeerUnavailable` with a one-line reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "benchmarks" / "peer-requirements.txt"
PEER_VENV = ROOT / "build" / "peer-venv"
PEER_INTERPRETER = Path("/usr/bin/python3.11")
STAMP = ".ganport-peer"
#: What the peer script imports; checked after installing.
CHECK = "import numpy, onnxruntime, pytriton, pytriton.triton; print(pytriton.__version__ if hasattr(pytriton, '__version__') else '')"


class PeerUnavailable(RuntimeError):
    """The peer cannot be built or started; ``str()`` is the one-line reason."""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _requirements_hash(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]


def _run(command: list[str], timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
    logger.debug("running %s", " ".join(map(str, command)))
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, **kwargs)


def _tail(proc: subprocess.CompletedProcess) -> str:
    """The last meaningful line of a failed command's output (pip's warnings skipped)."""
    lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines()
             if line.strip() and not line.startswith("WARNING: Location")]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


def peer_ready(venv: Path = PEER_VENV, requirements: Path = REQUIREMENTS) -> bool:
    """True when ``venv`` was built by :func:`ensure_peer_venv` from these requirements."""
    stamp = venv / STAMP
    if not stamp.is_file() or not _python(venv).exists():
        return False
    try:
        return json.loads(stamp.read_text()).get("requirements") == _requirements_hash(requirements)
    except (OSError, ValueError):
        return False


def ensure_peer_venv(venv: Path = PEER_VENV, interpreter: Path = PEER_INTERPRETER,
                     requirements: Path = REQUIREMENTS, build: bool = True) -> Path:
    """The peer venv's python, building the venv first unless it is already up to date.

    Args:
        venv: where the venv lives.
        interpreter: the base Python (Debian's ``/usr/bin/python3.11``).
        requirements: the requirements file.
        build: False: never build, only accept an up-to-date venv.

    Raises:
        PeerUnavailable: with a one-line reason.
    """
    venv, interpreter = Path(venv), Path(interpreter)
    if peer_ready(venv, requirements):
        return _python(venv)
    if not build:
        raise PeerUnavailable(f"the peer venv {venv} is not built (run `make peer-venv`)")
    if not interpreter.exists():
        raise PeerUnavailable(f"no {interpreter} (Debian's python3.11, which PyTriton 0.7.0 needs; "
                              f"apt-get install python3.11)")
    version = _run([interpreter, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], timeout=60)
    if version.returncode != 0:
        raise PeerUnavailable(f"{interpreter} does not run: {_tail(version)}")
    logger.info("building the Triton peer venv %s from %s %s (pip install -r %s; a minute or two)", venv,
                interpreter, version.stdout.strip(), requirements.relative_to(ROOT) if
                requirements.is_relative_to(ROOT) else requirements)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    method = _make_venv(venv, interpreter)
    pip_flags = ["install", "--disable-pip-version-check", "-q", "-r", requirements]
    if method == "without-pip":
        proc = _run([sys.executable, "-m", "pip", "--python", _python(venv), *pip_flags])
    else:
        proc = _run([_python(venv), "-m", "pip", *pip_flags])
    if proc.returncode != 0:
        raise PeerUnavailable(f"pip install -r {requirements.name} failed: {_tail(proc)}")
    check = _run([_python(venv), "-c", CHECK], timeout=300)
    if check.returncode != 0:
        raise PeerUnavailable(f"the peer venv does not import PyTriton: {_tail(check)}")
    (venv / STAMP).write_text(json.dumps({"requirements": _requirements_hash(requirements),
                                          "interpreter": str(interpreter), "python": version.stdout.strip(),
                                          "method": method}) + "\n")
    logger.info("peer venv ready (%s)", method)
    return _python(venv)


def _make_venv(venv: Path, interpreter: Path) -> str:
    """Create the venv by the first method that works (see the module docstring); returns its name."""
    def has_ensurepip() -> bool:
        return _run([interpreter, "-c", "import venv, ensurepip"], timeout=60).returncode == 0

    if not has_ensurepip() and os.geteuid() == 0 and shutil.which("apt-get"):
        minor = _run([interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=60)
        package = f"python{minor.stdout.strip()}-venv"
        logger.info("%s has no ensurepip: apt-get install -y %s", interpreter, package)
        _run(["apt-get", "install", "-y", "-q", package], timeout=600,
             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if has_ensurepip():
        proc = _run([interpreter, "-m", "venv", venv], timeout=300)
        if proc.returncode == 0:
            return "venv"
        logger.info("python -m venv failed: %s", _tail(proc))
        shutil.rmtree(venv, ignore_errors=True)
    proc = _run([interpreter, "-m", "venv", "--without-pip", venv], timeout=300)
    if proc.returncode == 0:
        pip = _run([sys.executable, "-m", "pip", "--version"], timeout=60)
        if pip.returncode == 0:
            return "without-pip"
        shutil.rmtree(venv, ignore_errors=True)
    virtualenv = shutil.which("virtualenv")
    if virtualenv:
        proc = _run([virtualenv, "-p", interpreter, venv], timeout=600)
        if proc.returncode == 0:
            return "virtualenv"
    raise PeerUnavailable(f"cannot make a venv from {interpreter} (no ensurepip, no apt-get as root, "
                          f"no pip here for --python, no virtualenv): {_tail(proc)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_env", description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=PEER_VENV, help=f"venv folder (default {PEER_VENV})")
    parser.add_argument("--python", type=Path, default=PEER_INTERPRETER,
                        help=f"base interpreter (default {PEER_INTERPRETER})")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.force:
        shutil.rmtree(args.venv, ignore_errors=True)
    try:
        python = ensure_peer_venv(args.venv.resolve(), args.python, args.requirements.resolve())
    except PeerUnavailable as exc:
        print(f"peer venv: {exc}", file=sys.stderr)
        return 1
    print(f"peer venv: {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
