"""Generator, discriminator and encoder networks for every model kind.

Every class takes explicit dimensions and stores its constructor arguments in ``init_args`` so a
checkpoint can rebuild it by class name (no pickled classes). Generators end in Tanh and produce
``[N, C, H, W]`` images in [-1, 1]; discriminators return raw logits ``[N, 1]`` (the losses apply
the sigmoid, which keeps BCE stable under AMP).

Kinds (``build_networks``):

- ``gan``: MLP generator/discriminator (Goodfellow et al., as in PyTorch-GAN's gan.py).
- ``dcgan``: convolutional GAN (Radford et al.); nearest upsampling + convolutions, BatchNorm,
  LeakyReLU. ``arch="simpsons"`` gives the 128x128 report architecture (Linear to 512x8x8, 9x9
  convolutions).
- ``cgan``: label-embedding MLP cGAN (embedding concatenated with z, blocks 128-256-512-1024).
- ``cdcgan``: the convolutional counterpart; the discriminator sees the label as an extra plane.
- ``aae``: convolutional encoder E, decoder/generator G and image discriminator D.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from ganport.errors import InvalidInputError
from ganport.runtime.manifest import CONDITIONAL_KINDS
from ganport.trainer.config import ARCH_PRESETS, DEFAULT_D_DROPOUT

logger = logging.getLogger(__name__)


def _image_size(img_shape: list[int] | tuple[int, ...]) -> int:
    channels, height, width = img_shape
    if height != width:
        raise InvalidInputError(f"image shape {list(img_shape)} is not square",
                                hint="resize the data set with --image-size")
    return int(height)


def _upsampling_plan(size: int, max_init: int = 8) -> tuple[int, int]:
    """Return (initial feature-map size, number of 2x upsamplings) that reach ``size``."""
    init, steps = size, 0
    while init > max_init and init % 2 == 0:
        init //= 2
        steps += 1
    if steps == 0:
        raise InvalidInputError(f"image size {size} cannot be reached by 2x upsampling",
                                hint="use a size such as 28, 32, 64 or 128")
    return init, steps


class _Recorded(nn.Module):
    """Base that remembers constructor arguments for self-describing checkpoints."""

    init_args: dict[str, Any]

    def _record(self, **kwargs: Any) -> None:
        self.init_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}


def _sn(module: nn.Module, on: bool) -> nn.Module:
    """``module`` with spectral normalisation of its weight when ``on`` (Miyato et al. 2018)."""
    return nn.utils.parametrizations.spectral_norm(module) if on else module


def _mlp_block(in_features: int, out_features: int, normalize: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    if normalize:
        layers.append(nn.BatchNorm1d(out_features))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class _MLPGeneratorTrunk(nn.Sequential):
    def __init__(self, in_features: int, hidden: list[int], img_shape: list[int]):
        layers: list[nn.Module] = []
        width = in_features
        for i, h in enumerate(hidden):
            layers += _mlp_block(width, h, normalize=i > 0)
            width = h
        layers += [nn.Linear(width, math.prod(img_shape)), nn.Tanh()]
        super().__init__(*layers)


class MLPGenerator(_Recorded):
    """MLP generator G(z) of the original GAN.

    Args:
        latent_dim: length of the latent vector z.
        img_shape: output image shape ``[C, H, W]``.
        hidden: widths of the hidden layers.

    Example:
        >>> g = MLPGenerator(100, [1, 28, 28]); g(torch.randn(2, 100)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, latent_dim: int, img_shape: list[int], hidden: list[int] = (128, 256, 512, 1024)):
        super().__init__()
        self._record(latent_dim=latent_dim, img_shape=img_shape, hidden=hidden)
        self.img_shape = tuple(img_shape)
        self.model = _MLPGeneratorTrunk(latent_dim, list(hidden), list(img_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(z.shape[0], *self.img_shape)


class _ConditionalBatchNorm1d(nn.Module):
    """BatchNorm without its own affine, then a per-class gain and bias (de Vries et al. 2017).

    Args:
        features: width of the normalised features.
        n_classes: number of classes (one gain and one bias row per class).
    """

    def __init__(self, features: int, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(features, affine=False)
        self.gain = nn.Embedding(n_classes, features)
        self.bias = nn.Embedding(n_classes, features)
        nn.init.ones_(self.gain.weight)  # starts as the identity, like BatchNorm's own affine
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.gain(label) + self.bias(label)


class CondMLPGenerator(_Recorded):
    """Label-embedding MLP generator G(z, y) of the conditional GAN.

    Args:
        latent_dim: length of the latent vector z.
        n_classes: number of classes (labels 0..n_classes-1).
        img_shape: output image shape ``[C, H, W]``.
        embed_dim: size of the label embedding (default ``n_classes``).
        hidden: widths of the hidden layers.
        conditional_bn: besides the label embedding at the input, give every BatchNorm a
            per-class gain and bias (conditional batch normalisation), so the label steers
            every layer, not only the first.
    """

    def __init__(self, latent_dim: int, n_classes: int, img_shape: list[int],
                 embed_dim: int | None = None, hidden: list[int] = (128, 256, 512, 1024),
                 conditional_bn: bool = False):
        super().__init__()
        embed_dim = int(embed_dim or n_classes)
        self._record(latent_dim=latent_dim, n_classes=n_classes, img_shape=img_shape,
                     embed_dim=embed_dim, hidden=hidden, conditional_bn=conditional_bn)
        self.img_shape = tuple(img_shape)
        self.label_emb = nn.Embedding(n_classes, embed_dim)
        self.conditional_bn = conditional_bn
        if not conditional_bn:
            self.model = _MLPGeneratorTrunk(latent_dim + embed_dim, list(hidden), list(img_shape))
            return
        widths = [latent_dim + embed_dim, *hidden]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # As in the plain trunk, the first hidden layer is not normalised.
        self.norms = nn.ModuleList(_ConditionalBatchNorm1d(h, n_classes) for h in hidden[1:])
        self.out = nn.Linear(widths[-1], math.prod(img_shape))

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, self.label_emb(label)], dim=1)
        if not self.conditional_bn:
            return self.model(x).view(z.shape[0], *self.img_shape)
        x = nn.functional.leaky_relu(self.linears[0](x), 0.2)
        for linear, norm in zip(self.linears[1:], self.norms):
            x = nn.functional.leaky_relu(norm(linear(x), label), 0.2)
        return torch.tanh(self.out(x)).view(z.shape[0], *self.img_shape)


class MLPDiscriminator(_Recorded):
    """MLP discriminator D(x) (or D(x, y) when ``n_classes`` > 0), returning logits.

    Args:
        img_shape: input image shape ``[C, H, W]``.
        n_classes: number of classes for a conditional discriminator, 0 for none.
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden layer but the first (the cGAN uses 0.4).
        aux_classes: classes of an auxiliary classifier head on the last hidden features
            (AC-GAN, Odena et al. 2017); 0 for none. ``forward(..., with_classes=True)`` then also
            returns its logits ``[N, aux_classes]``.
        projection: condition by projection (Miyato & Koyama 2018): the logit gets
            ``<embed(y), features(x)>`` added instead of the label embedding being concatenated
            with the image. Needs ``n_classes`` > 0.
        spectral_norm: spectral normalisation (Miyato et al. 2018) of every layer on the path
            to the adversarial logit (hidden layers, logit layer, projection embedding); the
            auxiliary class head stays unnormalised.
    """

    def __init__(self, img_shape: list[int], n_classes: int = 0,
                 hidden: list[int] = (512, 256), dropout: float = 0.0, aux_classes: int = 0,
                 projection: bool = False, spectral_norm: bool = False):
        super().__init__()
        if projection and not n_classes:
            raise InvalidInputError("a projection discriminator needs n_classes > 0")
        self._record(img_shape=img_shape, n_classes=n_classes, hidden=hidden, dropout=dropout,
                     aux_classes=aux_classes, projection=projection, spectral_norm=spectral_norm)
        concat = n_classes if n_classes and not projection else 0
        self.label_emb = nn.Embedding(n_classes, n_classes) if concat else None
        layers: list[nn.Module] = []
        width = math.prod(img_shape) + concat
        for i, h in enumerate(hidden):
            layers.append(_sn(nn.Linear(width, h), spectral_norm))
            if dropout and i > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width = h
        layers.append(_sn(nn.Linear(width, 1), spectral_norm))
        # One Sequential named ``model`` (hidden layers + logit layer), the layout checkpoints
        # written before the extra heads existed hold.
        self.model = nn.Sequential(*layers)
        self.proj_emb = _sn(nn.Embedding(n_classes, width), spectral_norm) if projection else None
        self.aux_head = nn.Linear(width, aux_classes) if aux_classes else None

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None,
                with_classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = image.flatten(1)
        trunk = self.model[:-1]
        if self.label_emb is None:
            return _heads(self, self.model[-1], trunk(x), label, with_classes)
        logits = self.model[-1](trunk(torch.cat([x, self.label_emb(label)], dim=1)))
        if not with_classes:
            return logits
        if self.aux_head is None:
            raise InvalidInputError("this discriminator has no auxiliary classifier head")
        # The class head must not read the label it is asked to predict: it sees the features of
        # the image with the label input zeroed (a second pass through the same trunk).
        blank = torch.zeros(x.shape[0], self.label_emb.embedding_dim, dtype=x.dtype, device=x.device)
        return logits, self.aux_head(trunk(torch.cat([x, blank], dim=1)))


def _heads(d: nn.Module, head: nn.Module, h: torch.Tensor, label: torch.Tensor | None,
           with_classes: bool) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Adversarial logit (plus projection term) and, on request, the auxiliary class logits."""
    logits = head(h)
    if d.proj_emb is not None:
        logits = logits + (d.proj_emb(label) * h).sum(dim=1, keepdim=True)
    if not with_classes:
        return logits
    if d.aux_head is None:
        raise InvalidInputError("this discriminator has no auxiliary classifier head")
    return logits, d.aux_head(h)


class _ConvUpsampler(nn.Sequential):
    """Linear projection to a small feature map, then (upsample, conv, BN, LeakyReLU) blocks."""

    def __init__(self, in_features: int, img_shape: list[int], start_channels: int,
                 kernel_size: int, min_channels: int = 32):
        init, steps = _upsampling_plan(_image_size(img_shape))
        channels = [max(start_channels >> i, min_channels) for i in range(steps + 1)]
        pad = kernel_size // 2
        layers: list[nn.Module] = [
            nn.Linear(in_features, channels[0] * init * init),
            nn.Unflatten(1, (channels[0], init, init)),
            nn.BatchNorm2d(channels[0]),
        ]
        for i in range(steps):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(channels[i], channels[i + 1], kernel_size, padding=pad),
                nn.BatchNorm2d(channels[i + 1]),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.Conv2d(channels[-1], img_shape[0], kernel_size, padding=pad), nn.Tanh()]
        super().__init__(*layers)


class DCGenerator(_Recorded):
    """Convolutional generator G(z) (DCGAN / AAE decoder).

    Args:
        latent_dim: length of the latent vector z.
        img_shape: output image shape ``[C, H, W]``; H = W = init * 2^k with init <= 8.
        start_channels: channels of the first feature map (halved at each upsampling).
        kernel_size: convolution kernel size (9 in the 128x128 Simpsons architecture).
    """

    def __init__(self, latent_dim: int, img_shape: list[int], start_channels: int = 128,
                 kernel_size: int = 3):
        super().__init__()
        self._record(latent_dim=latent_dim, img_shape=img_shape, start_channels=start_channels,
                     kernel_size=kernel_size)
        self.model = _ConvUpsampler(latent_dim, list(img_shape), start_channels, kernel_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


class CondDCGenerator(_Recorded):
    """Convolutional generator G(z, y): the label embedding is concatenated with z.

    Args:
        latent_dim: length of the latent vector z.
        n_classes: number of classes.
        img_shape: output image shape ``[C, H, W]``.
        embed_dim: size of the label embedding (default ``n_classes``).
        start_channels: channels of the first feature map.
        kernel_size: convolution kernel size.
    """

    def __init__(self, latent_dim: int, n_classes: int, img_shape: list[int],
                 embed_dim: int | None = None, start_channels: int = 128, kernel_size: int = 3):
        super().__init__()
        embed_dim = int(embed_dim or n_classes)
        self._record(latent_dim=latent_dim, n_classes=n_classes, img_shape=img_shape,
                     embed_dim=embed_dim, start_channels=start_channels, kernel_size=kernel_size)
        self.label_emb = nn.Embedding(n_classes, embed_dim)
        self.model = _ConvUpsampler(latent_dim + embed_dim, list(img_shape), start_channels, kernel_size)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([z, self.label_emb(label)], dim=1))


class _ConvDownsampler(nn.Sequential):
    """(conv stride 2, LeakyReLU, dropout, BN) blocks down to a few pixels, then flatten."""

    def __init__(self, in_channels: int, size: int, base_channels: int, max_channels: int = 256,
                 spectral_norm: bool = False, dropout: float = 0.25):
        layers: list[nn.Module] = []
        channels, width = in_channels, size
        out = base_channels
        first = True
        while width > 4:
            layers += [_sn(nn.Conv2d(channels, out, 3, stride=2, padding=1), spectral_norm), nn.LeakyReLU(0.2, inplace=True),
                       nn.Dropout2d(dropout)]
            if not first:
                layers.append(nn.BatchNorm2d(out))
            first = False
            channels, width = out, (width + 1) // 2
            out = min(out * 2, max_channels)
        layers.append(nn.Flatten())
        super().__init__(*layers)
        self.out_features = channels * width * width


class DCDiscriminator(_Recorded):
    """Convolutional discriminator D(x), or D(x, y) with the label as an extra input plane.

    Args:
        img_shape: input image shape ``[C, H, W]``.
        n_classes: number of classes for a conditional discriminator, 0 for none.
        base_channels: channels of the first convolution (doubled at each stride-2 block).
        aux_classes: classes of an auxiliary classifier head (AC-GAN); 0 for none (see
            :class:`MLPDiscriminator`).
        projection: condition by projection instead of the label plane (see
            :class:`MLPDiscriminator`).
        spectral_norm: spectral normalisation of the convolutions, the logit layer and the
            projection embedding (see :class:`MLPDiscriminator`).
        dropout: 2-D dropout probability after each convolution.
    """

    def __init__(self, img_shape: list[int], n_classes: int = 0, base_channels: int = 32,
                 aux_classes: int = 0, projection: bool = False, spectral_norm: bool = False,
                 dropout: float = 0.25):
        super().__init__()
        if projection and not n_classes:
            raise InvalidInputError("a projection discriminator needs n_classes > 0")
        self._record(img_shape=img_shape, n_classes=n_classes, base_channels=base_channels,
                     aux_classes=aux_classes, projection=projection, spectral_norm=spectral_norm,
                     dropout=dropout)
        size = _image_size(img_shape)
        self.size = size
        plane = bool(n_classes) and not projection
        self.label_emb = nn.Embedding(n_classes, size * size) if plane else None
        in_channels = img_shape[0] + (1 if plane else 0)
        self.features = _ConvDownsampler(in_channels, size, base_channels, spectral_norm=spectral_norm,
                                         dropout=dropout)
        width = self.features.out_features
        self.head = _sn(nn.Linear(width, 1), spectral_norm)
        self.proj_emb = _sn(nn.Embedding(n_classes, width), spectral_norm) if projection else None
        self.aux_head = nn.Linear(width, aux_classes) if aux_classes else None

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None,
                with_classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.label_emb is None:
            return _heads(self, self.head, self.features(image), label, with_classes)
        plane = self.label_emb(label).view(-1, 1, self.size, self.size)
        logits = self.head(self.features(torch.cat([image, plane], dim=1)))
        if not with_classes:
            return logits
        if self.aux_head is None:
            raise InvalidInputError("this discriminator has no auxiliary classifier head")
        # As in MLPDiscriminator: the class head sees the image with a blank label plane.
        return logits, self.aux_head(self.features(torch.cat([image, torch.zeros_like(plane)], dim=1)))


class Encoder(_Recorded):
    """Convolutional encoder E(x) -> z of the adversarial autoencoder.

    Args:
        img_shape: input image shape ``[C, H, W]``.
        latent_dim: length of the latent vector produced.
        base_channels: channels of the first convolution.
    """

    def __init__(self, img_shape: list[int], latent_dim: int, base_channels: int = 32):
        super().__init__()
        self._record(img_shape=img_shape, latent_dim=latent_dim, base_channels=base_channels)
        self.features = _ConvDownsampler(img_shape[0], _image_size(img_shape), base_channels)
        self.head = nn.Linear(self.features.out_features, latent_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


#: Class name -> class, the only classes a checkpoint may name.
NETWORKS: dict[str, type[_Recorded]] = {
    cls.__name__: cls
    for cls in (MLPGenerator, CondMLPGenerator, MLPDiscriminator, DCGenerator, CondDCGenerator,
                DCDiscriminator, Encoder)
}

KIND_DESCRIPTIONS = {
    "gan": "MLP GAN (Goodfellow et al.)",
    "dcgan": "convolutional GAN (Radford et al.), 28-128 px",
    "cgan": "conditional MLP GAN with label embedding",
    "cdcgan": "conditional convolutional GAN",
    "aae": "adversarial autoencoder: encoder, decoder/generator, image discriminator",
}


def build_networks(kind: str, img_shape: list[int], n_classes: int, latent_dim: int,
                   arch: str = "default", *, aux_classifier: bool = False,
                   projection: bool = False, spectral_norm: bool = False,
                   conditional_bn: bool = False, d_dropout: float | None = None) -> dict[str, nn.Module]:
    """Create the networks of one model kind with dimensions taken from the data set.

    Args:
        kind: one of ``gan``, ``dcgan``, ``cgan``, ``cdcgan``, ``aae``.
        img_shape: image shape ``[C, H, W]`` from the data set.
        n_classes: number of classes from the data set (needed > 0 by conditional kinds).
        latent_dim: length of the latent vector z.
        arch: architecture preset for convolutional kinds (``default`` or ``simpsons``).
        aux_classifier: conditional kinds: give the discriminator an auxiliary classifier head
            over the ``n_classes`` classes (AC-GAN; ``TrainConfig.aux_weight`` > 0).
        projection: conditional kinds: a projection discriminator instead of the label
            concatenated with the image (``TrainConfig.d_conditioning="projection"``).
        spectral_norm: spectral normalisation in the discriminator (``TrainConfig.spectral_norm``).
        conditional_bn: cgan: per-class BatchNorm gains and biases in the generator
            (``TrainConfig.conditional_bn``).
        d_dropout: dropout probability in the discriminator (``TrainConfig.d_dropout``); None
            gives the kind's default (``DEFAULT_D_DROPOUT`` in :mod:`ganport.trainer.config`).

    Returns:
        ``{"generator": ..., "discriminator": ...}`` plus ``"encoder"`` for ``aae``.

    Example:
        >>> nets = build_networks("cgan", [1, 28, 28], 62, 100)
        >>> sorted(nets)
        ['discriminator', 'generator']
    """
    img_shape = [int(v) for v in img_shape]
    if kind not in KIND_DESCRIPTIONS:
        raise InvalidInputError(f"unknown model kind {kind!r}", hint=f"choose one of {', '.join(KIND_DESCRIPTIONS)}")
    if arch not in ARCH_PRESETS:
        raise InvalidInputError(f"unknown architecture {arch!r}", hint=f"choose one of {', '.join(ARCH_PRESETS)}")
    if kind in CONDITIONAL_KINDS and n_classes < 2:
        raise InvalidInputError(f"{kind} needs a labelled data set, this one has {n_classes} classes",
                                hint="use an unconditional kind (gan, dcgan, aae) or a labelled data set")
    if (aux_classifier or projection) and kind not in CONDITIONAL_KINDS:
        raise InvalidInputError(f"an auxiliary classifier or projection discriminator needs a conditional "
                                f"kind, not {kind!r}", hint=f"use {' or '.join(CONDITIONAL_KINDS)}")
    if d_dropout is None:
        d_dropout = DEFAULT_D_DROPOUT[kind]
    d_options = {"spectral_norm": spectral_norm, "dropout": float(d_dropout)}
    cond = {"aux_classes": n_classes if aux_classifier else 0, "projection": projection, **d_options}
    preset = ARCH_PRESETS[arch]
    if kind == "gan":
        return {"generator": MLPGenerator(latent_dim, img_shape),
                "discriminator": MLPDiscriminator(img_shape, **d_options)}
    if kind == "cgan":
        return {"generator": CondMLPGenerator(latent_dim, n_classes, img_shape, conditional_bn=conditional_bn),
                "discriminator": MLPDiscriminator(img_shape, n_classes, hidden=(512, 512, 512), **cond)}
    if kind == "dcgan":
        return {"generator": DCGenerator(latent_dim, img_shape, **preset),
                "discriminator": DCDiscriminator(img_shape, **d_options)}
    if kind == "cdcgan":
        return {"generator": CondDCGenerator(latent_dim, n_classes, img_shape, **preset),
                "discriminator": DCDiscriminator(img_shape, n_classes, **cond)}
    return {"generator": DCGenerator(latent_dim, img_shape, **preset),
            "discriminator": DCDiscriminator(img_shape, **d_options),
            "encoder": Encoder(img_shape, latent_dim)}


def rebuild_network(class_name: str, init_args: dict[str, Any]) -> nn.Module:
    """Instantiate a network from its recorded class name and constructor arguments."""
    if class_name not in NETWORKS:
        raise InvalidInputError(f"unknown network class {class_name!r}",
                                hint=f"known classes: {', '.join(NETWORKS)}")
    return NETWORKS[class_name](**init_args)
