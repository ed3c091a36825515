"""Turning an in-memory :class:`ImageDataset` into resumable, seeded batches.

The order of the data is a pure function of ``(seed, epoch)``, never of the global RNG, so a run
resumed from a checkpoint taken in the middle of an epoch skips exactly the batches it had
already seen and then sees the same batches, in the same order, as an uninterrupted run.
:class:`ResumableBatchSampler` does what ``DistributedSampler`` does (same permutation on every
rank, each rank takes every ``world_size``-th index) plus that skip-ahead, so one sampler serves
single-process and ``torchrun`` training.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from ganport.errors import InvalidInputError

logger = logging.getLogger(__name__)


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields lists of indices: a seeded shuffle per epoch, split across ranks, drop_last.

    Args:
        n: number of samples.
        batch_size: indices per batch (per rank).
        seed: base seed; epoch ``e`` uses the permutation of ``seed + e``.
        rank: this process's rank.
        world_size: number of processes.

    Example:
        >>> s = ResumableBatchSampler(10, 4, seed=0); s.batches_per_epoch
        2
        >>> s.set_epoch(0, start_batch=1); len(list(s)), len(s)
        (1, 1)
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = n // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise InvalidInputError(
                f"the data set has {n} images, fewer than one batch of {batch_size}"
                + (f" x {world_size} processes" if world_size > 1 else ""),
                hint="lower --batch-size or use more images")
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch's permutation and how many of its batches to skip."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=generator)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        mine = order[:used][self.rank::self.world_size].view(self.batches_per_epoch, self.batch_size)
        for batch in mine[self.start_batch:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


def make_loader(images: np.ndarray, labels: np.ndarray | None, batch_size: int, seed: int,
                rank: int = 0, world_size: int = 1, num_workers: int = 0,
                pin_memory: bool = False) -> tuple[DataLoader, ResumableBatchSampler]:
    """Wrap numpy arrays into a DataLoader of ``(images, labels)`` batches.

    Unlabelled sets yield zeros as labels so every batch has the same structure.

    Args:
        images: float32 ``[N, C, H, W]``.
        labels: int64 ``[N]`` or None.
        batch_size: images per batch and process.
        seed: data-order seed.
        rank: process rank under torchrun.
        world_size: number of processes.
        num_workers: DataLoader workers.
        pin_memory: pin host memory (CUDA training).

    Returns:
        ``(loader, sampler)``; call ``sampler.set_epoch(epoch, start_batch)`` before iterating.
    """
    x = torch.from_numpy(np.ascontiguousarray(images))
    y = torch.from_numpy(labels) if labels is not None else torch.zeros(len(x), dtype=torch.int64)
    sampler = ResumableBatchSampler(len(x), batch_size, seed, rank, world_size)
    # batch_size=None: the sampler yields whole index lists and TensorDataset indexes with them,
    # one gather per batch instead of one __getitem__ per image.
    # The loader's own generator keeps it from drawing its base seed from the global RNG, which
    # would shift the training noise of a resumed run.
    loader = DataLoader(TensorDataset(x, y), sampler=sampler, batch_size=None,
                        num_workers=num_workers, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(seed),
                        persistent_workers=False)
    return loader, sampler
