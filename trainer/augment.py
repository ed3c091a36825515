"""Differentiable augmentation of what the discriminator sees (DiffAugment, Zhao et al. 2020).

The same kind of random transform is applied to every image the discriminator judges, real and
generated, in the D step and in the G step; gradients flow through it to the generator, so the
generator still learns the un-augmented images while the discriminator cannot memorise the
training set. Each transform draws fresh parameters per image from torch's global generator
(seeded and checkpointed with the run).

Images are ``[N, C, H, W]`` in the generator's ``[-1, 1]`` range; -1 (black, the background of
the built-in sets) fills what translation uncovers and what cutout removes.

:data:`AUGMENTATIONS` is the one table of policy names (``TrainConfig.augment``, ``ganport train
--augment``, the docs and tests read it). The module imports torch only when a transform runs,
so ``ganport train --help`` works without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

#: Shift of ``translation``: up to this fraction of the height/width in each direction (the paper's 1/8).
TRANSLATION_RATIO = 0.125
#: Side of ``cutout``'s square as a fraction of the height/width (the paper's 1/2).
CUTOUT_RATIO = 0.5
FILL = -1.0


def _color(x: "torch.Tensor") -> "torch.Tensor":
    """Random brightness (+-0.5), saturation (x0-2, colour images only) and contrast (x0.5-1.5)."""
    import torch

    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def _translation(x: "torch.Tensor") -> "torch.Tensor":
    """Shift each image by a random whole number of pixels, up to TRANSLATION_RATIO of its size."""
    import torch

    n, c, h, w = x.shape
    max_y, max_x = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-max_y, max_y + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_x, max_x + 1, (n, 1, 1), device=x.device)
    src_y = torch.arange(h, device=x.device).view(1, h, 1) - dy  # [n, h, 1]
    src_x = torch.arange(w, device=x.device).view(1, 1, w) - dx  # [n, 1, w]
    inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)  # [n, h, w]
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    moved = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return torch.where(inside.unsqueeze(1), moved, torch.full_like(moved, FILL))


def _cutout(x: "torch.Tensor") -> "torch.Tensor":
    """Blank one random square of CUTOUT_RATIO of the image's side per image (it may overhang the edge)."""
    import torch

    n, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = torch.randint(-(size_y // 2), h - size_y // 2, (n, 1, 1), device=x.device)
    left = torch.randint(-(size_x // 2), w - size_x // 2, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return torch.where(hole.unsqueeze(1), torch.full_like(x, FILL), x)


#: Policy name -> transform, applied in this order whatever order the policy lists them in.
AUGMENTATIONS: dict[str, Callable[["torch.Tensor"], "torch.Tensor"]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}


def parse_policy(text: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> the names in :data:`AUGMENTATIONS` order; ``""`` -> ``()``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    return tuple(name for name in AUGMENTATIONS if name in names)


def diff_augment(x: "torch.Tensor", policy: tuple[str, ...]) -> "torch.Tensor":
    """``x`` ``[N, C, H, W]`` with the policy's transforms applied (same shape and dtype)."""
    for name in policy:
        x = AUGMENTATIONS[name](x)
    return x
