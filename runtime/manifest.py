"""The model package's self-description: one schema for manifest.json, ONNX metadata_props and
TorchScript extra files.

Export writes it (``ganport.export``), the runtime and the server read it. This module is
torch-free and onnx-free so that the edge install can read any artifact's metadata.

A package directory holds ``manifest.json`` plus the artifacts named in ``files``. Every field is
also stored in each artifact, one key per field with a JSON-encoded value, so a lone ``.onnx`` or
``.ts`` file describes itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ganport.errors import PackageError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
#: TorchScript/pt2 extra file holding the whole ``to_metadata()`` dict as one JSON object (export
#: also writes one extra file per key; readers accept either).
METADATA_FILE = "ganport.json"
#: Metadata key that only half-precision and int8 artifacts carry, besides the shared
#: ``to_metadata()`` dict: their precision (``"fp16"``, ``"int8"``; absent means fp32). It is what
#: lets the runtime refuse an fp32 file where the manifest names the int8 one, and vice versa.
PRECISION_KEY = "artifact_precision"
#: Artifact precisions; ``files`` keys name them (``onnx`` fp32, ``onnx_fp16``, ``onnx_int8``).
PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST_FORMAT = "ganport.model"
MANIFEST_VERSION = 1

#: Every model kind, in help order. This module is the one home of the kind tables (it is
#: torch-free, so the trainer, export, runtime and server all import them from here).
KINDS = ("gan", "dcgan", "cgan", "cdcgan", "aae")
#: Kinds whose generator takes a ``label`` input (a tuple: its order is stable in messages).
CONDITIONAL_KINDS = ("cgan", "cdcgan")
#: Kinds whose generator is convolutional: the only ones ``--arch`` applies to, and the ones
#: ``serve --instances auto`` gives two instances on CPU.
CONV_KINDS = ("dcgan", "cdcgan", "aae")
#: Kinds that also export an encoder (images -> latents).
ENCODER_KINDS = ("aae",)
#: Fields that define what a model computes: a package's manifest and the metadata embedded in
#: its artifacts must agree on each (name, files, dates and versions may differ: a package can be
#: renamed, and the manifest lists files the artifacts cannot know of).
MODEL_FIELDS = ("kind", "latent_dim", "n_classes", "class_names", "image_shape", "value_range")


@dataclass
class ModelInfo:
    """Everything needed to use an exported generator without its checkpoint.

    Args:
        name: model name (the package directory name by default); the server serves it under it.
        kind: one of ``KINDS``.
        latent_dim: length of each latent vector ``z``.
        n_classes: number of classes for conditional models, 0 otherwise.
        class_names: class names in label order (empty for unconditional models).
        image_shape: ``[C, H, W]`` of the generated images.
        value_range: range of the ``image`` output, ``[-1.0, 1.0]``.
        dataset: name of the training data set.
        files: artifact names in the package by format (``onnx``, ``torchscript``, ``pt2``,
            ``onnx_fp16``, ``encoder_onnx``, ``encoder_torchscript``, ``encoder_pt2``).
        opset: ONNX opset used, or None.
        exporter: which ONNX exporter wrote the graph (``dynamo`` or ``legacy``), or None.
        source_checkpoint_sha256: SHA-256 of the checkpoint the package was exported from.
        ganport_version: ganport version that exported the package.
        created: ISO-8601 UTC export time.
        quantization: how ``model.int8.onnx`` was made (empty without one): method (``static``
            QDQ or ``dynamic``), per-channel weights, calibration batches, the operators left in
            float, and the verification tolerance.
        provenance: where the weights come from, for packages shipped as they are (the built-in
            models): training command, steps, source checkpoint, evaluation figures.
    """

    name: str
    kind: str
    latent_dim: int
    n_classes: int
    class_names: list[str]
    image_shape: list[int]
    value_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    dataset: str = ""
    files: dict[str, str] = field(default_factory=dict)
    opset: int | None = None
    exporter: str | None = None
    source_checkpoint_sha256: str = ""
    ganport_version: str = ""
    created: str = ""
    quantization: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT
    format_version: int = MANIFEST_VERSION

    @property
    def conditional(self) -> bool:
        """True when the generator takes a ``label`` input."""
        return self.kind in CONDITIONAL_KINDS

    @property
    def has_encoder(self) -> bool:
        """True for kinds that export an encoder (AAE)."""
        return self.kind in ENCODER_KINDS

    @property
    def channels(self) -> int:
        return int(self.image_shape[0])

    @property
    def height(self) -> int:
        return int(self.image_shape[1])

    @property
    def width(self) -> int:
        return int(self.image_shape[2])

    def io_spec(self) -> dict[str, Any]:
        """Named inputs and outputs of the generator (and encoder), batch axis ``-1``."""
        inputs = [{"name": "z", "dtype": "float32", "shape": [-1, self.latent_dim]}]
        if self.conditional:
            inputs.append({"name": "label", "dtype": "int64", "shape": [-1]})
        spec: dict[str, Any] = {
            "inputs": inputs,
            "outputs": [{"name": "image", "dtype": "float32", "shape": [-1, *self.image_shape]}],
        }
        if self.has_encoder:
            spec["encoder_inputs"] = [{"name": "image", "dtype": "float32", "shape": [-1, *self.image_shape]}]
            spec["encoder_outputs"] = [{"name": "z", "dtype": "float32", "shape": [-1, self.latent_dim]}]
        return spec

    def differences(self, other: "ModelInfo", fields: tuple[str, ...] = MODEL_FIELDS) -> list[tuple[str, Any, Any]]:
        """``(field, self's value, other's value)`` for each of ``fields`` where the two differ.

        Example:
            >>> a = ModelInfo("m", "gan", 100, 0, [], [1, 28, 28])
            >>> a.differences(ModelInfo("m", "gan", 64, 0, [], [1, 28, 28]))
            [('latent_dim', 100, 64)]
        """
        return [(name, getattr(self, name), getattr(other, name)) for name in fields
                if getattr(self, name) != getattr(other, name)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, including the derived input/output spec."""
        data = asdict(self)
        data["conditional"] = self.conditional
        data.update(self.io_spec())
        return data

    def to_metadata(self) -> dict[str, str]:
        """One key per field, JSON-encoded values: for ONNX metadata_props and TorchScript extra files."""
        return {key: json.dumps(value, sort_keys=True) for key, value in self.to_dict().items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "manifest") -> "ModelInfo":
        """Validate and build from a dict read from any artifact.

        Raises:
            PackageError: a required field is missing or has the wrong type.
        """
        if data.get("format", MANIFEST_FORMAT) != MANIFEST_FORMAT:
            raise PackageError(f"{source} is not a ganport model (format={data.get('format')!r})",
                               hint="export one with `ganport export CHECKPOINT -o DIR`")
        version = int(data.get("format_version", MANIFEST_VERSION))
        if version > MANIFEST_VERSION:
            raise PackageError(f"{source} has format_version {version}, newer than this ganport "
                               f"understands ({MANIFEST_VERSION})", hint="upgrade ganport")
        missing = [k for k in ("kind", "latent_dim", "image_shape") if k not in data]
        if missing:
            raise PackageError(f"{source} lacks required field(s) {', '.join(missing)}",
                               hint="re-export the model with `ganport export`")
        kind = str(data["kind"])
        if kind not in KINDS:
            raise PackageError(f"{source} has unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("name", "model")
        kwargs.setdefault("n_classes", len(data.get("class_names", [])))
        kwargs.setdefault("class_names", [])
        try:
            info = cls(**kwargs)
            info.latent_dim = int(info.latent_dim)
            info.n_classes = int(info.n_classes)
            info.image_shape = [int(v) for v in info.image_shape]
            info.class_names = [str(c) for c in info.class_names]
        except (TypeError, ValueError) as exc:
            raise PackageError(f"{source} has a malformed field: {exc}") from exc
        if len(info.image_shape) != 3:
            raise PackageError(f"{source} image_shape must be [C, H, W], got {info.image_shape}")
        if info.conditional and info.n_classes != len(info.class_names):
            raise PackageError(f"{source} says n_classes={info.n_classes} but lists "
                               f"{len(info.class_names)} class names")
        return info

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str = "artifact") -> "ModelInfo":
        """Inverse of :meth:`to_metadata` (ONNX metadata_props / TorchScript extra files)."""
        decoded: dict[str, Any] = {}
        for key, value in metadata.items():
            try:
                decoded[key] = json.loads(value)
            except (TypeError, ValueError):
                decoded[key] = value
        if "kind" not in decoded:
            raise PackageError(f"{source} carries no ganport metadata",
                               hint="export it with `ganport export`, or pass the package directory")
        return cls.from_dict(decoded, source=source)


