#!/usr/bin/env python
"""Generate the Python gRPC stubs in ``ganport/v1/`` from the ``.proto`` files in ``protos/``.

The generated modules (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) are committed and never
edited by hand: change the ``.proto`` and rerun this script. ``tests/test_protos.py`` regenerates
them into a temporary directory and fails if the committed files differ. The ``.proto`` sources
are copied next to the stubs too, so the installed package ships its own service definition.

For the KServe subset it also writes ``kserve_descriptor.py``: the serialized
``FileDescriptorProto`` of ``kserve.proto`` as a bytes constant. The server builds its KServe
messages from it in a private descriptor pool, because ``kserve_pb2`` registers ``inference.*``
in protobuf's default pool, where tritonclient registers the same names (one process could not
hold both).

The code generator is pinned (:data:`GRPCIO_TOOLS_VERSION`), not taken from the environment:
generated code checks at import that the installed protobuf is at least the version of the protoc
that generated it, and ``*_pb2_grpc.py`` that grpcio is at least the generator's version. Stubs
from an older generator load on newer runtimes, never the reverse, so the generator's version is
the floor of ganport's ``protobuf``/``grpcio`` requirements. grpcio-tools 1.72.1 bundles protoc 30
(protobuf Python gencode 6.30.0): its stubs load on protobuf 6.30 through 7.x and grpcio 1.72.1 and
later, which lets ganport share an environment with ``tritonclient`` (protobuf<7 as of 2.73).
Gencode from protobuf 5.x warns on protobuf 6.30-6.32 ("exactly one major version older") and is
outside protobuf's support window on 7.x, so 6.30.0 is the lowest gencode that is clean on every
runtime from 6.30 through 7.x.

The pinned grpcio-tools is used from the running interpreter when it is exactly that version;
otherwise it is installed once (``pip install --no-deps --target``, from the package index) into a
throwaway folder, ``build/grpcio-tools/<version>-<python>-<platform>/``, and run from there. The
``.venv`` does not need grpcio-tools at all.

Example:
    python scripts/gen_protos.py            # writes into the repository
    python scripts/gen_protos.py --out /tmp/x   # writes /tmp/x/ganport/v1/...
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from importlib import metadata
from pathlib import Path

logger = logging.getLogger("gen_protos")

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
#: Proto package directory; the stubs land in the same relative directory under the output root.
PACKAGE_DIR = Path("ganport") / "v1"
#: The pinned code generator (see the module docstring for why this version).
GRPCIO_TOOLS_VERSION = "1.72.1"
#: Where a throwaway copy of the pinned grpcio-tools is installed when the interpreter lacks it.
TOOLS_CACHE = ROOT / "build" / "grpcio-tools"


class ToolUnavailable(RuntimeError):
    """The pinned grpcio-tools is not importable here and could not be installed."""


def tool_dir(cache: Path = TOOLS_CACHE) -> Path | None:
    """Make the pinned grpcio-tools available; return the folder to put on ``PYTHONPATH``.

    Returns None when the running interpreter already has exactly that version. Otherwise installs
    it (once; later calls reuse the folder) with ``pip install --no-deps --only-binary :all:
    --target``: ``grpc_tools.protoc`` needs nothing but its own compiled extension.

    Raises:
        ToolUnavailable: pip could not install it (offline, or no wheel for this Python).
    """
    try:
        if metadata.version("grpcio-tools") == GRPCIO_TOOLS_VERSION:
            return None
    except metadata.PackageNotFoundError:
        pass
    target = cache / f"{GRPCIO_TOOLS_VERSION}-{sys.implementation.cache_tag}-{sysconfig.get_platform()}"
    if (target / "grpc_tools" / "protoc.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=cache))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--only-binary", ":all:", "--target", str(staging),
           f"grpcio-tools=={GRPCIO_TOOLS_VERSION}"]
    logger.info("installing the pinned generator: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not (staging / "grpc_tools" / "protoc.py").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        why = (result.stderr or result.stdout).strip().splitlines()
        raise ToolUnavailable(f"cannot install grpcio-tools=={GRPCIO_TOOLS_VERSION} (the pinned stub "
                              f"generator): {why[-1] if why else 'pip exited ' + str(result.returncode)}")
    try:
        staging.rename(target)  # atomic: a half-installed folder is never taken for a good one
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def protoc(args: list[str], cwd: Path = PROTO_ROOT) -> None:
    """Run the pinned ``grpc_tools.protoc`` with ``args`` (plus the well-known-types include path).

    Raises:
        ToolUnavailable: see :func:`tool_dir`.
        subprocess.CalledProcessError: protoc rejected the input.
    """
    path = tool_dir()
    env = dict(os.environ)
    if path is None:
        import grpc_tools
        well_known = Path(grpc_tools.__file__).parent / "_proto"
    else:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH")) if p)
        well_known = path / "grpc_tools" / "_proto"
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    cmd = [sys.executable, "-m", "grpc_tools.protoc", *args, f"-I{well_known}"]
    logger.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=cwd, env=env)


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The ``.proto`` files to compile, relative to ``proto_root``, sorted."""
    return sorted(p.relative_to(proto_root) for p in (proto_root / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every proto under ``proto_root`` into ``out_root`` (which mirrors the import path).

    Args:
        out_root: directory that plays the role of the repository root; files are written to
            ``out_root/ganport/v1/``.
        proto_root: directory holding ``ganport/v1/*.proto``.

    Returns:
        The generated (and copied) files, sorted.
    """
    files = proto_files(proto_root)
    if not files:
        raise SystemExit(f"no .proto files under {proto_root / PACKAGE_DIR}")
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    # Relative proto paths make the generated imports `from ganport.v1 import x_pb2`.
    protoc([f"-I{proto_root}",
            f"--python_out={out_root}", f"--grpc_python_out={out_root}", f"--pyi_out={out_root}",
            *[str(f) for f in files]], cwd=proto_root)
    for rel in files:
        shutil.copyfile(proto_root / rel, out_root / rel)
    _write_descriptor_module(proto_root, PACKAGE_DIR / "kserve.proto",
                             out_root / PACKAGE_DIR / "kserve_descriptor.py")
    return sorted(p for p in (out_root / PACKAGE_DIR).iterdir()
                  if p.suffix in (".py", ".pyi", ".proto") and p.name != "__init__.py")


def _write_descriptor_module(proto_root: Path, proto: Path, out: Path) -> None:
    """Write ``out``: a module holding the serialized FileDescriptorProto of ``proto``."""
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        descriptor_set = Path(tmp) / "set.binpb"
        protoc([f"-I{proto_root}", f"--descriptor_set_out={descriptor_set}", str(proto)], cwd=proto_root)
        [file_proto] = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    data = file_proto.SerializeToString(deterministic=True)
    lines = [repr(data[i:i + 96]) for i in range(0, len(data), 96)]
    body = "\n".join(f"    {line}" for line in lines)
    out.write_text(
        "# Generated by scripts/gen_protos.py. DO NOT EDIT!\n"
        f'"""Serialized FileDescriptorProto of {proto.as_posix()} (for a private descriptor pool)."""\n\n'
        f"NAME = {proto.as_posix()!r}\n"
        f"SERIALIZED = (\n{body}\n)\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--out`` picks the output root (default: the repository)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT,
                        help="output root; stubs go to OUT/ganport/v1 (default: repository root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        generated = generate(args.out.resolve())
    except ToolUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in generated:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
