"""Data sets for ganport: built-in generated/bundled sets and loaders for standard files.

Every set is loaded through one call and comes back as float32 ``[N, C, H, W]`` in [-1, 1]::

    from ganport.trainer.datasets import load_dataset
    ds = load_dataset("glyphs", n=6200, seed=0)          # built-in, no download
    ds = load_dataset("mnist", root="~/data/mnist")       # the user's IDX files

Built-in sets (no download): ``glyphs``, ``fractal-dream``, ``digits``. Sets read from files
under ``root``: ``mnist``, ``fashion-mnist``, ``emnist``, ``cifar10``, ``cifar100``, ``stl10``,
``folder``. Missing or malformed files raise :class:`ganport.errors.DatasetError` naming the
file. This package does not import torch.
"""

from __future__ import annotations

from .base import DataInfo, DatasetSpec, ImageDataset
from .fractal import render_attractor
from .registry import REGISTRY, available_datasets, describe_datasets, load_dataset

__all__ = [
    "REGISTRY",
    "DataInfo",
    "DatasetSpec",
    "ImageDataset",
    "available_datasets",
    "describe_datasets",
    "load_dataset",
    "render_attractor",
]
