"""The model repository: which models and versions the served directory holds, and loading/unloading them.

Protocol-neutral (the KServe gRPC ``Repository*`` calls and the REST ``/v2/repository`` routes use
the same object). A repository is the directory ``ganport serve`` was given: either one package
(served under its directory name) or a folder of models, each a package (one version, "1") or a
folder of version folders ``1/``, ``2/`` ... (Triton's layout, see :mod:`.versions`), of which
the model's version policy selects the served ones. Loading a version opens its package with
:meth:`Generator.load` in a worker thread (the event loop keeps serving), wraps it in a batcher
exactly as :func:`~ganport.runtime.server.server.create_server` does, and swaps it into the
:class:`~ganport.runtime.server.servicer.ModelRegistry`; a version that was already served is
replaced (a reload) and its queued work drains. Unloading removes the model (every version)
from the registry at once (new calls: NOT_FOUND) and returns once its queued work has run.

When the server was given ``Generator`` objects instead of a directory there is no repository:
the index lists the served models and load/unload answer FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ganport.errors import GanportError, InvalidInputError, ModelNotFoundError, PackageError
from ganport.runtime.server.modes import DEFAULT_MODEL_CONTROL, MODEL_CONTROL
from ganport.runtime.server.servicer import ModelRegistry, ServedModel
from ganport.runtime.server.versions import (DEFAULT_POLICY, FLAT_VERSION, VersionPolicy, config_path,
                                                policy_from_config, scan, version_key)

logger = logging.getLogger(__name__)

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


def check_model_name(name: str) -> str:
    """``name`` if it is a valid model name (a plain directory name), else InvalidInputError."""
    if not _NAME_RE.match(name or ""):
        raise InvalidInputError(f"invalid model name {name!r}: use a plain directory name (letters, digits, "
                                f"'_', '-', '.')")
    return name


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
    """Models under the served directory, their versions, and their load/unload.

    Args:
        registry: the served models (shared with every servicer).
        directory: the served models directory (or single package), or None when the server
            was given ``Generator`` objects.
        load_generator: blocking ``(package directory) -> Generator`` (run in a worker thread).
        make_model: ``(name, generator, version) -> ServedModel`` (called on the event loop;
            builds the model version's batcher).
        model_control: a :data:`MODEL_CONTROL` mode.
        metrics: the server's :class:`~.metrics.Metrics` (load counters), or None.
        version_policy: the policy of models without a ``config.pbtxt`` ``version_policy``
            (default ``latest:1``).
        model_name: the served name when ``directory`` is one model (default: its folder name).
    """

    def __init__(self, registry: ModelRegistry, directory: Optional[Path] = None,
                 load_generator: Optional[Callable[[Path], Any]] = None,
                 make_model: Optional[Callable[[str, Any, str], ServedModel]] = None,
                 model_control: str = DEFAULT_MODEL_CONTROL, metrics=None,
                 version_policy: VersionPolicy = DEFAULT_POLICY, model_name: Optional[str] = None):
        if model_control not in MODEL_CONTROL:
            raise InvalidInputError(f"unknown model control {model_control!r}: valid modes are "
                                    f"{', '.join(MODEL_CONTROL)}")
        self.registry = registry
        self.directory = None if directory is None else Path(directory)
        self.model_control = model_control
        self.version_policy = version_policy
        self.model_name = None if model_name is None else check_model_name(model_name)
        self._metrics = metrics
        self._load_generator = load_generator
        self._make_model = make_model
        self._lock: Optional[asyncio.Lock] = None
        # All keyed by (name, version). Why a version is not served (load error, "unloaded"); the
        # package contents each served version was loaded from, and contents that failed to load
        # (polling retries a failed version only once its files change); served versions not
        # found, by consecutive scans.
        self._reasons: dict[tuple[str, str], str] = {}
        self._loaded: dict[tuple[str, str], tuple] = {}
        self._failed: dict[tuple[str, str], tuple] = {}
        self._missing: dict[tuple[str, str], int] = {}
        # name -> (config.pbtxt stat, policy read from it): read again only when it changes; a
        # config that no longer parses keeps the last good policy.
        self._policies: dict[str, tuple[tuple, VersionPolicy]] = {}
        # The last scan of the directory, for answers on the request path (ListModels, GetModel)
        # that must not touch the disk; every scan (index, load, poll) refreshes it.
        self._known: dict[str, dict[str, Path]] = {}
        if self.directory is not None:
            registry.why_not_served = self.why_not_served
            for name, found in self.packages().items():
                for version, path in found.items():
                    if version in registry.versions(name):
                        self._loaded[(name, version)] = fingerprint(path)

    # -- reading -------------------------------------------------------------------------------
    def why_not_served(self, name: str, version: str = "") -> Optional[str]:
        """Why ``name`` (at ``version``; "" = its highest version with a reason) is not served:
        its load error or "unloaded", or None when nothing is known. Reads no file."""
        if version:
            return self._reasons.get((name, version))
        reasons = sorted(((v, r) for (n, v), r in list(self._reasons.items()) if n == name),
                         key=lambda item: version_key(item[0]))
        return f"version {reasons[-1][0]}: {reasons[-1][1]}" if reasons else None

    def packages(self) -> dict[str, dict[str, Path]]:
        """``{name: {version: package directory}}`` found now in the served directory (see
        :func:`~.versions.scan`; empty without a directory)."""
        if self.directory is None:
            return {}
        self._known = scan(self.directory, self.model_name)
        return self._known

    def policy(self, name: str) -> VersionPolicy:
        """The version policy of model ``name``: its ``config.pbtxt`` ``version_policy``, else
        the server's. A config that cannot be parsed is logged once and keeps the last good
        policy."""
        path = None if self.directory is None else config_path(self.directory, name)
        if path is None:
            return self.version_policy
        try:
            stat = path.stat()
        except OSError:
            self._policies.pop(name, None)
            return self.version_policy
        key = (stat.st_size, stat.st_mtime_ns)
        cached = self._policies.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            policy = policy_from_config(path) or self.version_policy
        except InvalidInputError as exc:
            policy = cached[1] if cached is not None else self.version_policy
            logger.warning("model %r: %s; keeping the version policy %s", name, exc, policy)
        self._policies[name] = (key, policy)
        return policy

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """One entry per version of every model of the directory and every served model.

        Returns:
            ``[{"name", "version", "state", "reason"}]`` sorted by name then version, state
            ``READY`` (served) or ``UNAVAILABLE`` (with the reason: the last load error,
            "unloaded", "not selected by the version policy ...", "not loaded").
        """
        packages = self.packages()
        entries = []
        for name in sorted(set(packages) | set(self.registry)):
            for entry in self._version_states(name, packages.get(name, {}), self.policy(name)):
                if entry["state"] == READY or not ready_only:
                    entries.append({"name": name, **entry})
        return entries

    def versions(self, name: str) -> list[dict[str, str]]:
        """Every version of model ``name`` (served, or found by the last scan of the directory):
        ``[{"version", "state", "reason"}]`` in increasing version order. Reads no file (it
        answers ListModels and GetModel)."""
        policy = self._policies[name][1] if name in self._policies else self.version_policy
        return self._version_states(name, self._known.get(name, {}), policy)

    def _version_states(self, name: str, on_disk: dict[str, Path], policy: VersionPolicy) -> list[dict[str, str]]:
        served = self.registry.versions(name)
        selected = set(policy.select(on_disk)) if on_disk else set()
        entries = []
        for version in sorted(set(on_disk) | set(served), key=version_key):
            if version in served:
                # A served version whose reload failed says so (the older files still serve).
                entries.append({"version": version, "state": READY, "reason": self._reasons.get((name, version), "")})
                continue
            reason = self._reasons.get((name, version))
            if reason is None:
                reason = "not loaded" if version in selected else f"not selected by the version policy {policy}"
            entries.append({"version": version, "state": UNAVAILABLE, "reason": reason})
        return entries

    # -- changing ------------------------------------------------------------------------------
    def _check_name(self, name: str) -> dict[str, Path]:
        if self.directory is None or self._load_generator is None or self._make_model is None:
            raise NoRepositoryError(
                "this server was started with models, not a models directory: it cannot load or unload "
                "packages", hint="start it with `ganport serve DIR` (or create_server(address, DIR))")
        if self.model_control == "none":
            raise NoRepositoryError("this server was started with --model-control none: its models are fixed",
                                    hint="start it with --model-control explicit or poll")
        check_model_name(name)
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

    async def load(self, name: str) -> list[ServedModel]:
        """Load (or reload) model ``name``: every version its policy selects; versions served
        before that the policy no longer selects are unloaded once the new ones serve.

        A version that fails to load is skipped for the next one the policy allows (a ``latest:1``
        model whose newest version is broken keeps serving the one before), and a version
        already served stays served.

        Returns:
            The served versions of ``name``.

        Raises:
            NoRepositoryError: no models directory.
            InvalidInputError: a name that is not a plain directory name.
            ModelNotFoundError: no such model.
            PackageError: a selected version does not load (naming it and why; the server keeps
                serving the others).
        """
        on_disk = self._check_name(name)
        async with self._guard():
            done = await self._sync(name, on_disk, force=True)
        if done["failed"]:
            served = ", ".join(self.registry.versions(name)) or "none"
            raise PackageError(f"cannot load model {name!r}: "
                               + "; ".join(f"version {v}: {self._reasons[(name, v)]}" for v in done["failed"])
                               + f" (served versions: {served})")
        return list(self.registry.versions(name).values())

    def record_failure(self, name: str, version: str, directory: Path, exc: BaseException,
                       contents: Optional[tuple] = None) -> str:
        """Note that version ``version`` of ``name`` failed to load from ``directory`` with ``exc``
        (logged, counted, listed as the version's reason in the index; polling retries it once
        its files change from ``contents``, default: what they are now).

        Returns:
            The failure as clients see it (the server's paths replaced by package-relative names).
        """
        shown = f"{name!r} version {version}"
        logger.warning("loading model %s from %s failed: %s", shown, directory, exc,
                       exc_info=None if isinstance(exc, GanportError) else exc)
        detail = self._public(str(exc) if isinstance(exc, GanportError) else f"{type(exc).__name__}: {exc}",
                              name, self.directory / name if self.directory is not None else directory)
        if version in self.registry.versions(name):
            self._reasons[(name, version)] = f"reload failed, the previously loaded files serve: {detail}"
        else:
            self._reasons[(name, version)] = f"load failed: {detail}"
        self._failed[(name, version)] = fingerprint(directory) if contents is None else contents
        if self._metrics is not None:
            self._metrics.observe_load(name, ok=False)
        return detail

    async def _load_version(self, name: str, version: str, directory: Path) -> ServedModel:
        """Open, verify, warm up and serve one version (replacing that version if served)."""
        contents = fingerprint(directory)
        shown = f"{name!r} version {version}"
        try:
            generator = await asyncio.to_thread(self._load_generator, directory)
        except Exception as exc:  # noqa: BLE001 - any failure to open a package is reported, not raised raw
            detail = self.record_failure(name, version, directory, exc, contents)
            raise PackageError(f"cannot load model {shown}: {detail}") from exc
        # load_generator opens packages with the server's --max-batch, the batch size to warm up.
        seconds = await asyncio.to_thread(warm_up, generator, generator.max_batch)
        model = self._make_model(name, generator, version)
        await self.registry.add(model)
        # A replaced version's buffers, and the parsed model file of any load, are free now.
        await asyncio.to_thread(release_memory)
        self._reasons.pop((name, version), None)
        self._failed.pop((name, version), None)
        self._loaded[(name, version)] = contents
        if self._metrics is not None:
            self._metrics.observe_load(name, ok=True)
        logger.info("loaded model %s from %s (warm-up %.0f ms)", shown, directory, seconds * 1000)
        return model

    async def _sync(self, name: str, on_disk: dict[str, Path], force: bool,
                    pending: Iterable[str] = ()) -> dict[str, list[str]]:
        """Serve exactly the versions of ``name`` its policy selects (call under the guard).

        Args:
            name: the model.
            on_disk: ``{version: package directory}`` found now.
            force: reload every selected version (explicit load); else load only versions that
                are new or whose files changed, and skip contents that already failed (poll).
            pending: served versions missing from disk for too short a time to unload.

        Returns:
            ``{"loaded", "reloaded", "unloaded", "failed"}`` lists of versions.
        """
        done: dict[str, list[str]] = {"loaded": [], "reloaded": [], "unloaded": [], "failed": []}
        # Off the event loop: these read the disk.
        policy = await asyncio.to_thread(self.policy, name)
        contents = await asyncio.to_thread(lambda: {version: fingerprint(path) for version, path in on_disk.items()})
        attempted: set[str] = set()
        while True:
            served = self.registry.versions(name)

            def usable(version: str) -> bool:
                # A version whose current files failed is passed over unless it still serves
                # (its older files then keep serving).
                failed = (version in attempted and version in done["failed"]) or \
                    (not force and self._failed.get((name, version)) == contents.get(version))
                return version in served or not failed

            wanted = policy.select(v for v in (*on_disk, *pending) if usable(v))
            todo = [v for v in wanted if v in on_disk and v not in attempted
                    and (force or v not in served or self._loaded.get((name, v)) != contents[v])
                    and (force or self._failed.get((name, v)) != contents[v])]
            if not todo:
                break
            for version in sorted(todo, key=version_key, reverse=True):
                attempted.add(version)
                was_served = version in self.registry.versions(name)
                try:
                    await self._load_version(name, version, on_disk[version])
                except PackageError:
                    done["failed"].append(version)
                    continue
                done["reloaded" if was_served else "loaded"].append(version)
        for version in self.registry.versions(name):
            if version not in wanted:
                await self.registry.remove(name, version)
                self._loaded.pop((name, version), None)
                self._missing.pop((name, version), None)
                reason = (f"not selected by the version policy {policy}" if version in on_disk
                          else "removed from the models directory")
                self._reasons[(name, version)] = reason
                done["unloaded"].append(version)
                logger.info("unloaded model %r version %s: %s", name, version, reason)
        if done["unloaded"]:
            release_memory()
        return done

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` after their queued work has run.

        Raises:
            NoRepositoryError: no models directory.
            ModelNotFoundError: ``name`` is not served.
        """
        if self.directory is None or self.model_control == "none":
            self._check_name(name)  # raises NoRepositoryError
        async with self._guard():
            removed = await self.registry.remove(name)
            for model in removed:
                self._reasons[(name, model.version)] = "unloaded"
                self._loaded.pop((name, model.version), None)
            release_memory()
            logger.info("unloaded model %r (version(s) %s)", name, ", ".join(m.version for m in removed))

    # -- polling -------------------------------------------------------------------------------
    async def poll_once(self) -> dict[str, list[str]]:
        """Bring the served models in line with the directory once (``--model-control poll``).

        Per model, the versions its policy selects are served: new versions are loaded, versions
        whose files changed are reloaded (the old one keeps serving until the new one is loaded,
        verified and warmed up; a version that fails keeps the old one serving, or for a new
        version the ones served before, and is retried when its files change again), versions no
        longer selected are unloaded once the selected ones serve, removed versions are unloaded
        once missing in two scans in a row. A half-copied package fails verification and is
        picked up once complete.

        Returns:
            ``{"loaded": [...], "reloaded": [...], "unloaded": [...], "failed": [...]}`` of
            ``NAME`` (flat packages) or ``NAME/VERSION`` entries.
        """
        done: dict[str, list[str]] = {"loaded": [], "reloaded": [], "unloaded": [], "failed": []}
        if self.directory is None or self._load_generator is None:
            return done
        packages = await asyncio.to_thread(self.packages)
        names = set(packages) | {name for name, _ in self._loaded}
        for name in sorted(names):
            on_disk = packages.get(name, {})
            flat = set(on_disk) <= {FLAT_VERSION} and set(self.registry.versions(name)) <= {FLAT_VERSION}
            label = (lambda v: name) if flat else (lambda v: f"{name}/{v}")
            for key in [k for k in self._missing if k[0] == name and k[1] in on_disk]:
                del self._missing[key]
            gone, pending = [], []
            for key in [k for k in self._loaded if k[0] == name and k[1] not in on_disk]:
                # Gone in two scans in a row: a package being replaced by renames (ganport export
                # --force moves the old one away, then the new one in) is not unloaded in between.
                self._missing[key] = self._missing.get(key, 0) + 1
                if self._missing[key] < 2:
                    pending.append(key[1])
                    continue
                del self._missing[key]
                self._loaded.pop(key, None)
                gone.append(key[1])
            async with self._guard():
                # Versions gone from disk are left out of the selection: the policy's next choice
                # loads first, then they are unloaded, so the model never has no version.
                changes = await self._sync(name, on_disk, force=False, pending=pending)
            for version in gone:
                self._reasons.pop((name, version), None)  # not on disk: not listed any more
            for kind, versions in changes.items():
                done[kind].extend(label(v) for v in versions)
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
