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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error:`` line (exit 2), not the usage text."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every registered sub-command (sub-parsers inherit
    :class:`_Parser`, so a usage error anywhere is one ``error:`` line)."""
    import importlib

    parser = _Parser(
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
    # -v also works after the sub-command (``ganport generate PKG -v``); SUPPRESS keeps the
    # top-level count when it is not given there.
    for sub in subparsers.choices.values():
        flags = [flag for flag in ("-v", "--verbose") if flag not in sub._option_string_actions]
        if flags:  # a sub-command may define its own
            sub.add_argument(*flags, dest="verbose", action="count", default=argparse.SUPPRESS,
                             help="more log output (-v info and the cause of an error, -vv debug and its traceback)")
    return parser


def _environment_error(exc: BaseException) -> str | None:
    """One line for an install problem behind ``exc`` (a missing extra, a protobuf/grpcio version
    that the generated gRPC code cannot run on), or None if ``exc`` is not one."""
    from ganport.v1 import runtime_mismatch

    from ganport.extras import INSTALL, extra_for_module

    if isinstance(exc, ModuleNotFoundError):
        extra = extra_for_module(exc.name)
        if extra is not None:
            return (f"this command needs the Python package {exc.name!r} (ganport's {extra!r} extra), which is "
                    f"not installed ({INSTALL[extra]})")
    mismatch = runtime_mismatch(exc)
    return str(mismatch) if mismatch is not None else None


def _print_error(exc: GanportError, verbose: int) -> None:
    """The one ``error:`` line; with -v the chain of causes, with -vv their tracebacks too."""
    if verbose >= 2:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {exc}", file=sys.stderr)
    if verbose == 1:
        seen = {id(exc)}
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            text = str(cause).strip().replace("\n", " | ")
            print(f"  caused by {type(cause).__module__}.{type(cause).__qualname__}: {text[:2000]}",
                  file=sys.stderr)
            cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Errors a user can cause print one line, ``error: ...``, and exit with 2. So do broken
    installs: a missing extra, or a protobuf/grpcio that ganport's generated stubs (or
    grpcio-health-checking's) refuse at import (see :func:`ganport.v1.runtime_mismatch`). The
    exception that caused it (kept as ``__cause__``: ganport re-raises with ``from exc``) is
    shown with ``-v`` (one ``caused by`` line per link) and as a full traceback with ``-vv``.
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
        _print_error(exc, args.verbose)
        return 2
    except MemoryError:
        # Limits stop the known cases before any work; this is the backstop for the rest.
        print("error: out of memory (ask for fewer or smaller outputs)", file=sys.stderr)
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
