"""The ``ganport`` command line: one entry point, sub-commands registered by each part.

Each part (trainer, export, runtime, server) owns a ``cli`` module with ``register(subparsers)``
that adds its sub-commands and sets ``handler`` on them. Those modules import nothing heavy at
module level, so ``ganport --help`` and the runtime commands work without torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ganport import __version__
from ganport.errors import GanportError

logger = logging.getLogger("ganport")

# Modules that contribute sub-commands, in help order.
_COMMAND_MODULES = (
    "ganport.trainer.cli",
    "ganport.trainer.quality_cli",
    "ganport.export.cli",
    "ganport.runtime.cli",
    "ganport.runtime.server.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every registered sub-command."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="ganport",
        description="Train, export and serve image generators (GAN, cGAN, AAE).",
    )
    parser.add_argument("--version", action="version", version=f"ganport {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("ganport"):
                continue  # a part not built yet
            raise
        module.register(subparsers)
    return parser


def _environment_error(exc: BaseException) -> str | None:
    """One line for an install problem behind ``exc`` (a missing extra, a protobuf/grpcio version
    that the generated gRPC code cannot run on), or None if ``exc`` is not one."""
    from ganport.v1 import runtime_mismatch

    if isinstance(exc, ModuleNotFoundError):
        extra = {"torch": "train", "onnx": "export", "onnxruntime": "cpu", "matplotlib": "train"}
        name = (exc.name or "").split(".")[0]
        if name in extra:
            return (f"this command needs the Python package {name!r}, which is not installed "
                    f"(pip install 'ganport[{extra[name]}]')")
    mismatch = runtime_mismatch(exc)
    return str(mismatch) if mismatch is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Errors a user can cause print one line, ``error: ...``, and exit with 2. So do broken
    installs: a missing extra, or a protobuf/grpcio that ganport's generated stubs (or
    grpcio-health-checking's) refuse at import (see :func:`ganport.v1.runtime_mismatch`).
    """
    try:
        parser = build_parser()
    except Exception as exc:  # a command module that imports generated code at module level
        message = _environment_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except GanportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _environment_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
