"""Untrained model packages for the speed benchmarks, built once per run and shared.

Speed does not depend on what the weights learned, so no training is needed: the networks come
from :func:`ganport.trainer.models.build_networks` (seeded), are saved as a real checkpoint with
:func:`~ganport.trainer.checkpoint.save_checkpoint` / :func:`~ganport.trainer.checkpoint.network_entry`,
and exported with :func:`ganport.export.export_package` like any trained model. Every benchmark of
one run measures these same packages, so ratios are side by side.

:class:`EagerBackend` runs the checkpoint's ``nn.Module`` through the runtime's own torch call path
(numpy in, ``inference_mode``, numpy out), so "eager" differs from TorchScript/pt2 only in the
engine, not in the wrapper around it.
"""

from __future__ import annotations

import logging
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ganport.runtime.backends import TorchModuleBackend

logger = logging.getLogger(__name__)

#: The 62 glyph classes (digits, uppercase, lowercase), as the built-in ``glyphs`` set names them.
GLYPH_CLASSES = tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase)
LATENT_DIM = 100
#: All formats the backends benchmark needs; other benchmarks ask for a subset.
ALL_FORMATS = ("onnx", "torchscript", "pt2")


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model size.

    Args:
        name: short name used in tables and as the served model name.
        description: one line for tables and the README.
        kind: ganport model kind.
        image_shape: ``[C, H, W]``.
        class_names: classes of a conditional kind (empty otherwise).
        arch: architecture preset (``simpsons`` for the 128x128 report network).
        batches: batch sizes the backends benchmark measures for it.
        time_scale: fraction of the per-cell measuring time it gets (big models get less).
    """

    name: str
    description: str
    kind: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...] = ()
    arch: str = "default"
    batches: tuple[int, ...] = (1, 8, 64)
    time_scale: float = 1.0

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("mlp28", "MLP cGAN 28x28, 62 glyph classes", "cgan", (1, 28, 28), GLYPH_CLASSES),
    ModelSpec("dcgan64", "DCGAN 64x64 RGB", "dcgan", (3, 64, 64)),
    # About 22 GFLOP per image (9x9 convolutions up to 128x128): short lists and times.
    ModelSpec("dcgan128", "DCGAN 128x128 RGB (simpsons arch)", "dcgan", (3, 128, 128), arch="simpsons",
              batches=(1, 8), time_scale=0.5),
)}


class ModelZoo:
    """Builds (once) and hands out checkpoints, packages and loaded Generators.

    Args:
        root: folder for the checkpoints and packages.

    Example:
        >>> zoo = ModelZoo(tmp_path)                                   # doctest: +SKIP
        >>> gen = zoo.generator("mlp28", "onnx", threads=2)            # doctest: +SKIP
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._checkpoints: dict[str, Path] = {}
        self._packages: dict[str, list[tuple[frozenset[str], bool, Path]]] = {}
        #: Seconds spent exporting, per package directory name (reported by the backends benchmark).
        self.export_seconds: dict[str, float] = {}

    def checkpoint(self, name: str) -> Path:
        """A seeded, untrained checkpoint of model ``name`` (a real ganport checkpoint file)."""
        if name not in self._checkpoints:
            import torch

            from ganport.trainer.checkpoint import network_entry, save_checkpoint
            from ganport.trainer.models import build_networks

            spec = MODELS[name]
            torch.manual_seed(0)
            nets = build_networks(spec.kind, list(spec.image_shape), spec.n_classes, LATENT_DIM, arch=spec.arch)
            payload = {
                "kind": spec.kind,
                "networks": {role: network_entry(net.eval()) for role, net in nets.items()},
                "ema_generator": None, "optimizers": {}, "config": {}, "step": 0, "epoch": 0,
                "data": {"name": "benchmark", "dataset": "benchmark", "class_names": list(spec.class_names),
                         "image_shape": list(spec.image_shape), "value_range": [-1.0, 1.0]},
            }
            self._checkpoints[name] = save_checkpoint(self.root / f"{name}.pt", payload)
        return self._checkpoints[name]

    def package(self, name: str, formats: Sequence[str] = ("onnx",), fp16: bool = False) -> Path:
        """A model package with at least ``formats`` (and ``model.fp16.onnx`` when ``fp16``).

        A package built earlier in the run with a superset of the formats is reused, so the
        backends, serving, word and footprint benchmarks all measure the same files.
        """
        from ganport.export import export_package

        wanted = frozenset(formats) | ({"onnx"} if fp16 else set())
        for have, have_fp16, path in self._packages.get(name, []):
            if wanted <= have and (have_fp16 or not fp16):
                return path
        built = self._packages.setdefault(name, [])
        directory = self.root / "packages" / f"{name}-{len(built)}" / name  # served under `name`
        started = time.perf_counter()
        # verify=False: the export tests cover correctness; the backends benchmark records each
        # backend's max abs difference from eager instead.
        export_package(self.checkpoint(name), directory, formats=tuple(sorted(wanted)), fp16=fp16, verify=False,
                       overwrite=True)
        self.export_seconds[f"{name}-{len(built)}"] = round(time.perf_counter() - started, 2)
        logger.info("exported %s (%s%s) in %.1f s", name, ", ".join(sorted(wanted)), ", fp16" if fp16 else "",
                    time.perf_counter() - started)
        built.append((wanted, fp16, directory))
        return directory

    def generator(self, name: str, backend: str = "onnx", *, device: str = "cpu", threads: int | None = None,
                  max_batch: int = 256, fp16: bool = False) -> Any:
        """A loaded :class:`ganport.runtime.Generator` of model ``name``.

        Args:
            name: a key of :data:`MODELS`.
            backend: ``onnx``, ``torchscript``, ``pt2`` or ``eager`` (the checkpoint's module).
            device: ``cpu`` or ``cuda``.
            threads: CPU threads (onnxruntime intra-op / ``torch.set_num_threads``).
            max_batch: largest batch per backend call.
            fp16: load ``model.fp16.onnx`` (backend ``onnx`` only).
        """
        from ganport.runtime.generator import Generator
        from ganport.runtime.manifest import read_manifest

        if backend == "eager":
            package = self.package(name, ("onnx",))
            model = EagerBackend(self.checkpoint(name), device=device, threads=threads)
            info = read_manifest(package)
            model.check_inputs(["z", "label"] if info.conditional else ["z"])
            return Generator(info, model, max_batch=max_batch)
        package = self.package(name, (backend,), fp16=fp16)
        if fp16:
            info = read_manifest(package)
            return Generator.load(package / info.files.get("onnx_fp16", "model.fp16.onnx"), device=device,
                                  threads=threads, max_batch=max_batch)
        return Generator.load(package, backend=backend, device=device, threads=threads, max_batch=max_batch)


class EagerBackend(TorchModuleBackend):
    """A runtime backend that runs a checkpoint's generator ``nn.Module`` in eager PyTorch.

    It inherits ``__call__`` from :class:`ganport.runtime.backends.TorchModuleBackend`, the exact code
    the TorchScript and pt2 backends run, so the measured difference is the engine alone.

    Args:
        path: the checkpoint file.
        device: ``cpu`` or ``cuda``.
        threads: ``torch.set_num_threads`` value, or None.
    """

    name = "eager"

    def _load(self, extra: dict[str, Any]) -> Any:
        from ganport.trainer.checkpoint import build_from_checkpoint, load_checkpoint

        return build_from_checkpoint(load_checkpoint(self.path), "generator").to(self.device)
