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
from ganport.runtime.server.modes import DEFAULT_MODEL_CONTROL, MODEL_CONTROL
from ganport.runtime.server.servicer import ModelRegistry, ServedModel

logger = logging.getLogger(__name__)

#: Version every package is served as.
VERSION = "1"
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")




class NoRepositoryError(GanportError):
    """Load/unload asked of a server that was given models, not a directory, or started with
    ``--model-control none``: FAILED_PRECONDITION."""


def warm_up(generator: Any, max_batch: int) -> float:
    """Run ``generator`` once at batch 1 and once at ``max_batch`` so the first user call is not slow.

    onnxruntime allocates its buffers and picks kernels per input shape on the first call; this
    pays that cost before the model is served. Blocking: call it in a worker thread.

    Returns:
        Seconds taken.
    """
    import time

    started = time.perf_counter()
    for n in sorted({1, max(1, int(max_batch))}):
        z = generator.sample_latents(n, seed=0)
        try:
            generator.run_prepared(z, generator.resolve_labels(None, n))
        except Exception as exc:  # noqa: BLE001 - a model that fails for some shapes still serves the others
            logger.warning("warm-up of model %r at batch %d failed (%s); calls of that size will fail too",
                           generator.info.name, n, str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
    return time.perf_counter() - started


def release_memory() -> None:
    """Give freed memory back to the system after a model is dropped.

    A model's weights and onnxruntime's buffers are freed when it is unloaded, but glibc keeps
    freed pages in its arenas; ``malloc_trim`` returns them, so the process shrinks back. A no-op
    where glibc is not the allocator.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fingerprint(directory: Path) -> tuple:
    """What identifies a package's contents: (name, size, mtime) of each top-level file."""
    entries = []
    try:
        for child in sorted(directory.iterdir()):
            if child.is_file():
                stat = child.stat()
                entries.append((child.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ()
    return tuple(entries)


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
                 make_model: Optional[Callable[[str, Any], ServedModel]] = None,
                 model_control: str = DEFAULT_MODEL_CONTROL, metrics=None):
        if model_control not in MODEL_CONTROL:
            raise InvalidInputError(f"unknown model control {model_control!r}: valid modes are "
                                    f"{', '.join(MODEL_CONTROL)}")
        self.registry = registry
        self.directory = None if directory is None else Path(directory)
        self.model_control = model_control
        self._metrics = metrics
        self._load_generator = load_generator
        self._make_model = make_model
        self._reasons: dict[str, str] = {}  # why a package is not served (load error, "unloaded")
        self._lock: Optional[asyncio.Lock] = None
        # Package contents each served model was loaded from, and contents that failed to load
        # (polling retries a failed package only once its files change).
        self._loaded: dict[str, tuple] = {}
        self._failed: dict[str, tuple] = {}
        self._missing: dict[str, int] = {}  # served packages not found, by consecutive scans
        if self.directory is not None:
            for name, path in self.packages().items():
                if name in registry:
                    self._loaded[name] = fingerprint(path)

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
        if self.model_control == "none":
            raise NoRepositoryError("this server was started with --model-control none: its models are fixed",
                                    hint="start it with --model-control explicit or poll")
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
            return await self._load(name, directory)

    async def _load(self, name: str, directory: Path) -> ServedModel:
        contents = fingerprint(directory)
        try:
            generator = await asyncio.to_thread(self._load_generator, directory)
        except Exception as exc:  # noqa: BLE001 - any failure to open a package is reported, not raised raw
            logger.warning("loading model %r from %s failed: %s", name, directory, exc,
                           exc_info=None if isinstance(exc, GanportError) else exc)
            detail = self._public(str(exc) if isinstance(exc, GanportError) else f"{type(exc).__name__}: {exc}",
                                  name, directory)
            self._reasons[name] = f"load failed: {detail}"
            self._failed[name] = contents
            if self._metrics is not None:
                self._metrics.observe_load(name, ok=False)
            raise PackageError(f"cannot load model {name!r}: {detail}") from exc
        # load_generator opens packages with the server's --max-batch, the batch size to warm up.
        seconds = await asyncio.to_thread(warm_up, generator, generator.max_batch)
        model = self._make_model(name, generator)
        replaced = name in self.registry
        await self.registry.add(model)
        if replaced:
            release_memory()
        self._reasons.pop(name, None)
        self._failed.pop(name, None)
        self._loaded[name] = contents
        if self._metrics is not None:
            self._metrics.observe_load(name, ok=True)
        logger.info("loaded model %r from %s (warm-up %.0f ms)", name, directory, seconds * 1000)
        return model

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` after its queued work has run.

        Raises:
            NoRepositoryError: no models directory.
            ModelNotFoundError: ``name`` is not served.
        """
        if self.directory is None or self.model_control == "none":
            self._check_name(name)  # raises NoRepositoryError
        async with self._guard():
            await self.registry.remove(name)
            self._reasons[name] = "unloaded"
            self._loaded.pop(name, None)
            release_memory()
            logger.info("unloaded model %r", name)

    # -- polling -------------------------------------------------------------------------------
    async def poll_once(self) -> dict[str, list[str]]:
        """Bring the served models in line with the directory once (``--model-control poll``).

        New packages are loaded, packages whose files changed are reloaded (the old model keeps
        serving until the new one is loaded, verified and warmed up; a package that fails keeps
        the old one serving and is retried when its files change again), removed packages are
        unloaded once missing in two scans in a row. A half-copied package fails verification and
        is picked up once complete.

        Returns:
            ``{"loaded": [...], "reloaded": [...], "unloaded": [...], "failed": [...]}``.
        """
        done: dict[str, list[str]] = {"loaded": [], "reloaded": [], "unloaded": [], "failed": []}
        if self.directory is None or self._load_generator is None:
            return done
        packages = await asyncio.to_thread(self.packages)
        for name, directory in packages.items():
            contents = await asyncio.to_thread(fingerprint, directory)
            if self._loaded.get(name) == contents or self._failed.get(name) == contents:
                continue
            served = name in self.registry
            async with self._guard():
                try:
                    await self._load(name, directory)
                except PackageError:
                    done["failed"].append(name)
                    continue
            done["reloaded" if served else "loaded"].append(name)
        for name in list(self._missing):
            if name in packages:
                del self._missing[name]
        for name in [n for n in self._loaded if n not in packages]:
            # Gone in two scans in a row: a package being replaced by renames (ganport export
            # --force moves the old one away, then the new one in) is not unloaded in between.
            self._missing[name] = self._missing.get(name, 0) + 1
            if self._missing[name] < 2:
                continue
            del self._missing[name]
            if name in self.registry:
                async with self._guard():
                    await self.registry.remove(name)
                    self._reasons[name] = "removed from the models directory"
                    release_memory()
                done["unloaded"].append(name)
            self._loaded.pop(name, None)
        if any(done.values()):
            logger.info("model poll: %s", ", ".join(f"{k} {', '.join(v)}" for k, v in done.items() if v))
        return done

    async def poll_forever(self, seconds: float) -> None:
        """:meth:`poll_once` every ``seconds`` until cancelled (errors are logged, never raised)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a poll failure must not stop serving
                logger.exception("model poll failed")
