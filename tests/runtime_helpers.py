"""Tiny exported model packages for the runtime tests (needs torch and onnx).

The networks are small and untrained but deterministic (seeded), so a package builds in about a
second and every backend must reproduce the same numbers. The AAE is analytic rather than
trained: the generator is ``tanh(W z)`` and the encoder ``pinv(W) atanh(x)``, an exact inverse, so
``decode(encode(x))`` reconstructs without any training.

Packages follow the export contract in docs/ARCHITECTURE.md: inputs ``z`` (and ``label``), output
``image``, batch axis dynamic, metadata in manifest.json, ONNX ``metadata_props`` and TorchScript /
pt2 extra files.

Example:
    >>> build_package(tmp_path / "glyphs", kind="cgan", class_names=GLYPH_CLASSES)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import string
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ganport.runtime.manifest import ModelInfo, write_manifest

#: The 62 EMNIST-style glyph classes: digits, uppercase, lowercase.
GLYPH_CLASSES = list(string.digits + string.ascii_uppercase + string.ascii_lowercase)
DIGIT_CLASSES = list(string.digits)
UPPER_CLASSES = list(string.ascii_uppercase)

ALL_FORMATS = ("onnx", "torchscript", "pt2")
_FILES = {"onnx": ("model.onnx", "encoder.onnx"), "torchscript": ("model.ts", "encoder.ts"),
          "pt2": ("model.pt2", "encoder.pt2")}
_ENCODER_KEYS = {"onnx": "encoder_onnx", "torchscript": "encoder_torchscript", "pt2": "encoder_pt2"}


class TinyGenerator(nn.Module):
    """MLP generator; conditional when ``n_classes > 0`` (label embedding concatenated to z)."""

    def __init__(self, latent_dim: int, n_classes: int, image_shape: Sequence[int]):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.embed = nn.Embedding(n_classes, latent_dim) if n_classes else None
        width = latent_dim * (2 if n_classes else 1)
        self.net = nn.Sequential(nn.Linear(width, 48), nn.LeakyReLU(0.2),
                                 nn.Linear(48, math.prod(self.image_shape)), nn.Tanh())

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(label)], dim=1)
        return self.net(z).view(-1, *self.image_shape)


class LinearTanhGenerator(nn.Module):
    """``tanh(W z)``: the generator half of the analytic AAE."""

    def __init__(self, weight: torch.Tensor, image_shape: Sequence[int]):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z)).view(-1, *self.image_shape)


class PinvEncoder(nn.Module):
    """``pinv(W) atanh(x)``: inverts :class:`LinearTanhGenerator` exactly on its range."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        self.linear.weight.data.copy_(torch.linalg.pinv(weight))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        flat = image.flatten(1).clamp(-0.999, 0.999)
        # atanh spelled out: the legacy ONNX exporter has no symbolic for aten::atanh.
        return self.linear(0.5 * torch.log((1 + flat) / (1 - flat)))


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_name: str,
            directory: Path, file_names: dict[str, str], formats: Sequence[str], info: ModelInfo) -> None:
    """Write ``module`` in each format with the package's metadata embedded."""
    metadata = info.to_metadata()
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit and the legacy ONNX exporter warn they are deprecated
        if "onnx" in formats:
            import onnx

            path = directory / file_names["onnx"]
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=17,
                              input_names=input_names, output_names=[output_name],
                              dynamic_axes={name: {0: "N"} for name in [*input_names, output_name]})
            proto = onnx.load(str(path))
            onnx.helper.set_model_props(proto, metadata)
            onnx.save(proto, str(path))
        if "torchscript" in formats:
            traced = torch.jit.trace(module, example)
            torch.jit.save(traced, str(directory / file_names["torchscript"]), _extra_files=metadata)
        if "pt2" in formats:
            batch = torch.export.Dim("N", min=1, max=65536)
            program = torch.export.export(module, example, dynamic_shapes=tuple({0: batch} for _ in example))
            torch.export.save(program, str(directory / file_names["pt2"]), extra_files=metadata)


def build_package(out_dir: str | Path, kind: str = "cgan", class_names: Sequence[str] = GLYPH_CLASSES,
                  latent_dim: int = 8, image_shape: Sequence[int] = (1, 12, 12),
                  formats: Sequence[str] = ALL_FORMATS, name: str | None = None, seed: int = 0) -> Path:
    """Build a model package directory.

    Args:
        out_dir: the package directory (created).
        kind: ``cgan`` (conditional MLP), ``gan`` (unconditional MLP) or ``aae`` (analytic AAE).
        class_names: classes of a conditional model.
        latent_dim: latent length.
        image_shape: ``[C, H, W]``.
        formats: any of ``onnx``, ``torchscript``, ``pt2``.
        name: model name (default: the directory name).
        seed: torch seed for the weights.

    Returns:
        The package directory.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    conditional = kind == "cgan"
    classes = list(class_names) if conditional else []
    files = {fmt: _FILES[fmt][0] for fmt in formats}
    if kind == "aae":
        files.update({_ENCODER_KEYS[fmt]: _FILES[fmt][1] for fmt in formats})
    info = ModelInfo(name=name or out_dir.name, kind=kind, latent_dim=latent_dim, n_classes=len(classes),
                     class_names=classes, image_shape=list(image_shape), dataset="test", files=files,
                     opset=17 if "onnx" in formats else None, exporter="legacy", ganport_version="test")

    z = torch.randn(3, latent_dim)
    if kind == "aae":
        weight = torch.randn(math.prod(image_shape), latent_dim) * (0.4 / math.sqrt(latent_dim))
        generator: nn.Module = LinearTanhGenerator(weight, image_shape)
        encoder = PinvEncoder(weight)
        _export(encoder, (torch.rand(3, *image_shape) * 2 - 1,), ["image"], "z", out_dir,
                {fmt: _FILES[fmt][1] for fmt in formats}, formats, info)
    else:
        generator = TinyGenerator(latent_dim, len(classes), image_shape)
    example = (z, torch.tensor([0, 1, 2]) % len(classes)) if conditional else (z,)
    _export(generator, example, ["z", "label"] if conditional else ["z"], "image", out_dir,
            {fmt: _FILES[fmt][0] for fmt in formats}, formats, info)
    write_manifest(out_dir, info)
    return out_dir


def reference_images(package: Path, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Run the package's TorchScript artifact directly with torch (a check independent of the runtime)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(package / "model.ts"))
    inputs = [torch.from_numpy(z)] + ([torch.from_numpy(labels)] if labels is not None else [])
    with torch.no_grad():
        return module(*inputs).numpy()


#: The small ONNX packages the server tests serve, by name: build_package options.
SERVING_MODELS = {
    "glyphs": {"kind": "cgan", "class_names": GLYPH_CLASSES},
    "rgb": {"kind": "gan", "image_shape": (3, 8, 8), "latent_dim": 6},
    "aae": {"kind": "aae", "latent_dim": 4, "image_shape": (1, 6, 6)},
}


def build_serving_models(root: str | Path, names: Sequence[str] = ("glyphs", "rgb")) -> Path:
    """``root/NAME`` ONNX packages of :data:`SERVING_MODELS` for ``names``; returns ``root``."""
    root = Path(root)
    for name in names:
        build_package(root / name, formats=("onnx",), **SERVING_MODELS[name])
    return root
