"""Seeded request fuzzing for the gRPC services: random, mutated and undecodable request bodies.

Bodies are built from the services' own descriptors (every field of every request message, with
values chosen to hit limits: negative and huge integers, 4301-digit class names, NaN floats,
shapes that overflow, unknown enums), then some are truncated or bit-flipped, and some are plain
random bytes. Calls go out as raw bytes, so the server's own decoding is exercised.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import grpc
from google.protobuf import descriptor, message_factory

#: Status codes a ganport server may answer to any request a client can send.
DOCUMENTED_CODES = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
}

_INTS = (0, 1, 2, 3, -1, 7, 61, 62, 63, 64, 65, 200, 1024, 1025, 65536, 2 ** 31 - 1, -2 ** 31, 2 ** 62,
         2 ** 63 - 1, -2 ** 63)
_FLOATS = (0.0, 1.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e38, 5e-324)
_TENSOR_TYPES = ("FP32", "INT64", "INT32", "UINT8", "BYTES", "", "fp32", "FP64")


def _repeated(field: descriptor.FieldDescriptor) -> bool:
    """Whether a field is repeated (protobuf 7 has ``is_repeated``; older ones only ``label``)."""
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == 3  # LABEL_REPEATED


@dataclass
class Call:
    """One fuzzed call: the full method path, whether the response streams, and the raw body."""

    path: str
    server_streaming: bool
    body: bytes


class Fuzzer:
    """Builds seeded random calls for the given services.

    Args:
        services: service descriptors whose unary-request methods are fuzzed.
        model_names: real model names, used for about half of the name fields.
        seed: the random seed (the same seed gives the same calls).
        exclude: method names not to call.
    """

    def __init__(self, services: Iterable[descriptor.ServiceDescriptor], model_names: Sequence[str], seed: int = 0,
                 exclude: Iterable[str] = ()):
        self.random = random.Random(seed)
        skip = set(exclude)
        self.methods = [(service, method) for service in services for method in service.methods
                        if not method.client_streaming and method.name not in skip]
        self.strings = (*model_names, *model_names, "", "nope", "A", "9" * 4301, "x" * 5000, "é€😀", "0", "61",
                        "z", "label", "image", "1", "2")

    def _value(self, field: descriptor.FieldDescriptor, depth: int) -> Any:
        r = self.random
        if field.type == field.TYPE_MESSAGE:
            return self.message(field.message_type, depth + 1)
        if field.type == field.TYPE_STRING:
            return r.choice(self.strings)
        if field.type == field.TYPE_BYTES:
            n = r.choice((0, 1, 4, 8, 31, 32, 64, 300, 4096))
            return r.randbytes(n)
        if field.type == field.TYPE_BOOL:
            return r.random() < 0.5
        if field.type == field.TYPE_ENUM:
            return r.choice([v.number for v in field.enum_type.values] + [99, -1])
        if field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            return r.choice(_FLOATS)
        if field.type in (field.TYPE_UINT32, field.TYPE_FIXED32):
            return r.choice([v for v in _INTS if 0 <= v < 2 ** 32])
        if field.type in (field.TYPE_UINT64, field.TYPE_FIXED64):
            return r.choice([v for v in _INTS if v >= 0])
        if field.type in (field.TYPE_INT32, field.TYPE_SINT32, field.TYPE_SFIXED32):
            return r.choice([v for v in _INTS if -2 ** 31 <= v < 2 ** 31])
        return r.choice(_INTS)

    def message(self, message_descriptor: descriptor.Descriptor, depth: int = 0):
        """A message of this type with random fields set (nested up to depth 3)."""
        cls = message_factory.GetMessageClass(message_descriptor)
        msg = cls()
        if depth > 3:
            return msg
        r = self.random
        for field in message_descriptor.fields:
            if r.random() < 0.35:
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue  # map parameters: left empty
            try:
                if _repeated(field):
                    count = r.choice((0, 1, 1, 2, 3, 5))
                    values = [self._value(field, depth) for _ in range(count)]
                    target = getattr(msg, field.name)
                    if field.type == field.TYPE_MESSAGE:
                        for value in values:
                            target.add().CopyFrom(value)
                    else:
                        target.extend(values)
                elif field.type == field.TYPE_MESSAGE:
                    getattr(msg, field.name).CopyFrom(self._value(field, depth))
                else:
                    setattr(msg, field.name, self._value(field, depth))
            except (ValueError, TypeError):
                continue  # a value this field cannot hold
        return msg

    def call(self) -> Call:
        """One random call: a random valid message (60%), a mutated one (25%) or random bytes."""
        r = self.random
        service, method = r.choice(self.methods)
        path = f"/{service.full_name}/{method.name}"
        roll = r.random()
        if roll < 0.15:
            body = r.randbytes(r.choice((1, 2, 3, 5, 16, 64)))
        else:
            body = self.message(method.input_type).SerializeToString()
            if roll < 0.40 and body:
                body = bytearray(body)
                if r.random() < 0.5:
                    del body[r.randrange(len(body)):]
                for _ in range(r.randint(1, 4)):
                    if body:
                        body[r.randrange(len(body))] = r.randrange(256)
                body = bytes(body) or b"\xff"
        return Call(path, method.server_streaming, body)


def send(channel: grpc.Channel, call: Call, timeout: float = 20.0,
         metadata: Optional[Sequence[tuple[str, str]]] = None) -> tuple[grpc.StatusCode, str]:
    """Send ``call`` as raw bytes; returns (status code, details)."""
    try:
        if call.server_streaming:
            stream = channel.unary_stream(call.path, request_serializer=None, response_deserializer=None)
            for _ in stream(call.body, timeout=timeout, metadata=metadata):
                pass
        else:
            channel.unary_unary(call.path, request_serializer=None, response_deserializer=None)(
                call.body, timeout=timeout, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def float_bytes(values: Sequence[float]) -> bytes:
    """Little-endian float32 bytes."""
    return struct.pack(f"<{len(values)}f", *values)
