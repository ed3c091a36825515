"""Assemble the gRPC server: models, batchers, services, limits, auth, TLS, health, metrics.

One ``grpc.aio`` server on one asyncio event loop owns every batcher; RPC handlers are
coroutines that await their batch's result, and model calls run in one worker thread per model
(see :mod:`.batcher`). On one port it serves:

* ``ganport.v1.GeneratorService`` (:mod:`.servicer`);
* ``inference.GRPCInferenceService``, the KServe v2 / Triton API (:mod:`.kserve`), with the
  model repository (:mod:`.repository`) of the models directory when one was given;
* ``grpc.health.v1.Health``: SERVING once the models are loaded, NOT_SERVING while draining;
* server reflection.

With ``http_port`` it also serves HTTP on the same event loop (:mod:`.rest`, uvicorn): KServe v2
REST, PNG endpoints and a web page, sharing the batchers with gRPC.

Every method is registered with raw-bytes handlers (:mod:`.rpc`): the token is checked before
the body is decoded, and undecodable bodies are INVALID_ARGUMENT.

:func:`create_server` runs the event loop in a background thread and returns a
:class:`GanportServer` with a blocking API (``start``/``stop``), so scripts, tests and the CLI
use it like any server object.

Example:
    >>> server, port = create_server("127.0.0.1:0", "packages/")    # doctest: +SKIP
    >>> server.start()                                              # doctest: +SKIP
    >>> ...
    >>> server.stop(grace=5)                                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Coroutine, Iterable, Mapping, Optional, Union

from ganport.extras import require

require("serve", "the ganport server")  # one line naming the extra, not a ModuleNotFoundError for grpc

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ganport.errors import GanportError, InvalidInputError, PackageError
from ganport.runtime.manifest import MANIFEST_NAME, read_manifest
from ganport.runtime.server.auth import server_credentials
from ganport.runtime.server.batcher import DynamicBatcher
from ganport.runtime.server.cache import ResponseCache
from ganport.runtime.server.instances import (AUTO_INSTANCES, InstancesArg, check_instances, default_threads,
                                              resolve_instances)
from ganport.runtime.server.metrics import Metrics, MetricsHTTPServer
from ganport.runtime.server.repository import (DEFAULT_MODEL_CONTROL, ModelRepository, check_model_name, fingerprint,
                                               release_memory, warm_up)
from ganport.runtime.server.versions import (DEFAULT_POLICY, FLAT_VERSION, VersionPolicy, config_path,
                                                parse_policy, policy_from_config, scan)
from ganport.runtime.server.rpc import CallGuard, add_service
from ganport.runtime.server.servicer import (MIB, GeneratorServicer, Limits, ModelRegistry,
                                             ServedModel)
from ganport.v1 import generator_pb2

logger = logging.getLogger(__name__)

GENERATOR_SERVICE = generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name
KSERVE_SERVICE = "inference.GRPCInferenceService"

ModelsArg = Union[str, Path, Mapping[str, Any], Iterable[Any]]
TLSArg = Union[grpc.ServerCredentials, tuple]


def find_packages(path: Union[str, Path], version_policy: VersionPolicy = DEFAULT_POLICY,
                  model_name: Optional[str] = None) -> dict[str, dict[str, Path]]:
    """Model packages to serve: ``path`` itself if it is one, else each model folder under it (a
    package, or version folders ``1/``, ``2/`` ... of packages, see :mod:`.versions`), with the
    versions the model's policy selects (its ``config.pbtxt`` ``version_policy``, else
    ``version_policy``).

    Args:
        path: a package, a model folder (version folders only) or a folder of model folders.
        version_policy: the policy of models whose ``config.pbtxt`` sets none.
        model_name: the name to serve ``path`` under when it is one model (default: its folder name).

    Returns:
        ``{name: {version: directory}}`` sorted by name then version; the name is the folder name.

    Raises:
        PackageError: nothing servable at ``path``.
        InvalidInputError: a model's ``config.pbtxt`` has an invalid version policy, or
            ``model_name`` is given for a folder of several models.
    """
    return {name: {v: versions[v] for v in policy.select(versions)}
            for name, (versions, policy) in _scan_models(path, version_policy, model_name).items()}


def _scan_models(path: Union[str, Path], version_policy: VersionPolicy,
                 model_name: Optional[str]) -> dict[str, tuple[dict[str, Path], VersionPolicy]]:
    """``{name: ({version: directory}, policy)}`` of every model at ``path`` (every version found
    and the model's version policy); raises as :func:`find_packages`."""
    path = Path(path)
    if not path.is_dir():
        raise PackageError(f"{path} is not a directory", hint="pass a model package or a folder of packages")
    found = scan(path, model_name)
    if not found:
        raise PackageError(f"no model package in {path}: neither it nor any subdirectory (or its version "
                           f"folders 1/, 2/ ...) has a {MANIFEST_NAME}",
                           hint="export one with `ganport export CHECKPOINT -o DIR`")
    models = {}
    for name, versions in found.items():
        config = config_path(path, name)
        try:
            policy = (policy_from_config(config) if config is not None and config.is_file() else None) or version_policy
        except InvalidInputError as exc:
            raise InvalidInputError(f"model {name!r}: {exc.message} ({config})",
                                    hint="fix or remove the file; see Triton's version_policy syntax") from exc
        models[name] = (versions, policy)
    return models


def load_for_serving(directory: Path, *, n_models: int, backend: Optional[str] = None, device: str = "cpu",
                     threads: Optional[int] = None, max_batch: int = 64,
                     instances: InstancesArg = AUTO_INSTANCES) -> Any:
    """Load one package as a ``Generator`` for serving (at start-up and on a repository load).

    onnxruntime sessions are opened with intra-op spinning off (idle threads sleep instead of
    busy-waiting between batches) and ``threads`` intra-op threads (default
    :func:`default_threads` of ``n_models``, the versions served, and the package's
    :func:`resolve_instances`).
    """
    from ganport.runtime.generator import Generator  # heavy: onnxruntime (or torch) on demand

    if not threads:
        kind = read_manifest(directory).kind
        threads = default_threads(n_models, resolve_instances(instances, kind, device))
    return Generator.load(directory, backend=backend, device=device, threads=threads, max_batch=max_batch,
                          spin=False)


def load_models(path: Union[str, Path], *, backend: Optional[str] = None, device: str = "cpu",
                threads: Optional[int] = None, max_batch: int = 64,
                version_policy: VersionPolicy = DEFAULT_POLICY,
                model_name: Optional[str] = None,
                instances: InstancesArg = AUTO_INSTANCES,
                failures: Optional[dict[tuple[str, str], tuple[Path, tuple, Exception]]] = None,
                ) -> dict[str, dict[str, Any]]:
    """Load every package under ``path`` (see :func:`find_packages`) with :func:`load_for_serving`.

    Args:
        failures: None (default): the first package that fails to load raises. A dict: a package
            that fails is left out and recorded there as ``{(name, version): (directory, its
            fingerprint before the attempt, the exception)}``, and the model's policy picks
            again among the versions left (``latest:1`` with a broken newest version serves the
            one before it, as a repository load does).

    Returns:
        ``{name: {version: Generator}}`` (without the versions that failed).
    """
    models = _scan_models(path, version_policy, model_name)
    n_models = sum(len(policy.select(versions)) for versions, policy in models.values())
    loaded: dict[str, dict[str, Any]] = {}
    for name, (versions, policy) in models.items():
        todo = policy.select(versions)
        while todo:
            for version in todo:
                # What polling compares with to retry a failed version (only kept on failure).
                contents = fingerprint(versions[version]) if failures is not None else ()
                try:
                    generator = load_for_serving(versions[version], n_models=n_models, backend=backend,
                                                 device=device, threads=threads, max_batch=max_batch,
                                                 instances=instances)
                except Exception as exc:  # noqa: BLE001 - reported with the others, or raised as before
                    if failures is None:
                        raise
                    failures[(name, version)] = (versions[version], contents, exc)
                    continue
                loaded.setdefault(name, {})[version] = generator
            # The policy's next choice among the versions that did not fail (empty once all loaded).
            usable = [v for v in versions if (name, v) not in (failures or {})]
            todo = [v for v in policy.select(usable) if v not in loaded.get(name, {})]
    return loaded


def _as_generators(models: ModelsArg, version_policy: VersionPolicy = DEFAULT_POLICY,
                   model_name: Optional[str] = None, **load_options) -> dict[str, dict[str, Any]]:
    """Accept a directory, a ``{name: Generator}`` mapping or an iterable of Generators;
    returns ``{name: {version: Generator}}`` (version "1" for Generator objects)."""
    if isinstance(models, (str, Path)):
        return load_models(models, version_policy=version_policy, model_name=model_name, **load_options)
    if isinstance(models, Mapping):
        generators = dict(models)
    else:
        generators = {}
        for gen in models:
            if gen.info.name in generators:
                raise GanportError(f"two models are named {gen.info.name!r}", hint="pass a {name: Generator} dict")
            generators[gen.info.name] = gen
    if not generators:
        raise GanportError("no models to serve")
    return {name: {FLAT_VERSION: gen} for name, gen in generators.items()}


def _reflection_pool(kserve: bool) -> descriptor_pool.DescriptorPool:
    """A pool describing every served service: the KServe messages live outside the default pool
    (see :mod:`.kserve`), so reflection gets its own pool holding all the files."""
    pool = descriptor_pool.DescriptorPool()
    for module in (generator_pb2, health_pb2, reflection_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        pool.Add(file_proto)
    if kserve:
        from ganport.runtime.server.kserve import FILE_PROTO

        pool.Add(FILE_PROTO)
    return pool


class _LoopThread:
    """An asyncio event loop running in a daemon thread; :meth:`call` runs a coroutine on it."""

    def __init__(self, name: str = "ganport-server"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine, timeout: Optional[float] = None) -> Any:
        """Run ``coroutine`` on the loop and wait for its result (re-raising its exception)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class ServingState:
    """Whether the server accepts work; mirrored into the (asyncio) health service.

    Besides the server ("") and its gRPC services, every served model has a health entry under
    its own name: SERVING once it is loaded, verified and warmed up (and while the server
    serves), NOT_SERVING after it is unloaded, so ``grpc_health_probe -service MODEL`` and
    ``HealthStub.Check(service=MODEL)`` answer per model.

    Args:
        health_servicer: the ``grpc_health`` aio servicer to keep in sync.
        services: service names whose health status follows the state ("" = the whole server).
        models: the model registry whose names get their own entries.
    """

    def __init__(self, health_servicer: health.aio.HealthServicer, services: Iterable[str],
                 models: Optional[ModelRegistry] = None):
        self._health = health_servicer
        self._services = ("", *services)
        self._models = models
        self._serving = threading.Event()
        if models is not None:
            models.listeners.append(self._model_changed)

    def _model_changed(self, name: str) -> None:
        """A model was added, replaced or removed (called on the loop by the registry)."""
        status = (health_pb2.HealthCheckResponse.SERVING if name in self._models and self.serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        asyncio.get_running_loop().create_task(self._health.set(name, status))

    @property
    def serving(self) -> bool:
        return self._serving.is_set()

    async def set(self, serving: bool) -> None:
        """Flip every service's health status to SERVING or NOT_SERVING (on the server's loop)."""
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if serving:
            self._serving.set()
        else:
            self._serving.clear()
        for name in (*self._services, *(self._models or ())):
            await self._health.set(name, status)


class GanportServer:
    """A configured ganport gRPC server (not yet started). Create it with :func:`create_server`.

    The methods block the calling thread; the server itself runs on its own event loop thread.

    Attributes:
        port: the bound gRPC port.
        models: the :class:`ModelRegistry` of served models (KServe load/unload change it).
        metrics: the :class:`Metrics` registry (also on ``metrics_port`` when configured).
        repository: the :class:`~.repository.ModelRepository` (load/unload of packages of the
            models directory; shared by every protocol surface).
        metrics_port: the Prometheus HTTP port, or None.
        grpc_server: the underlying ``grpc.aio.Server``.
        http, rest: the HTTP server (:class:`~.rest.HttpServer`) and its app (:class:`~.rest.RestApp`),
            or None when HTTP is off; ``http_port``/``http_url`` say where it listens.
        loop: the event loop the server runs on.
    """

    def __init__(self, runner: _LoopThread, grpc_server: grpc.aio.Server, models: ModelRegistry,
                 state: ServingState, health_servicer, metrics: Metrics, port: int, host: str,
                 metrics_http: Optional[MetricsHTTPServer], executor: ThreadPoolExecutor,
                 http: Optional[Any] = None):
        self._runner = runner
        self.loop = runner.loop
        self.grpc_server = grpc_server
        self.models = models
        self.metrics = metrics
        self.port = port
        self.host = host
        self._state = state
        self._health = health_servicer
        self._metrics_http = metrics_http
        self._executor = executor
        self.http = http
        self.rest: Optional[Any] = None  # the rest.RestApp when HTTP is on (set by create_server)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.repository = None
        #: The :class:`~.cache.ResponseCache` (disabled when ``cache_mb`` is 0).
        self.cache: Optional[ResponseCache] = None
        #: Seconds between model-directory scans (``model_control="poll"``), else None.
        self.poll_seconds: Optional[float] = None
        self._poller: Optional[asyncio.Task] = None

    @property
    def http_port(self) -> Optional[int]:
        """The bound HTTP (REST) port, or None when HTTP is off."""
        return None if self.http is None else int(self.http.port)

    @property
    def http_url(self) -> Optional[str]:
        """``http://HOST:PORT`` (``https`` with TLS) of the HTTP surface, or None when it is off."""
        if self.http is None:
            return None
        host = self.http.host
        return f"{self.http.scheme}://{f'[{host}]' if ':' in host else host}:{self.http.port}"

    @property
    def metrics_port(self) -> Optional[int]:
        return None if self._metrics_http is None else self._metrics_http.port

    @property
    def serving(self) -> bool:
        """True while the health status is SERVING."""
        return self._state.serving

    def start(self) -> "GanportServer":
        """Start serving; health turns SERVING (the models are already loaded)."""
        async def start() -> None:
            await self.grpc_server.start()
            if self.http is not None:
                await self.http.start()
            await self._state.set(True)
            if self.poll_seconds is not None:
                self._poller = asyncio.get_running_loop().create_task(
                    self.repository.poll_forever(self.poll_seconds), name="ganport-model-poll")

        self._runner.call(start())
        if self.http is not None:
            logger.info("http on %s", self.http_url)
        logger.info("serving %d model(s) on %s:%d", len(self.models), self.host, self.port)
        return self

    def set_serving(self, serving: bool) -> None:
        """Flip the health status by hand (e.g. to take the server out of a load balancer)."""
        self._runner.call(self._state.set(serving))

    def stop(self, grace: Optional[float] = 5.0, drain: float = 0.0) -> None:
        """Graceful shutdown.

        1. health turns NOT_SERVING (and KServe ServerReady false);
        2. for ``drain`` seconds the server keeps serving, so load balancers watching health
           move traffic away before connections are refused;
        3. new calls are refused (gRPC and HTTP); calls in flight get ``grace`` seconds to
           finish (None: wait for all), then are cancelled;
        4. the batchers finish what is queued, the metrics port closes, the loop stops.

        Safe to call more than once (later calls wait for the first).
        """
        with self._stop_lock:
            if self._stopped.is_set():
                return
            started = time.monotonic()

            async def stop() -> None:
                if self._poller is not None:
                    self._poller.cancel()
                await self._state.set(False)
                if drain > 0:
                    logger.info("draining for %.1f s before refusing new calls", drain)
                    await asyncio.sleep(drain)
                await self._health.enter_graceful_shutdown()
                stopping = [self.grpc_server.stop(grace)]
                if self.http is not None:
                    stopping.append(self.http.stop(grace))
                await asyncio.gather(*stopping)
                await self.models.close(drain=True)

            try:
                self._runner.call(stop())
            finally:
                if self._metrics_http is not None:
                    self._metrics_http.close()
                self._runner.close()
                self._executor.shutdown(wait=False)
                self._stopped.set()
            logger.info("stopped after %.2f s", time.monotonic() - started)

    def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        """Block until the server stops (or ``timeout``); True if it stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> "GanportServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(grace=1.0)


def create_server(address: str, models: ModelsArg, *, backend: Optional[str] = None, device: str = "cpu",
                  threads: Optional[int] = None, max_batch: int = 64, max_delay_ms: float = 0.0,
                  max_queue: int = 1024, max_message_mb: float = 64, max_receive_mb: Optional[float] = None,
                  max_send_mb: Optional[float] = None, max_count: int = 1024, max_stream_count: int = 65536,
                  max_text_length: int = 64, token: Optional[str] = None, tls: Optional[TLSArg] = None,
                  metrics_port: Optional[int] = None, metrics_host: str = "127.0.0.1",
                  workers: int = 4, kserve: bool = True, model_control: str = DEFAULT_MODEL_CONTROL,
                  poll_seconds: float = 2.0, cache_mb: float = 0.0, http_port: Optional[int] = None,
                  http_host: Optional[str] = None,
                  version_policy: Union[str, VersionPolicy] = DEFAULT_POLICY,
                  model_name: Optional[str] = None,
                  instances: InstancesArg = AUTO_INSTANCES,
                  exit_on_error: bool = True) -> tuple[GanportServer, int]:
    """Build a ganport gRPC server bound to ``address`` (call ``.start()`` on it).

    Args:
        address: ``host:port``; port 0 binds a free port (returned).
        models: a models directory or single package (loaded with ``backend``/``device``/
            ``threads``, see :func:`load_models`; version folders ``NAME/1/``, ``NAME/2/`` ... as
            in Triton, see :mod:`.versions`), a ``{name: Generator}`` mapping, or an iterable of
            Generators (served under ``info.name`` as version "1").
        backend, device, threads: how to load packages from a directory (threads: intra-op
            threads per model call, default :func:`default_threads`).
        instances: model calls per model version that may run at once (Triton's instance count),
            or ``"auto"`` (default): 2 for convolutional models on a CPU with 2 or more cores, else
            1 (:func:`resolve_instances`); 1 for Generators passed as objects, whose threads were
            chosen when they were loaded. With ``threads`` unset the cores are shared among the
            instances (:func:`default_threads`).
        max_batch: most images per model call (requests are merged up to it, big ones split).
        max_delay_ms: how long the oldest queued request may wait for a batch to fill; 0
            (default) runs whatever is queued as soon as the model is free.
        max_queue: most requests waiting per model; more get RESOURCE_EXHAUSTED at once.
        max_message_mb: gRPC receive and send message limit in MiB (default 64, not gRPC's 4).
        max_receive_mb, max_send_mb: override the limit for one direction.
        max_count: most images per Generate/Decode/Encode; max_stream_count: per GenerateStream.
        max_text_length: most characters per RenderWord.
        token: require ``authorization: Bearer <token>`` on every call but health; checked
            before the request body is decoded.
        tls: ``(cert, key)`` PEM paths or bytes (or a ``grpc.ServerCredentials``): serve TLS.
        metrics_port: serve Prometheus metrics over HTTP on this port (0 = a free one).
        metrics_host: interface for the metrics port.
        workers: threads for work kept off the event loop besides model calls (Encode, encoding
            big responses); model calls have one thread per model.
        kserve: also serve the KServe v2 inference service.
        model_control: ``none``, ``explicit`` or ``poll`` (see
            :data:`~ganport.runtime.server.repository.MODEL_CONTROL`); only for a models directory.
        poll_seconds: seconds between two scans of the directory with ``model_control="poll"``.
        cache_mb: MiB of responses to deterministic requests (seeded Generate and RenderWord,
            Decode) kept in an LRU cache (:mod:`.cache`); 0 (default) turns it off.
        http_port: also serve HTTP on this port (0 = a free one; None = no HTTP): KServe v2 REST,
            PNG endpoints and the web page (:mod:`.rest`), with the same models, batchers, limits
            (request bodies up to the receive limit), token and TLS (same cert/key) as gRPC.
        http_host: interface for the HTTP port (default: the host of ``address``).
        version_policy: which versions of a model in version folders are served when its
            ``config.pbtxt`` sets no ``version_policy``: ``latest:N`` (default ``latest:1``),
            ``all`` or ``specific:V1,V2`` (:data:`~.versions.POLICIES`), or a
            :class:`~.versions.VersionPolicy`.
        model_name: serve ``models`` under this name when it is one model (a package or a folder
            of version folders); default: the folder's name. KServe mounts a model at
            ``/mnt/models`` and calls it by the InferenceService's name.
        exit_on_error: a package of the models directory that fails to load at start-up raises
            (default, Triton's ``--exit-on-error``). False: the server starts with the models
            that load and lists the others as ``UNAVAILABLE`` with the load error in the
            repository index; a policy such as ``latest:1`` serves the version before a broken
            one; ``poll`` retries a failed version when its files change, ``explicit`` loads it
            on request. With ``none`` at least one model must load.

    Every model is warmed up (one call at batch 1 and one at ``max_batch``) before it is
    served, so health turns SERVING only when the first user call will be fast.

    Returns:
        ``(server, port)``: a :class:`GanportServer` and the bound port.

    Raises:
        GanportError: the address cannot be bound, or no models.
        PackageError: a package fails to load (with ``exit_on_error``), or none loads.
    """
    instances = check_instances(instances)
    # grpc would wrap an out-of-range port around (99999 -> 34463) and serve there.
    address_port = address.rsplit(":", 1)[-1] if ":" in address else ""
    for what, port in (("port", address_port if address_port.lstrip("-").isdigit() else None),
                       ("http_port", http_port), ("metrics_port", metrics_port)):
        if port is not None and not (str(port).isdigit() and 0 <= int(port) <= 65535):
            raise InvalidInputError(f"invalid {what} {port!r}: use 0..65535 (0 picks a free one)")
    if workers < 1:
        raise GanportError(f"workers must be >= 1, got {workers}")
    receive = int((max_receive_mb or max_message_mb) * MIB)
    send = int((max_send_mb or max_message_mb) * MIB)
    limits = Limits(max_count=max_count, max_stream_count=max_stream_count, max_text_length=max_text_length,
                    max_send_bytes=send, max_receive_bytes=receive)
    if cache_mb < 0:
        raise GanportError(f"cache_mb must be >= 0, got {cache_mb}")
    if poll_seconds <= 0:
        raise GanportError(f"poll_seconds must be > 0, got {poll_seconds}")
    policy = version_policy if isinstance(version_policy, VersionPolicy) else parse_policy(version_policy)
    if model_name is not None and not isinstance(models, (str, Path)):
        raise GanportError("model_name applies to a models directory only")
    if model_name is not None:
        check_model_name(model_name)
    from_directory = isinstance(models, (str, Path))
    failures: Optional[dict] = None if exit_on_error or not from_directory else {}
    generators = _as_generators(models, policy, model_name, backend=backend, device=device, threads=threads,
                                max_batch=max_batch, instances=instances, failures=failures)
    if failures and not generators and model_control == "none":
        raise PackageError(f"no model in {models} could be loaded: "
                           + "; ".join(f"{name!r} version {version}: {exc}"
                                       for (name, version), (_, _, exc) in failures.items()),
                           hint="fix the packages, or start with --model-control explicit or poll to load them later")
    for name, versions in generators.items():
        for version, gen in versions.items():
            logger.info("warmed up model %r version %s in %.0f ms", name, version, warm_up(gen, max_batch) * 1000)
    release_memory()  # loading parsed each model file into buffers that are free now
    metrics = Metrics()

    def make_model(name: str, gen: Any, version: str = FLAT_VERSION) -> ServedModel:
        # Metrics are labelled by model name only (every version together): bounded cardinality.
        # Generators given as objects keep the threads they were loaded with: "auto" adds no
        # second call on top of them.
        auto_as_one = instances == AUTO_INSTANCES and not from_directory
        count = 1 if auto_as_one else resolve_instances(instances, gen.info.kind, gen.device, threads)
        return ServedModel(name, gen, DynamicBatcher(gen.run_prepared, name, max_batch=max_batch,
                                                     max_delay_ms=max_delay_ms, max_queue=max_queue,
                                                     metrics=metrics, instances=count), version)

    registry = ModelRegistry([make_model(name, gen, version) for name, versions in generators.items()
                              for version, gen in versions.items()])
    repository = ModelRepository(registry)
    if from_directory:
        # Packages loaded later (KServe RepositoryModelLoad) open exactly as the first ones did.
        n_served = len(registry.served())

        def load_generator(directory: Path) -> Any:
            return load_for_serving(directory, n_models=n_served, backend=backend, device=device,
                                    threads=threads, max_batch=max_batch, instances=instances)

        repository = ModelRepository(registry, Path(models), load_generator, make_model, model_control, metrics,
                                     version_policy=policy, model_name=model_name)
        for (name, version), (directory, contents, exc) in (failures or {}).items():
            repository.record_failure(name, version, directory, exc, contents)
    cache = ResponseCache(int(cache_mb * MIB), metrics)
    # One servicer for gRPC and the REST PNG endpoints: same validation, limits and cache.
    generator_servicer = GeneratorServicer(registry, limits, cache, repository)
    guard = CallGuard(token, metrics, model_names=lambda: registry.keys())
    executor = ThreadPoolExecutor(workers, thread_name_prefix="ganport-work")
    runner = _LoopThread()
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    http_sock = None
    if http_port is not None:
        if tls is not None and not isinstance(tls, tuple):
            runner.close()
            executor.shutdown(wait=False)
            raise GanportError("HTTP with TLS needs the certificate and key (tls=(cert, key)), "
                               "not grpc.ServerCredentials")
        from ganport.runtime.server import rest

        http_address = http_host if http_host is not None else host
        try:
            http_sock = rest.bind_socket(http_address, http_port)
        except OSError as exc:
            runner.close()
            executor.shutdown(wait=False)
            raise GanportError(f"cannot listen for HTTP on {http_address}:{http_port}: {exc.strerror or exc}",
                               hint="is the port already in use?") from exc

    async def build() -> tuple[grpc.aio.Server, ServingState, Any, int]:
        asyncio.get_running_loop().set_default_executor(executor)
        options = [
            ("grpc.max_receive_message_length", receive),
            ("grpc.max_send_message_length", send),
            # Never share a port with another process silently (Linux SO_REUSEPORT).
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        health_servicer = health.aio.HealthServicer()
        services = [GENERATOR_SERVICE, *([KSERVE_SERVICE] if kserve else [])]
        state = ServingState(health_servicer, services, registry)
        add_service(server, generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"],
                    generator_servicer, guard)
        if kserve:
            from ganport.runtime.server import kserve as kserve_module

            add_service(server, kserve_module.SERVICE,
                        kserve_module.KServeServicer(registry, limits, lambda: state.serving,
                                                     repository=repository, metrics=metrics), guard)
        add_service(server, health_pb2.DESCRIPTOR.services_by_name["Health"], health_servicer, guard,
                    is_open=True)
        add_service(server, reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
                    reflection.aio.ReflectionServicer(
                        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), pool=_reflection_pool(kserve)),
                    guard)
        await state.set(False)  # NOT_SERVING until start()
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = tls if isinstance(tls, grpc.ServerCredentials) else server_credentials(*tls)
            port = server.add_secure_port(address, credentials)
        return server, state, health_servicer, port

    def fail(message: str, cause: Optional[BaseException] = None) -> GanportError:
        if http_sock is not None:
            http_sock.close()
        runner.call(registry.close(drain=False))
        runner.close()
        executor.shutdown(wait=False)
        error = GanportError(message, hint="is the port already in use?" if "listen" in message else None)
        error.__cause__ = cause
        return error

    try:
        grpc_server, state, health_servicer, port = runner.call(build())
    except RuntimeError as exc:
        raise fail(f"cannot listen on {address}: {exc}", exc) from exc
    except GanportError:
        if http_sock is not None:
            http_sock.close()
        runner.close()
        executor.shutdown(wait=False)
        raise
    if port == 0:
        raise fail(f"cannot listen on {address}")

    http = http_app = None
    if http_sock is not None:
        from ganport.runtime.server import rest

        http_app = rest.RestApp(registry, limits, metrics, guard, lambda: state.serving,
                                servicer=generator_servicer)
        try:
            http = rest.HttpServer(http_app.app, http_sock, tls=tls)
        except GanportError as exc:
            raise fail(str(exc), exc) from exc

    metrics_http = None
    if metrics_port is not None:
        try:
            metrics_http = MetricsHTTPServer(metrics, metrics_host, metrics_port)
        except OSError as exc:
            raise fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc.strerror or exc}", exc) from exc
    server = GanportServer(runner, grpc_server, registry, state, health_servicer, metrics, port, host=host,
                           metrics_http=metrics_http, executor=executor, http=http)
    server.repository = repository
    server.cache = cache
    if model_control == "poll" and repository.directory is not None:
        server.poll_seconds = float(poll_seconds)
    server.rest = http_app  # the rest.RestApp, or None without HTTP
    if http_app is not None:
        # The REST /v2/repository routes use the server's model repository (load/unload/index).
        http_app.repository = repository
    logger.info("configured %d model(s) on %s (port %d): %s", len(registry), address, port,
                ", ".join(f"{m.name} v{m.version} [{m.backend}/{m.device}, {m.batcher.instances} instance(s)]"
                          for m in registry.served()))
    return server, port
