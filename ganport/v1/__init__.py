"""Generated gRPC stubs for the ganport v1 API (never edit; run ``scripts/gen_protos.py``).

Modules:
    ``generator_pb2`` / ``generator_pb2_grpc``: the ``ganport.v1.GeneratorService`` API.
    ``kserve_pb2`` / ``kserve_pb2_grpc``: the KServe v2 ``inference.GRPCInferenceService``
    subset. Not imported by ganport itself: it registers ``inference.*`` names in protobuf's
    default descriptor pool, which clash with tritonclient's identical names in one process.
    ``kserve_descriptor`` holds the same file serialized; the server builds its KServe messages
    from it in a private pool (``ganport.runtime.server.kserve.messages`` / ``KServeStub``).

This ``__init__`` is written by hand (the generator never touches it). Importing it imports no
stub, so it also holds what the CLI needs to explain a broken environment:
:data:`PROTOBUF_REQUIREMENT` / :data:`GRPCIO_REQUIREMENT` (what the generated code needs at run
time; the same ranges as ``pyproject.toml``) and :func:`runtime_mismatch`, which turns the
``VersionError`` / ``RuntimeError`` / ``ImportError`` that generated code raises on a protobuf or
grpcio it cannot run on into one :class:`~ganport.errors.GanportError` naming the packages and
the fix.

Example:
    >>> from ganport.v1 import generator_pb2, generator_pb2_grpc
    >>> request = generator_pb2.GenerateRequest(model="digits", count=4, seed=3)
"""

from __future__ import annotations

import re

from ganport.errors import GanportError

#: What the committed stubs need at run time. The floors are the generator's versions
#: (grpcio-tools 1.72.1 emits protobuf 6.30.0 gencode and checks grpcio>=1.72.1); a test keeps
#: them equal to the generated files and to pyproject.toml.
PROTOBUF_FLOOR = "6.30.0"
GRPCIO_FLOOR = "1.72.1"
PROTOBUF_REQUIREMENT = f"protobuf>={PROTOBUF_FLOOR},<8"
GRPCIO_REQUIREMENT = f"grpcio>={GRPCIO_FLOOR}"

#: Which distribution owns generated code, by the .proto path protobuf names in its errors.
_OWNERS = (("ganport/", "ganport"), ("grpc_health/", "grpcio-health-checking"),
           ("grpc_reflection/", "grpcio-reflection"))
_PROTOBUF_ERROR = re.compile(r"when loading (?P<location>\S+?):? gencode (?P<gen>\S+?) runtime (?P<runtime>\S+?)\.?(?:\s|$)")
_GRPCIO_ERROR = re.compile(r"grpc package installed is at version (?P<installed>\S+?), but the generated code "
                           r"in (?P<location>\S+?) depends on grpcio>=(?P<needed>\S+?)\.?(?:\s|$)")


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``"(not installed)"``."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _chain(exc: BaseException):
    """``exc`` and the exceptions it was raised from or during (bounded)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 16:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def runtime_mismatch(exc: BaseException) -> GanportError | None:
    """Explain ``exc`` if it is generated protobuf/gRPC code refusing the installed runtime.

    Recognises, anywhere in ``exc``'s cause/context chain: protobuf's ``VersionError`` (gencode
    newer than the installed protobuf, for ganport's stubs or for grpcio-health-checking /
    grpcio-reflection), the ``RuntimeError`` that ``*_pb2_grpc.py`` raises on an old grpcio, and
    an ``ImportError`` from ``google.protobuf`` or ``grpc`` (a protobuf too old to have
    ``runtime_version``, or a package missing).

    Returns:
        A :class:`GanportError` whose message names the installed and needed versions and whose
        hint is the ``pip install`` command that fixes it; None for any other exception.
    """
    for error in _chain(exc):
        if type(error).__name__ == "VersionError" and type(error).__module__.startswith("google.protobuf"):
            return _protobuf_mismatch(error)
        if isinstance(error, RuntimeError):
            match = _GRPCIO_ERROR.search(str(error))
            if match:
                return GanportError(
                    f"grpcio {match['installed']} is installed, but the generated gRPC code in "
                    f"{match['location']} ({_who(match['location'])}) needs grpcio>={match['needed']}",
                    f"pip install 'grpcio>={match['needed']}'")
        if isinstance(error, ImportError) and (error.name or "").split(".")[0] in ("google", "grpc"):
            return GanportError(
                f"cannot import the gRPC runtime ({_one_line(error)}); installed: protobuf "
                f"{installed_version('protobuf')}, grpcio {installed_version('grpcio')}; ganport needs "
                f"{PROTOBUF_REQUIREMENT} and {GRPCIO_REQUIREMENT}",
                f"pip install '{PROTOBUF_REQUIREMENT}' '{GRPCIO_REQUIREMENT}'")
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"6.33.6"`` -> ``(6, 33, 6)``; stops at the first part that is not a number."""
    parts = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(parts)


def _owner(location: str) -> str | None:
    """The distribution whose generated code ``location`` (a .proto or _pb2_grpc.py path) is."""
    return next((dist for prefix, dist in _OWNERS if location.startswith(prefix)), None)


def _who(location: str) -> str:
    """``"grpcio-health-checking 1.81.1"`` for ``location``'s owner, or a phrase when unknown."""
    owner = _owner(location)
    return f"{owner} {installed_version(owner)}" if owner else "an installed package"


def _protobuf_mismatch(error: BaseException) -> GanportError:
    text = _one_line(error)
    match = _PROTOBUF_ERROR.search(text)
    runtime = match["runtime"] if match else installed_version("protobuf")
    location, gen = (match["location"], match["gen"]) if match else ("?", "?")
    owner = _owner(location)
    fix = f"pip install '{PROTOBUF_REQUIREMENT}'"
    if _version_tuple(runtime) < _version_tuple(PROTOBUF_FLOOR):
        return GanportError(f"protobuf {runtime} is installed, but ganport needs {PROTOBUF_REQUIREMENT} "
                            f"({location} was generated for protobuf {gen})", fix)
    if owner in ("grpcio-health-checking", "grpcio-reflection"):
        # A grpcio add-on built for a newer protobuf than the one installed, typically after another
        # package (e.g. tritonclient, protobuf<7) downgraded protobuf: reinstall the add-ons for it.
        return GanportError(
            f"protobuf {runtime} is installed, but {owner} {installed_version(owner)} was generated for "
            f"protobuf>={gen} ({location}); another package probably changed protobuf after it was installed",
            f"pip install 'protobuf=={runtime}' grpcio-health-checking grpcio-reflection, which picks the "
            f"versions built for this protobuf, or pip install 'protobuf>={gen}' if nothing needs protobuf {runtime}")
    return GanportError(f"protobuf {runtime} cannot load the generated code of {_who(location)} ({location}, gencode "
                        f"{gen}); ganport needs {PROTOBUF_REQUIREMENT} (protobuf says: {text})", fix)
