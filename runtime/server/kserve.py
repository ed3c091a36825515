"""The KServe v2 / Open Inference Protocol ``inference.GRPCInferenceService`` (Triton's gRPC API).

Lets an unmodified ``tritonclient.grpc.InferenceServerClient`` (or any KServe v2 client) call a
ganport model as it would call Triton: inputs ``z`` (FP32 ``[N, latent_dim]``) and ``label``
(INT64 ``[N, 1]`` or ``[N]``, conditional models), output ``image`` (FP32 ``[N, C, H, W]``) always
in ``raw_output_contents``. ModelInfer and ModelStreamInfer go through the same batcher as the
native API, so a ``z`` drawn with ``Generator.sample_latents(n, seed)`` gives the same image both
ways. Served: health, metadata, infer, stream infer, model config, statistics and the model
repository (index/load/unload); the shared-memory, trace and log-settings calls answer
UNIMPLEMENTED naming the calls that are served. The protocol logic lives in :mod:`.inference` and
:mod:`.repository` (shared with the REST surface); this module translates gRPC messages.

Why a private descriptor pool: the generated ``ganport.v1.kserve_pb2`` registers the
``inference.*`` messages in protobuf's default pool, and ``tritonclient.grpc`` registers the same
names there from its own file; whichever comes second fails to import. So this module builds the
messages from ``ganport.v1.kserve_descriptor`` (generated from the same ``kserve.proto``) in a pool
of its own, and registers the service with generic handlers. A process can then run a ganport
server and use tritonclient at the same time. :data:`messages` and :class:`KServeStub` give
Python callers the same types without touching the default pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from typing import Any, AsyncIterator, Callable, Optional

from ganport.extras import require

require("serve", "the ganport server")  # one line naming the extra, not a ModuleNotFoundError for grpc

import grpc  # noqa: E402
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from ganport import __version__
from ganport.errors import InvalidInputError, ModelNotFoundError
from ganport.runtime.server import inference
from ganport.runtime.server.repository import ModelRepository
from ganport.runtime.server.servicer import Limits, ModelRegistry, ServedModel, check_size
from ganport.runtime.server.status import UnimplementedError, status_for
from ganport.v1 import kserve_descriptor

logger = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
# Datatype -> the typed-contents field to read when no raw contents are given.
_CONTENTS = {"FP32": "fp32_contents", "INT64": "int64_contents", "INT32": "int_contents"}
#: Calls of the protocol ganport does not serve (they answer UNIMPLEMENTED), and why.
_SHM = "shared memory (send tensors in the request instead)"
_CUDA_SHM = "CUDA shared memory (send tensors in the request instead)"
UNIMPLEMENTED = {
    "SystemSharedMemoryStatus": _SHM, "SystemSharedMemoryRegister": _SHM, "SystemSharedMemoryUnregister": _SHM,
    "CudaSharedMemoryStatus": _CUDA_SHM, "CudaSharedMemoryRegister": _CUDA_SHM,
    "CudaSharedMemoryUnregister": _CUDA_SHM,
    "TraceSetting": "trace settings (use the Prometheus metrics and ModelStatistics)",
    "LogSettings": "log settings (logging is configured when the server starts)",
}
#: Most requests of one ModelStreamInfer stream in flight at once; reading pauses beyond it.
STREAM_IN_FLIGHT = 64


def _build_pool() -> tuple[descriptor_pool.DescriptorPool, descriptor_pb2.FileDescriptorProto]:
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(kserve_descriptor.SERIALIZED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return pool, file_proto


#: Private pool holding ``kserve.proto``; FILE_PROTO is its FileDescriptorProto (for reflection).
POOL, FILE_PROTO = _build_pool()
_SERVICE = POOL.FindServiceByName(SERVICE_NAME)

#: The KServe message classes by name, e.g. ``messages.ModelInferRequest`` (nested types are
#: attributes of their parent, as in generated code).
def _message_class(descriptor) -> type:
    """The class for ``descriptor`` with its nested message classes as attributes.

    The C (upb) protobuf backend attaches nested classes itself; the pure-Python backend
    (``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``) does not for classes made from a pool.
    """
    cls = message_factory.GetMessageClass(descriptor)
    for nested in descriptor.nested_types:
        if not nested.GetOptions().map_entry and not hasattr(cls, nested.name):
            setattr(cls, nested.name, _message_class(nested))
    return cls


messages = types.SimpleNamespace(**{
    name: _message_class(descriptor)
    for name, descriptor in POOL.FindFileByName(kserve_descriptor.NAME).message_types_by_name.items()})


def _method_types(method) -> tuple[type, type]:
    return (message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type))


#: The service descriptor (from the private pool), for :func:`~ganport.runtime.server.rpc.add_service`.
SERVICE = _SERVICE


class KServeStub:
    """Client stub for the KServe subset (methods named as the RPCs), from the private pool.

    Example:
        >>> stub = KServeStub(grpc.insecure_channel("127.0.0.1:50051"))       # doctest: +SKIP
        >>> stub.ServerLive(messages.ServerLiveRequest()).live               # doctest: +SKIP
        True
    """

    def __init__(self, channel: grpc.Channel):
        for method in _SERVICE.methods:
            request_type, response_type = _method_types(method)
            setattr(self, method.name, channel.unary_unary(
                f"/{SERVICE_NAME}/{method.name}", request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString))


kpb = messages  # short alias used below, mirroring the generated module's usual import name


class KServeServicer:
    """Implements the KServe v2 inference service over the served models (``grpc.aio``).

    Register it with :func:`ganport.runtime.server.rpc.add_service` and :data:`SERVICE`. The
    protocol logic lives in :mod:`.inference`; this class translates the gRPC messages.

    Args:
        models: the served models.
        limits: request limits (max_count bounds the batch size N).
        is_ready: callable telling whether the server is serving (False while draining).
    """

    def __init__(self, models: ModelRegistry, limits: Limits, is_ready: Callable[[], bool], *,
                 repository: Optional[ModelRepository] = None, metrics: Any = None):
        self.models = models
        self.limits = limits
        self.is_ready = is_ready
        self.repository = repository if repository is not None else ModelRepository(models)
        self.metrics = metrics

    def _model(self, name: str, version: str) -> ServedModel:
        return self.models.get_model(name, version)

    async def ServerLive(self, request, context):
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return kpb.ServerReadyResponse(ready=bool(self.is_ready()))

    async def ModelReady(self, request, context):
        # Triton answers "not ready" (not an error) for a model it does not serve, so readiness
        # loops written for Triton keep polling.
        try:
            self._model(request.name, request.version)
        except ModelNotFoundError:
            return kpb.ModelReadyResponse(ready=False)
        return kpb.ModelReadyResponse(ready=bool(self.is_ready()))

    async def ServerMetadata(self, request, context):
        return kpb.ServerMetadataResponse(name="ganport", version=__version__, extensions=list(inference.EXTENSIONS))

    async def ModelMetadata(self, request, context):
        model = self._model(request.name, request.version)
        meta = inference.model_metadata(model, list(self.models.versions(model.name)))
        tensor = kpb.ModelMetadataResponse.TensorMetadata
        return kpb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])

    async def ModelInfer(self, request, context):
        return await self._infer(request, context)

    async def _infer(self, request, context):
        model = self._model(request.model_name, request.model_version)
        inference.check_outputs(model, [output.name for output in request.outputs])
        images = await inference.infer(model, self._read_inputs(request), self.limits, context)
        response = kpb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id,
            outputs=[kpb.ModelInferResponse.InferOutputTensor(name=inference.OUTPUT, datatype="FP32",
                                                               shape=list(images.shape))],
            raw_output_contents=[images.tobytes()])
        check_size(response, self.limits.max_send_bytes, "send fewer rows per request")
        return response

    async def ModelStreamInfer(self, requests: AsyncIterator[Any], context) -> AsyncIterator[Any]:
        """Each request runs concurrently; answers are sent as they complete, each with its
        request's id. A failed request is answered with ``error_message`` and the stream goes on,
        as Triton does. At most :data:`STREAM_IN_FLIGHT` requests are running or waiting to be
        sent at once; beyond that the stream stops reading (so a client that sends without reading
        answers cannot grow the server's memory)."""
        answers: asyncio.Queue = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
        tasks: set[asyncio.Task] = set()
        done = object()

        async def answer(request) -> None:
            await answers.put(await self._stream_one(request, context))

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    task = asyncio.ensure_future(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks))
                await answers.put(done)
            except Exception as exc:  # noqa: BLE001 - e.g. an undecodable message: ends the stream
                await answers.put(exc)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                item = await answers.get()
                if item is done:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
                slots.release()  # sent: room for one more request
        finally:
            for task in (reader, *tasks):
                task.cancel()

    async def _stream_one(self, request, context):
        """One stream request -> a ModelStreamInferResponse (never raises a request's error)."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return kpb.ModelStreamInferResponse(infer_response=await self._infer(request, context))
        except Exception as exc:  # noqa: BLE001 - reported in the stream, as Triton does
            code, message = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                logger.error("ModelStreamInfer model=%s failed with an unexpected error", request.model_name,
                             exc_info=exc)
            return kpb.ModelStreamInferResponse(
                error_message=message,
                infer_response=kpb.ModelInferResponse(model_name=request.model_name,
                                                      model_version=request.model_version, id=request.id))
        finally:
            if self.metrics is not None:  # per request, so statistics count stream requests too
                label = request.model_name if request.model_name in self.models else ""
                self.metrics.observe_request(label, "ModelStreamInfer", code.name, time.perf_counter() - started)

    async def ModelConfig(self, request, context):
        model = self._model(request.name, request.version)
        config = inference.model_config(model, self.repository.policy(model.name))
        return kpb.ModelConfigResponse(config=json_format.ParseDict(config, kpb.ModelConfig()))

    async def ModelStatistics(self, request, context):
        if self.metrics is None:
            raise UnimplementedError("this server keeps no metrics, so it has no statistics")
        stats = inference.models_statistics(self.models, self.metrics, request.name, request.version)
        return kpb.ModelStatisticsResponse(
            model_stats=[json_format.ParseDict(entry, kpb.ModelStatistics()) for entry in stats])

    async def RepositoryIndex(self, request, context):
        if request.repository_name:
            raise ModelNotFoundError(f"no repository {request.repository_name!r}: ganport serves one "
                                     f"repository, named by an empty repository_name")
        entry = kpb.RepositoryIndexResponse.ModelIndex
        return kpb.RepositoryIndexResponse(
            models=[entry(**item) for item in self.repository.index(ready_only=request.ready)])

    async def RepositoryModelLoad(self, request, context):
        self._check_repository(request.repository_name)
        await self.repository.load(request.model_name)
        return kpb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        self._check_repository(request.repository_name)
        await self.repository.unload(request.model_name)
        return kpb.RepositoryModelUnloadResponse()

    @staticmethod
    def _check_repository(name: str) -> None:
        if name:
            raise ModelNotFoundError(f"no repository {name!r}: ganport serves one repository, named by an "
                                     f"empty repository_name")

    def _read_inputs(self, request) -> dict[str, np.ndarray]:
        """Decode every input tensor of a ModelInferRequest (raw or typed contents)."""
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidInputError(f"raw_input_contents has {len(raw)} entries for "
                                    f"{len(request.inputs)} inputs: give one per input or none")
        tensors: dict[str, np.ndarray] = {}
        for index, tensor in enumerate(request.inputs):
            name = tensor.name
            if name in tensors:
                raise InvalidInputError(f"input {name!r} given twice")
            if raw:
                tensors[name] = inference.tensor_from_bytes(name, tensor.datatype, tensor.shape, raw[index],
                                                            self.limits)
            else:
                inference.check_input(name, tensor.datatype, tensor.shape, self.limits)
                values = getattr(tensor.contents, _CONTENTS[tensor.datatype])
                tensors[name] = inference.tensor_from_values(name, tensor.datatype, tensor.shape, values,
                                                             self.limits)
        return tensors


def _unimplemented(method: str, what: str):
    served = ", ".join(m.name for m in _SERVICE.methods if m.name not in UNIMPLEMENTED)

    async def call(self, request, context):
        raise UnimplementedError(f"{method} is not implemented: ganport does not serve {what}. "
                                 f"Implemented calls: {served}")

    call.__name__ = method
    call.__doc__ = f"Not served: UNIMPLEMENTED, {what}."
    return call


for _method, _what in UNIMPLEMENTED.items():
    setattr(KServeServicer, _method, _unimplemented(_method, _what))
