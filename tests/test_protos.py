"""The service definitions: committed stubs are exactly what the generator script produces, every
element of the ganport API is documented, and the KServe subset is wire-identical to Triton's.

Descriptors are read from ``protoc --descriptor_set_out`` (plain messages), never imported into
protobuf's default pool, so this module can sit next to anything else in a pytest run.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_protos  # noqa: E402

# The stubs come from a pinned grpcio-tools, installed once into build/ by the generator script.
try:
    gen_protos.tool_dir()
except gen_protos.ToolUnavailable as exc:
    pytest.skip(str(exc), allow_module_level=True)

# FieldDescriptorProto path components in SourceCodeInfo locations.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM = 2, 3, 4
_ENUM_VALUE, _METHOD = 2, 2


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    out = tmp_path_factory.mktemp("descriptors") / "set.pb"
    files = [str(f) for f in gen_protos.proto_files()]
    gen_protos.protoc([f"-I{gen_protos.PROTO_ROOT}", f"--descriptor_set_out={out}", "--include_source_info",
                       *files])
    result = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in result.file}


def test_committed_stubs_match_the_generator(tmp_path):
    generated = gen_protos.generate(tmp_path)
    assert {p.name for p in generated} >= {"generator_pb2.py", "generator_pb2_grpc.py", "generator_pb2.pyi",
                                           "kserve_pb2.py", "kserve_pb2_grpc.py", "kserve_pb2.pyi",
                                           "generator.proto", "kserve.proto"}
    committed = ROOT / gen_protos.PACKAGE_DIR
    stale = [p.name for p in generated if (committed / p.name).read_bytes() != p.read_bytes()]
    assert not stale, f"stubs out of date, run `python scripts/gen_protos.py` (or `make protos`): {stale}"
    extra = {p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi", ".proto")} \
        - {p.name for p in generated} - {"__init__.py"}
    assert not extra, f"generated files without a .proto source: {sorted(extra)}"


def test_python_modules_live_under_ganport_v1(descriptor_set):
    assert set(descriptor_set) == {"ganport/v1/generator.proto", "ganport/v1/kserve.proto"}
    assert descriptor_set["ganport/v1/generator.proto"].package == "ganport.v1"
    assert descriptor_set["ganport/v1/kserve.proto"].package == "inference"
    assert not (ROOT / "inference").exists(), "no top-level `inference` package"


def _documented(proto: descriptor_pb2.FileDescriptorProto) -> dict[tuple, str]:
    return {tuple(loc.path): loc.leading_comments.strip() for loc in proto.source_code_info.location}


def _elements(proto: descriptor_pb2.FileDescriptorProto):
    """(path, name) of every message, field, enum, enum value, service and method."""
    def message(msg, path):
        if not msg.options.map_entry:
            yield path, msg.name
            for i, field in enumerate(msg.field):
                yield (*path, _FIELD, i), f"{msg.name}.{field.name}"
        for i, nested in enumerate(msg.nested_type):
            yield from message(nested, (*path, _NESTED, i))
        for i, enum in enumerate(msg.enum_type):
            yield from enum_type(enum, (*path, _NESTED_ENUM, i))

    def enum_type(enum, path):
        yield path, enum.name
        for i, value in enumerate(enum.value):
            yield (*path, _ENUM_VALUE, i), value.name

    for i, msg in enumerate(proto.message_type):
        yield from message(msg, (_MESSAGE, i))
    for i, enum in enumerate(proto.enum_type):
        yield from enum_type(enum, (_ENUM, i))
    for i, service in enumerate(proto.service):
        yield (_SERVICE, i), service.name
        for j, method in enumerate(service.method):
            yield (_SERVICE, i, _METHOD, j), f"{service.name}.{method.name}"


@pytest.mark.parametrize("name", ["ganport/v1/generator.proto", "ganport/v1/kserve.proto"])
def test_every_element_is_documented(descriptor_set, name):
    proto = descriptor_set[name]
    comments = _documented(proto)
    # Empty request messages (e.g. ListModelsRequest {}) need no words.
    undocumented = [label for path, label in _elements(proto)
                    if not comments.get(path) and not _is_empty_message(proto, path)]
    assert not undocumented, f"{name}: document these in the .proto: {undocumented}"


def _is_empty_message(proto, path) -> bool:
    if len(path) != 2 or path[0] != _MESSAGE:
        return False
    return not proto.message_type[path[1]].field


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient not installed")
def test_kserve_subset_is_wire_identical_to_triton(descriptor_set):
    # tritonclient registers the same names as kserve_pb2, so read its descriptors in another
    # process. Triton splits the API in two files (service and model config); ours has both.
    code = ("import sys; from google.protobuf import descriptor_pb2 as d; "
            "from tritonclient.grpc import service_pb2 as s, model_config_pb2 as m; "
            "sys.stdout.buffer.write(d.FileDescriptorSet(file=[d.FileDescriptorProto.FromString("
            "x.DESCRIPTOR.serialized_pb) for x in (s, m)]).SerializeToString())")
    service_file, config_file = descriptor_pb2.FileDescriptorSet.FromString(
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout).file
    triton = descriptor_pb2.FileDescriptorProto()
    triton.CopyFrom(service_file)
    triton.message_type.extend(config_file.message_type)
    triton.enum_type.extend(config_file.enum_type)
    ours = descriptor_set["ganport/v1/kserve.proto"]
    assert ours.package == triton.package == "inference"

    def messages(proto):
        out = {}

        def walk(msg, prefix):
            full = f"{prefix}.{msg.name}"
            out[full] = msg
            for nested in msg.nested_type:
                walk(nested, full)

        for msg in proto.message_type:
            walk(msg, f".{proto.package}")
        return out

    theirs_by_name, ours_by_name = messages(triton), messages(ours)
    for name, msg in ours_by_name.items():
        assert name in theirs_by_name, f"{name} is not a Triton message"
        theirs = {f.number: f for f in theirs_by_name[name].field}
        for field in msg.field:
            other = theirs.get(field.number)
            assert other is not None, f"{name}.{field.name} (#{field.number}) is not in Triton's proto"
            assert (field.name, field.type, field.label, field.type_name, field.HasField("oneof_index")) == \
                   (other.name, other.type, other.label, other.type_name, other.HasField("oneof_index")), \
                   f"{name}.{field.name} differs from Triton's"
    [service] = ours.service
    triton_methods = {m.name: m for m in triton.service[0].method}
    assert service.name == triton.service[0].name == "GRPCInferenceService"
    for method in service.method:
        other = triton_methods[method.name]
        assert (method.input_type, method.output_type, method.server_streaming, method.client_streaming) == \
               (other.input_type, other.output_type, other.server_streaming, other.client_streaming)
    # Every call of Triton's service is declared (those ganport does not serve answer UNIMPLEMENTED).
    assert {m.name for m in service.method} == set(triton_methods)
    for enum in ours.enum_type:
        [other] = [e for e in triton.enum_type if e.name == enum.name]
        assert [(v.name, v.number) for v in enum.value] == [(v.name, v.number) for v in other.value]
