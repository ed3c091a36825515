"""The KServe v2 / Open Inference Protocol ``inference.GRPCInferenceService`` subset.

Lets an unmodified ``tritonclient.grpc.InferenceServerClient`` (or any KServe v2 client) call a
ganport model as it would call Triton: inputs ``z`` (FP32 ``[N, latent_dim]``) and ``label``
(INT64 ``[N]``, conditional models), output ``image`` (FP32 ``[N, C, H, W]``) always in
``raw_output_contents``. ModelInfer goes through the same batcher as the native API, so a
``z`` drawn with ``Generator.sample_latents(n, seed)`` gives the same image both ways.

Why a private descriptor pool: the generated ``ganport.v1.kserve_pb2`` registers the
``inference.*`` messages in protobuf's default pool, and ``tritonclient.grpc`` registers the same
names there from its own file; whichever comes second fails to import. So this module builds the
messages from ``ganport.v1.kserve_descriptor`` (generated from the same ``kserve.proto``) in a pool
of its own, and registers the service with generic handlers. A process can then run a ganport
server and use tritonclient at the same time. :data:`messages` and :class:`KServeStub` give
Python callers the same types without touching the default pool.
"""

from __future__ import annotations

import logging
import math
import types
from typing import Callable

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ganport import __version__
from ganport.errors import InvalidInputError, ModelNotFoundError
from ganport.runtime.server.servicer import Limits, ModelRegistry, ServedModel, check_latents, check_size
from ganport.v1 import kserve_descriptor

logger = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
#: The only model version ganport serves; an empty version means the same.
MODEL_VERSION = "1"
_PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "pt2": "pytorch_pt2"}
# Datatype -> little-endian numpy dtype for raw contents, and the typed-contents field to read.
_DTYPES = {"FP32": ("<f4", "fp32_contents"), "INT64": ("<i8", "int64_contents"),
           "INT32": ("<i4", "int_contents")}
_ACCEPTED = {"z": ("FP32",), "label": ("INT64", "INT32")}
# Largest non-batch dimension accepted in a tensor shape (latent sizes are far smaller).
_MAX_INNER_DIM = 65536


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
messages = types.SimpleNamespace(**{
    name: message_factory.GetMessageClass(descriptor)
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

    Register it with :func:`ganport.runtime.server.rpc.add_service` and :data:`SERVICE`.

    Args:
        models: the served models.
        limits: request limits (max_count bounds the batch size N).
        is_ready: callable telling whether the server is serving (False while draining).
    """

    def __init__(self, models: ModelRegistry, limits: Limits, is_ready: Callable[[], bool]):
        self.models = models
        self.limits = limits
        self.is_ready = is_ready

    def _model(self, name: str, version: str) -> ServedModel:
        model = self.models.get_model(name)
        if version not in ("", MODEL_VERSION):
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; "
                                     f"available: {MODEL_VERSION!r}")
        return model

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
        return kpb.ServerMetadataResponse(name="ganport", version=__version__, extensions=[])

    async def ModelMetadata(self, request, context):
        model = self._model(request.name, request.version)
        spec = model.info.io_spec()
        tensor = kpb.ModelMetadataResponse.TensorMetadata

        def describe(entries):
            return [tensor(name=e["name"], datatype=e["dtype"].replace("float32", "FP32").replace("int64", "INT64"),
                           shape=list(e["shape"])) for e in entries]

        return kpb.ModelMetadataResponse(
            name=model.name, versions=[MODEL_VERSION], platform=_PLATFORMS.get(model.backend, model.backend),
            inputs=describe(spec["inputs"]), outputs=describe(spec["outputs"]))

    async def ModelInfer(self, request, context):
        model = self._model(request.model_name, request.model_version)
        for output in request.outputs:
            if output.name != "image":
                raise InvalidInputError(f"model {model.name!r} has no output {output.name!r}; "
                                        f"its only output is 'image'")
        tensors = self._read_inputs(request)
        info = model.info
        expected = {"z", "label"} if info.conditional else {"z"}
        missing = sorted(expected - set(tensors))
        if missing:
            raise InvalidInputError(f"missing input(s) {', '.join(missing)}; model {model.name!r} "
                                    f"takes {', '.join(sorted(expected))}")
        extra = sorted(set(tensors) - expected)
        if extra:
            raise InvalidInputError(f"unexpected input(s) {', '.join(extra)}; model {model.name!r} "
                                    f"takes {', '.join(sorted(expected))}")
        z = check_latents(model, tensors["z"], self.limits.max_count)
        labels = None
        if info.conditional:
            label = tensors["label"]
            if label.ndim == 2 and label.shape[1] == 1:  # Triton models often declare [N, 1]
                label = label[:, 0]
            if label.shape != (len(z),):
                raise InvalidInputError(f"input 'label' must have shape [{len(z)}] (one per row of z), "
                                        f"got {list(label.shape)}")
            labels = model.generator.resolve_labels(label.astype(np.int64), len(z))
        images = np.ascontiguousarray(await model.run(z, labels, context), dtype="<f4")
        response = kpb.ModelInferResponse(
            model_name=model.name, model_version=MODEL_VERSION, id=request.id,
            outputs=[kpb.ModelInferResponse.InferOutputTensor(name="image", datatype="FP32",
                                                               shape=list(images.shape))],
            raw_output_contents=[images.tobytes()])
        check_size(response, self.limits.max_send_bytes, "send fewer rows per request")
        return response

    def _check_shape(self, name: str, dims) -> tuple[int, ...]:
        """Bound every dimension before any arithmetic on them (no overflow, no huge products)."""
        shape = tuple(int(v) for v in dims)
        rank = 2 if name == "z" else (1, 2)
        if len(shape) not in ((rank,) if isinstance(rank, int) else rank):
            expected = "[N, latent_dim]" if name == "z" else "[N] or [N, 1]"
            raise InvalidInputError(f"input {name!r} must have shape {expected}, got {list(shape)}")
        limit = max(self.limits.max_count, _MAX_INNER_DIM)
        if any(v < 1 or v > limit for v in shape):
            raise InvalidInputError(f"input {name!r} has an invalid shape {list(shape)}: every dimension "
                                    f"must be in 1..{limit} (batch size at most {self.limits.max_count})")
        return shape

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
            if name not in _ACCEPTED:
                raise InvalidInputError(f"unknown input {name!r}; inputs are 'z' and 'label'")
            if tensor.datatype not in _ACCEPTED[name]:
                raise InvalidInputError(f"input {name!r} must be {' or '.join(_ACCEPTED[name])}, "
                                        f"got {tensor.datatype or '(none)'}")
            shape = self._check_shape(name, tensor.shape)
            dtype, field = _DTYPES[tensor.datatype]
            count = math.prod(shape)
            if raw:
                data = raw[index]
                expected = count * np.dtype(dtype).itemsize
                if len(data) != expected:
                    raise InvalidInputError(f"input {name!r}: {len(data)} bytes of raw data, shape "
                                            f"{list(shape)} {tensor.datatype} needs {expected}")
                array = np.frombuffer(data, dtype=dtype)
            else:
                values = getattr(tensor.contents, field)
                if len(values) != count:
                    raise InvalidInputError(f"input {name!r}: {len(values)} values in contents.{field}, "
                                            f"shape {list(shape)} needs {count}")
                array = np.asarray(values, dtype=dtype)
            tensors[name] = array.reshape(shape)
        return tensors
