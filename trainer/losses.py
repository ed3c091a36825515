"""Adversarial losses on discriminator logits, one function per loss, chosen from :data:`LOSSES`.

Discriminators return raw logits; the losses apply the sigmoid themselves
(``binary_cross_entropy_with_logits``), which is numerically stable and safe under autocast.

Each loss function takes the discriminator's output for one batch and a *target*:

- ``"real"``: the discriminator's term for real images (D wants them judged real);
- ``"fake"``: the discriminator's term for generated images (D wants them judged fake);
- ``"generator"``: the generator's term for generated images (G wants D fooled).

The discriminator loss is the mean of its real and fake terms (as in PyTorch-GAN), the generator
loss is its term alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ganport.errors import InvalidInputError

logger = logging.getLogger(__name__)

TARGETS = ("real", "fake", "generator")


def _bce(logits: torch.Tensor, value: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, value))


def nonsaturating_bce(logits: torch.Tensor, target: str) -> torch.Tensor:
    """Non-saturating GAN loss (Goodfellow et al. 2014, the practical variant).

    G maximises log D(G(z)) instead of minimising log(1 - D(G(z))), which keeps its gradient
    alive while D still wins easily early in training.

    Args:
        logits: discriminator output ``[N, 1]``.
        target: ``"real"``, ``"fake"`` or ``"generator"``.

    Returns:
        Scalar loss.

    Example:
        >>> round(float(nonsaturating_bce(torch.zeros(4, 1), "real")), 4)  # log 2
        0.6931
    """
    return _bce(logits, 0.0 if target == "fake" else 1.0)


def minimax_bce(logits: torch.Tensor, target: str) -> torch.Tensor:
    """The original minimax loss: G minimises log(1 - D(G(z))) = -BCE(D(G(z)), 0).

    Args:
        logits: discriminator output ``[N, 1]``.
        target: ``"real"``, ``"fake"`` or ``"generator"``.

    Returns:
        Scalar loss (negative for the generator).
    """
    if target == "generator":
        return -_bce(logits, 0.0)
    return _bce(logits, 1.0 if target == "real" else 0.0)


def least_squares(logits: torch.Tensor, target: str) -> torch.Tensor:
    """LSGAN (Mao et al. 2017): MSE of the raw discriminator output to 1 (real) or 0 (fake).

    Args:
        logits: discriminator output ``[N, 1]`` (used as a score, no sigmoid).
        target: ``"real"``, ``"fake"`` or ``"generator"``.

    Returns:
        Scalar loss, ``0.5 * mean((D - t)^2)``.
    """
    value = 0.0 if target == "fake" else 1.0
    return 0.5 * F.mse_loss(logits, torch.full_like(logits, value))


def hinge(logits: torch.Tensor, target: str) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018, with spectral normalisation).

    D minimises ``relu(1 - D(x))`` on real and ``relu(1 + D(G(z)))`` on generated images; G
    minimises ``-D(G(z))``. D stops pushing on images it already judges with a margin of 1.

    Args:
        logits: discriminator output ``[N, 1]`` (used as a score, no sigmoid).
        target: ``"real"``, ``"fake"`` or ``"generator"``.

    Returns:
        Scalar loss.

    Example:
        >>> float(hinge(torch.tensor([[2.0], [0.0]]), "real"))  # relu(1 - 2), relu(1 - 0)
        0.5
    """
    if target == "generator":
        return -logits.float().mean()
    sign = -1.0 if target == "real" else 1.0
    return F.relu(1.0 + sign * logits.float()).mean()


@dataclass(frozen=True)
class LossSpec:
    """One row of the loss table.

    Args:
        fn: the loss function ``fn(logits, target) -> scalar``.
        score: maps logits to the value logged as D(x) / D(G(z)) (a probability for the BCE
            losses, the raw score for least squares).
        description: one line for ``--help``.
    """

    fn: Callable[[torch.Tensor, str], torch.Tensor]
    score: Callable[[torch.Tensor], torch.Tensor]
    description: str


#: Loss name (``TrainConfig.loss``) -> :class:`LossSpec`.
LOSSES: dict[str, LossSpec] = {
    "bce": LossSpec(nonsaturating_bce, torch.sigmoid, "non-saturating binary cross-entropy (default)"),
    "minimax": LossSpec(minimax_bce, torch.sigmoid, "original minimax binary cross-entropy"),
    "lsgan": LossSpec(least_squares, lambda logits: logits, "least squares (LSGAN, MSE)"),
    "hinge": LossSpec(hinge, lambda logits: logits, "hinge (margin 1 for D, -D(G(z)) for G)"),
}


def get_loss(name: str) -> LossSpec:
    """Look a loss up by name.

    Raises:
        InvalidInputError: unknown name (the message lists the valid ones).
    """
    if name not in LOSSES:
        raise InvalidInputError(f"unknown loss {name!r}", hint=f"choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def discriminator_loss(spec: LossSpec, real_logits: torch.Tensor,
                       fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Discriminator loss and its two halves.

    Returns:
        ``(d_loss, real_term, fake_term)`` with ``d_loss = (real_term + fake_term) / 2``.
    """
    real_term = spec.fn(real_logits, "real")
    fake_term = spec.fn(fake_logits, "fake")
    return (real_term + fake_term) / 2, real_term, fake_term


def auxiliary_class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN auxiliary loss (Odena et al. 2017): cross-entropy of D's class head.

    Args:
        class_logits: the discriminator's class logits ``[N, n_classes]``.
        labels: the true (real images) or requested (generated images) classes ``[N]``.

    Returns:
        Scalar mean cross-entropy (computed in float32, also under autocast).
    """
    return F.cross_entropy(class_logits.float(), labels)


def aae_regularised_loss(images: torch.Tensor, recon: torch.Tensor,
                         z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder/decoder loss of the AAE report's first step.

    ``L_EG = MSE(x, G(E(x))) + MSE(z, 0) + MSE(z^2, 1)^0.5``: reconstruct the image while pulling
    the codes towards zero mean and unit second moment, so that decoding z ~ N(0, 1) lands on
    images too.

    Args:
        images: the real batch ``x``.
        recon: ``G(E(x))``.
        z: ``E(x)``.

    Returns:
        ``(l_eg, recon_loss)`` where ``recon_loss = MSE(x, G(E(x)))``.
    """
    recon_loss = F.mse_loss(recon, images)
    mean_term = F.mse_loss(z, torch.zeros_like(z))
    moment_term = F.mse_loss(z * z, torch.ones_like(z)).sqrt()
    return recon_loss + mean_term + moment_term, recon_loss
