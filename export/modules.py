"""The graphs that get exported: fixed-signature wrappers around the checkpoint's networks.

Every artifact has the same named inputs and outputs whatever network class sits inside:
``forward(z)`` or ``forward(z, label)`` returning ``image``, and for the AAE encoder
``forward(image)`` returning ``z``. The argument names become the ONNX input names (dynamo
exporter) and the TorchScript schema names (Triton's libtorch backend binds inputs by them).
A wrapper can hold a half-precision copy of the network: inputs and outputs stay float32 and
are cast at the boundary, so callers never see the difference.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

GENERATOR_INPUTS = ("z", "label")
GENERATOR_OUTPUT = "image"
ENCODER_INPUT = "image"
ENCODER_OUTPUT = "z"


class _Graph(nn.Module):
    """Shared part of the wrappers: holds the network, in eval mode, in ``dtype``."""

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        net = copy.deepcopy(net).eval()  # never touch the caller's network
        if dtype != torch.float32:
            net = net.to(dtype)
        for param in net.parameters():
            param.requires_grad_(False)
        self.net = net
        self.dtype = dtype


class Generator(_Graph):
    """Unconditional generator graph: ``forward(z) -> image``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.to(self.dtype)).to(torch.float32)


class ConditionalGenerator(_Graph):
    """Conditional generator graph: ``forward(z, label) -> image`` (label int64 ``[N]``)."""

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.net(z.to(self.dtype), label).to(torch.float32)


class EncoderGraph(_Graph):
    """AAE encoder graph: ``forward(image) -> z``."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image.to(self.dtype)).to(torch.float32)


def wrap(net: nn.Module, role: str, conditional: bool, dtype: torch.dtype = torch.float32) -> _Graph:
    """Wrap a network in the graph class for its role.

    Args:
        net: generator or encoder network.
        role: ``generator`` or ``encoder``.
        conditional: generator takes a ``label`` input.
        dtype: parameter precision inside the graph (``torch.float16`` for the fp16 variant).

    Returns:
        The wrapper, in eval mode.

    Example:
        >>> from ganport.trainer.models import MLPGenerator
        >>> wrap(MLPGenerator(8, [1, 28, 28]), "generator", False)(torch.zeros(2, 8)).shape
        torch.Size([2, 1, 28, 28])
    """
    if role == "encoder":
        cls: type[_Graph] = EncoderGraph
    else:
        cls = ConditionalGenerator if conditional else Generator
    return cls(net, dtype).eval()


def io_names(role: str, conditional: bool) -> tuple[list[str], list[str]]:
    """Input and output names of a role's graph."""
    if role == "encoder":
        return [ENCODER_INPUT], [ENCODER_OUTPUT]
    inputs = list(GENERATOR_INPUTS if conditional else GENERATOR_INPUTS[:1])
    return inputs, [GENERATOR_OUTPUT]


def example_inputs(role: str, latent_dim: int, n_classes: int, image_shape: list[int],
                   batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Deterministic inputs for tracing and verification.

    Latents are standard normal from a seeded generator, labels cycle through all classes,
    encoder images are uniform in [-1, 1].

    Args:
        role: ``generator`` or ``encoder``.
        latent_dim: length of z.
        n_classes: classes of a conditional generator, 0 otherwise (no label input).
        image_shape: ``[C, H, W]``.
        batch: batch size.
        seed: seed of the torch generator.

    Returns:
        The positional inputs of the role's graph.
    """
    gen = torch.Generator().manual_seed(seed)
    if role == "encoder":
        return (torch.rand(batch, *image_shape, generator=gen) * 2 - 1,)
    z = torch.randn(batch, latent_dim, generator=gen)
    if n_classes:
        return z, torch.arange(batch, dtype=torch.int64) % n_classes
    return (z,)


def dynamic_shapes(role: str, conditional: bool) -> dict[str, dict[int, object]]:
    """``dynamic_shapes`` for ``torch.export`` / the dynamo exporter: only axis 0 (batch) is dynamic.

    All inputs share one ``Dim`` so the exporter knows z and label have the same batch size.
    """
    batch = torch.export.Dim("batch", min=1)
    inputs, _ = io_names(role, conditional)
    return {name: {0: batch} for name in inputs}
