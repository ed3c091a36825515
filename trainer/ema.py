"""Exponential moving average of the generator's weights.

An EMA generator (Karras et al., Yazici et al.) usually gives smoother, better samples than the
raw weights at the last step. When ``TrainConfig.ema > 0`` the trainer keeps one, shows it in the
sample grids and writes it to the checkpoint as ``ema_generator``, which export prefers.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class EMA:
    """Shadow copy of a network updated as ``ema = decay * ema + (1 - decay) * weights``.

    Buffers (BatchNorm running statistics) are copied, not averaged: they are already averages.
    Given the step number, the decay is warmed up as ``min(decay, (1 + step) / (10 + step))``
    (as TensorFlow's moving averages do), so a short run's average is not dominated by the
    random initial weights: 0.1 at step 0, 0.9 at step 80, 0.999 from step ~9,000.

    Args:
        net: the network to track (unwrapped, not DistributedDataParallel).
        decay: weight of the old average per update, in [0, 1).

    Example:
        >>> g = torch.nn.Linear(2, 2); ema = EMA(g, 0.99); ema.update(g)
        >>> ema.module.weight.shape
        torch.Size([2, 2])
    """

    def __init__(self, net: nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(net).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int | None = None) -> None:
        """Move the average one step towards ``net``'s current weights.

        Args:
            net: the tracked network.
            step: the training step (0-based) for the warm-up; None uses ``decay`` as is.
        """
        decay = self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))
        for shadow, param in zip(self.module.parameters(), net.parameters()):
            shadow.lerp_(param.detach(), 1.0 - decay)
        for shadow, buffer in zip(self.module.buffers(), net.buffers()):
            shadow.copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, a state dict of the tracked network's class."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights saved by :meth:`state_dict`."""
        self.module.load_state_dict(state)
