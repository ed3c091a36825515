"""The install extras and the modules each one brings: the one table behind every "install this
extra" message (``pyproject.toml``'s ``[project.optional-dependencies]`` lists the same extras;
``tests/test_extras.py`` checks the two agree).

``pip install 'ganport[embed]'`` is the embed-only install (numpy, pillow, onnxruntime: the
in-process runtime, ``ganport generate/render``); ``'ganport[cpu]'`` adds the ``serve`` extra
(gRPC, KServe REST, metrics), as it always has. Server code used without ``serve`` raises
:class:`~ganport.errors.MissingExtraError` naming the extra (:func:`require`), and the CLI prints
it as one ``error:`` line.

This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import importlib.util

from ganport.errors import MissingExtraError

__all__ = ["EXTRAS", "require", "extra_for_module", "missing_modules"]

#: extra -> (what it is for, {top-level module: distribution}).
EXTRAS: dict[str, tuple[str, dict[str, str]]] = {
    "embed": ("the in-process runtime on CPU (onnxruntime)", {"onnxruntime": "onnxruntime"}),
    "serve": ("the gRPC and HTTP server, its client and metrics", {
        "grpc": "grpcio", "grpc_health": "grpcio-health-checking", "grpc_reflection": "grpcio-reflection",
        "google.protobuf": "protobuf", "prometheus_client": "prometheus-client", "starlette": "starlette",
        "uvicorn": "uvicorn"}),
    "train": ("training and evaluation (torch)", {"torch": "torch", "matplotlib": "matplotlib", "tqdm": "tqdm",
                                                  "sklearn": "scikit-learn"}),
    "export": ("export to ONNX/TorchScript (torch, onnx)", {"onnx": "onnx", "onnxscript": "onnxscript"}),
}
#: The command that installs an extra (``cpu`` covers ``embed`` and ``serve``).
INSTALL = {"embed": "pip install 'ganport[embed]', or 'ganport[cpu]' for everything",
           "serve": "pip install 'ganport[serve]', or 'ganport[cpu]' which includes it",
           "train": "pip install 'ganport[train]'", "export": "pip install 'ganport[export]'"}


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing
        return False


def missing_modules(extra: str) -> list[str]:
    """Distributions of ``extra`` whose modules cannot be found (without importing them)."""
    return [dist for module, dist in EXTRAS[extra][1].items() if not _present(module)]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` when ``extra``'s modules are not installed.

    Args:
        extra: a key of :data:`EXTRAS`.
        what: what needed it, for the message (``"ganport serve"``).

    Example:
        >>> require("embed", "the runtime") is None     # doctest: +SKIP
        True
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(f"{what} needs ganport's {extra!r} extra ({EXTRAS[extra][0]}); not installed: "
                                f"{', '.join(missing)}", hint=INSTALL[extra])


def extra_for_module(name: str | None) -> str | None:
    """The extra that provides module ``name`` (``"grpc.aio"`` -> ``"serve"``), or None.

    Only names the extra when the module is really absent: an installed package that fails to
    import is a version problem, not a missing extra.
    """
    if not name:
        return None
    for extra, (_, modules) in EXTRAS.items():
        for module in modules:
            if (name == module or name.startswith(module + ".") or module.startswith(name + ".")) \
                    and not _present(module):
                return extra
    return None
