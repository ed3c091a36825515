from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW_UINT8: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW_FLOAT32: _ClassVar[ImageEncoding]

class NoiseMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOISE_MODE_UNSPECIFIED: _ClassVar[NoiseMode]
    NOISE_MODE_PER_GLYPH: _ClassVar[NoiseMode]
    NOISE_MODE_SHARED: _ClassVar[NoiseMode]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_RAW_UINT8: ImageEncoding
IMAGE_ENCODING_RAW_FLOAT32: ImageEncoding
NOISE_MODE_UNSPECIFIED: NoiseMode
NOISE_MODE_PER_GLYPH: NoiseMode
NOISE_MODE_SHARED: NoiseMode

class ImageBatch(_message.Message):
    __slots__ = ("encoding", "shape", "data", "png")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    encoding: ImageEncoding
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    png: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, encoding: _Optional[_Union[ImageEncoding, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., png: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FloatTensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "latent_dim", "n_classes", "class_names", "image_shape", "value_range", "conditional", "has_encoder", "dataset", "backend", "device", "max_batch", "max_count", "max_stream_count", "max_text_length", "manifest_json", "version", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    N_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_RANGE_FIELD_NUMBER: _ClassVar[int]
    CONDITIONAL_FIELD_NUMBER: _ClassVar[int]
    HAS_ENCODER_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    latent_dim: int
    n_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    value_range: _containers.RepeatedScalarFieldContainer[float]
    conditional: bool
    has_encoder: bool
    dataset: str
    backend: str
    device: str
    max_batch: int
    max_count: int
    max_stream_count: int
    max_text_length: int
    manifest_json: str
    version: str
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., latent_dim: _Optional[int] = ..., n_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., image_shape: _Optional[_Iterable[int]] = ..., value_range: _Optional[_Iterable[float]] = ..., conditional: bool = ..., has_encoder: bool = ..., dataset: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., max_batch: _Optional[int] = ..., max_count: _Optional[int] = ..., max_stream_count: _Optional[int] = ..., max_text_length: _Optional[int] = ..., manifest_json: _Optional[str] = ..., version: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "state", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: str
    reason: str
    def __init__(self, version: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Labels(_message.Message):
    __slots__ = ("indices", "names")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "count", "seed", "labels", "encoding", "chunk_size", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    seed: int
    labels: Labels
    encoding: ImageEncoding
    chunk_size: int
    version: str
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., labels: _Optional[_Union[Labels, _Mapping]] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., chunk_size: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("model", "seed", "labels", "images", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    seed: int
    labels: _containers.RepeatedScalarFieldContainer[int]
    images: ImageBatch
    version: str
    def __init__(self, model: _Optional[str] = ..., seed: _Optional[int] = ..., labels: _Optional[_Iterable[int]] = ..., images: _Optional[_Union[ImageBatch, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("model", "seed", "offset", "total", "labels", "images", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    seed: int
    offset: int
    total: int
    labels: _containers.RepeatedScalarFieldContainer[int]
    images: ImageBatch
    version: str
    def __init__(self, model: _Optional[str] = ..., seed: _Optional[int] = ..., offset: _Optional[int] = ..., total: _Optional[int] = ..., labels: _Optional[_Iterable[int]] = ..., images: _Optional[_Union[ImageBatch, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("model", "latents", "labels", "encoding", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    latents: FloatTensor
    labels: Labels
    encoding: ImageEncoding
    version: str
    def __init__(self, model: _Optional[str] = ..., latents: _Optional[_Union[FloatTensor, _Mapping]] = ..., labels: _Optional[_Union[Labels, _Mapping]] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., version: _Optional[str] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("model", "labels", "images", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    labels: _containers.RepeatedScalarFieldContainer[int]
    images: ImageBatch
    version: str
    def __init__(self, model: _Optional[str] = ..., labels: _Optional[_Iterable[int]] = ..., images: _Optional[_Union[ImageBatch, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("model", "images", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: ImageBatch
    version: str
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Union[ImageBatch, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("model", "latents", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    latents: FloatTensor
    version: str
    def __init__(self, model: _Optional[str] = ..., latents: _Optional[_Union[FloatTensor, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...

class RenderWordRequest(_message.Message):
    __slots__ = ("model", "text", "seed", "noise", "spacing", "height", "encoding", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    SPACING_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    text: str
    seed: int
    noise: NoiseMode
    spacing: int
    height: int
    encoding: ImageEncoding
    version: str
    def __init__(self, model: _Optional[str] = ..., text: _Optional[str] = ..., seed: _Optional[int] = ..., noise: _Optional[_Union[NoiseMode, str]] = ..., spacing: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., version: _Optional[str] = ...) -> None: ...

class RenderWordResponse(_message.Message):
    __slots__ = ("model", "seed", "labels", "image", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    seed: int
    labels: _containers.RepeatedScalarFieldContainer[int]
    image: ImageBatch
    version: str
    def __init__(self, model: _Optional[str] = ..., seed: _Optional[int] = ..., labels: _Optional[_Iterable[int]] = ..., image: _Optional[_Union[ImageBatch, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...
