#!/usr/bin/env python
"""Generate the Python gRPC stubs in ``ganport/v1/`` from the ``.proto`` files in ``protos/``.

The generated modules (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) are committed and never
edited by hand: change the ``.proto`` and rerun this script. ``tests/test_protos.py`` regenerates
them into a temporary directory and fails if the committed files differ. The ``.proto`` sources
are copied next to the stubs too, so the installed package ships its own service definition.

Needs ``grpcio-tools`` (the ``dev`` extra); the runtime itself does not.

Example:
    python scripts/gen_protos.py            # writes into the repository
    python scripts/gen_protos.py --out /tmp/x   # writes /tmp/x/ganport/v1/...
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("gen_protos")

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
#: Proto package directory; the stubs land in the same relative directory under the output root.
PACKAGE_DIR = Path("ganport") / "v1"


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
    import grpc_tools

    files = proto_files(proto_root)
    if not files:
        raise SystemExit(f"no .proto files under {proto_root / PACKAGE_DIR}")
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{proto_root}", f"-I{well_known}",
        f"--python_out={out_root}", f"--grpc_python_out={out_root}", f"--pyi_out={out_root}",
        *[str(f) for f in files],
    ]
    logger.info("running %s", " ".join(cmd))
    # Relative proto paths make the generated imports `from ganport.v1 import x_pb2`.
    subprocess.run(cmd, check=True, cwd=proto_root)
    for rel in files:
        shutil.copyfile(proto_root / rel, out_root / rel)
    return sorted(p for p in (out_root / PACKAGE_DIR).iterdir()
                  if p.suffix in (".py", ".pyi", ".proto") and p.name != "__init__.py")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--out`` picks the output root (default: the repository)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT,
                        help="output root; stubs go to OUT/ganport/v1 (default: repository root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(args.out.resolve()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
