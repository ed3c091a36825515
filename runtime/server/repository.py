"""The model repository: which packages the served directory holds, and loading/unloading them.

Protocol-neutral (the KServe gRPC ``Repository*`` calls and the REST ``/v2/repository`` routes use
the same object). A repository is the directory ``ganport serve`` was given: either one package
(served under its directory name) or a folder whose subdirectories are packages. Loading a
package opens it with :meth:`Generator.load` in a worker thread (the event loop keeps serving),
wraps it in a batcher exactly as :func:`~ganport.runtime.server.server.create_server` does, and
swaps it into the :class:`~ganport.runtime.server.servicer.ModelRegistry`; a model that was
already served is replaced (a reload) and its queued work drains. Unloading removes the model
from the registry at once (new calls: NOT_FOUND) and returns once its queued work has run.

When the server was given ``Generator`` objects instead of a directory there is no repository:
the index lists the served models and load/unload answer FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Callable, Optional

from ganport.errors import GanportError, InvalidInputError, ModelNotFoundError, PackageError
from ganport.runtime.manifest import MANIFEST_NAME
from ganport.runtime.server.servicer import ModelRegistry, ServedModel

logger = logging.getLogger(__name__)

#: Version every package is served as.
VERSION = "1"
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


class NoRepositoryError(GanportError):
    """Load/unload asked of a server that was given models, not a directory: FAILED_PRECONDITION."""


class ModelRepository:
    """Packages under the served directory, and their load/unload.

    Args:
        registry: the served models (shared with every servicer).
        directory: the served models directory (or single package), or None when the server
            was given ``Generator`` objects.
        load_generator: blocking ``(package directory) -> Generator`` (run in a worker thread).
        make_model: ``(name, generator) -> ServedModel`` (called on the event loop; builds the
            model's batcher).
    """

    def __init__(self, registry: ModelRegistry, directory: Optional[Path] = None,
                 load_generator: Optional[Callable[[Path], Any]] = None,
                 make_model: Optional[Callable[[str, Any], ServedModel]] = None):
        self.registry = registry
        self.directory = None if directory is None else Path(directory)
        self._load_generator = load_generator
        self._make_model = make_model
        self._reasons: dict[str, str] = {}  # why a package is not served (load error, "unloaded")
        self._lock: Optional[asyncio.Lock] = None

    # -- reading -------------------------------------------------------------------------------
    def packages(self) -> dict[str, Path]:
        """``{name: package directory}`` found now in the served directory (empty if none)."""
        if self.directory is None or not self.directory.is_dir():
            return {}
        if (self.directory / MANIFEST_NAME).is_file():
            return {self.directory.resolve().name: self.directory}
        return {child.name: child for child in sorted(self.directory.iterdir())
                if child.is_dir() and (child / MANIFEST_NAME).is_file()}

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every package of the directory and every served model, sorted by name.

        Returns:
            ``[{"name", "version", "state", "reason"}]`` with state ``READY`` (served) or
            ``UNAVAILABLE`` (with the reason: the last load error, "unloaded", "not loaded").
        """
        served = dict(self.registry)
        entries = []
        for name in sorted(set(self.packages()) | set(served)):
            if name in served:
                entries.append({"name": name, "version": VERSION, "state": READY, "reason": ""})
            elif not ready_only:
                entries.append({"name": name, "version": VERSION, "state": UNAVAILABLE,
                                "reason": self._reasons.get(name, "not loaded")})
        return entries

    # -- changing ------------------------------------------------------------------------------
    def _check_name(self, name: str) -> Path:
        if self.directory is None or self._load_generator is None or self._make_model is None:
            raise NoRepositoryError(
                "this server was started with models, not a models directory: it cannot load or unload "
                "packages", hint="start it with `ganport serve DIR` (or create_server(address, DIR))")
        if not _NAME_RE.match(name or ""):
            raise InvalidInputError(f"invalid model name {name!r}: use the package's directory name (letters, "
                                    f"digits, '_', '-', '.')")
        packages = self.packages()
        if name not in packages:
            found = ", ".join(packages) or "none"
            raise ModelNotFoundError(f"no model package {name!r} in the served models directory; packages: {found}")
        return packages[name]

    def _public(self, message: str, name: str, directory: Path) -> str:
        """``message`` without the server's file system paths (clients see package-relative names)."""
        paths = {str(directory.resolve()): name, str(directory): name}
        if self.directory is not None:
            paths.update({str(self.directory.resolve()): ".", str(self.directory): "."})
        for path in sorted(paths, key=len, reverse=True):
            message = message.replace(path, paths[path])
        return message[:1000]

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:  # created on the event loop that uses it
            self._lock = asyncio.Lock()
        return self._lock

    async def load(self, name: str) -> ServedModel:
        """Load (or reload) package ``name``; returns the served model once it is ready.

        Raises:
            NoRepositoryError: no models directory.
            InvalidInputError: a name that is not a plain directory name.
            ModelNotFoundError: no such package.
            PackageError: the package does not load (the server keeps serving the others, and a
                model already served under that name stays served).
        """
        directory = self._check_name(name)
        async with self._guard():
            try:
                generator = await asyncio.to_thread(self._load_generator, directory)
            except Exception as exc:  # noqa: BLE001 - any failure to open a package is reported, not raised raw
                logger.warning("loading model %r from %s failed: %s", name, directory, exc,
                               exc_info=None if isinstance(exc, GanportError) else exc)
                detail = self._public(str(exc) if isinstance(exc, GanportError) else f"{type(exc).__name__}: {exc}",
                                      name, directory)
                self._reasons[name] = f"load failed: {detail}"
                raise PackageError(f"cannot load model {name!r}: {detail}") from exc
            model = self._make_model(name, generator)
            await self.registry.add(model)
            self._reasons.pop(name, None)
            logger.info("loaded model %r from %s", name, directory)
            return model

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` after its queued work has run.

        Raises:
            NoRepositoryError: no models directory.
            ModelNotFoundError: ``name`` is not served.
        """
        if self.directory is None:
            self._check_name(name)  # raises NoRepositoryError
        async with self._guard():
            await self.registry.remove(name)
            self._reasons[name] = "unloaded"
            logger.info("unloaded model %r", name)