def artifact_precision(metadata: Mapping[str, str]) -> str:
    """The precision an artifact's embedded metadata declares (``fp32`` when it declares none)."""
    value = metadata.get(PRECISION_KEY)
    if value is None:
        return "fp32"
    try:
        return str(json.loads(value))
    except (TypeError, ValueError):
        return str(value)


def triton_dims(shape: Sequence[int]) -> tuple[list[int], Optional[list[int]]]:
    """Triton's ``(dims, reshape)`` for a tensor of ``shape`` (batch axis first, ``-1``).

    Triton leaves the batch axis implicit and needs non-empty dims, so a ``[N]`` tensor (the
    label) is declared ``dims: [1]`` with ``reshape: { shape: [] }``: clients send ``[N, 1]``
    and the model receives ``[N]``. Other tensors keep their dims and need no reshape.

    Example:
        >>> triton_dims([-1]), triton_dims([-1, 8])
        (([1], []), ([8], None))
    """
    dims = [int(d) for d in shape[1:]]
    if not dims:
        return [1], []
    return dims, None


def write_manifest(directory: str | Path, info: ModelInfo) -> Path:
    """Write ``manifest.json`` into ``directory`` and return its path."""
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: str | Path) -> ModelInfo:
    """Read and validate ``manifest.json`` of a package directory.

    Raises:
        PackageError: the directory or manifest is missing or malformed.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise PackageError(f"{directory} is not a model package: {MANIFEST_NAME} not found",
                           hint="export one with `ganport export CHECKPOINT -o DIR`")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PackageError(f"{path} must hold a JSON object")
    return ModelInfo.from_dict(data, source=str(path))
