"""Self-describing checkpoints: one file per snapshot, atomic writes, weights-only loading.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` and never unpickles a class. It records each network's class
name and constructor arguments, which is all export needs to rebuild the generator.

Layout (``format_version`` 1)::

    format, format_version, ganport_version, kind,
    networks={role: {"class", "init_args", "state_dict"}}, ema_generator (state dict or None),
    optimizers={role: state_dict}, config (resolved training config), step, epoch,
    rng={"torch", "cuda", "numpy", "python"}, data={dataset, class_names, image_shape, value_range}

The trainer adds what resuming needs: ``scaler`` (AMP GradScaler state or None),
``batch_in_epoch``, ``batches_per_epoch``, ``elapsed`` (seconds trained) and ``metrics`` (the last
row of metrics.jsonl).
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganport import __version__
from ganport.atomic import atomic_write
from ganport.errors import CheckpointError
from ganport.trainer.models import rebuild_network

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ganport.checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("kind", "networks", "data", "step")


def network_entry(net: nn.Module) -> dict[str, Any]:
    """Describe one network for the checkpoint: class name, constructor args, weights."""
    module = net.module if hasattr(net, "module") else net  # unwrap DistributedDataParallel
    return {"class": type(module).__name__, "init_args": dict(module.init_args),
            "state_dict": module.state_dict()}


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch, CUDA, numpy and Python, in weights-only-loadable types."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (missing parts are left as they are)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"],
                             s["has_gauss"], s["gauss"]))
    if "python" in state:
        values = state["python"]
        random.setstate((values[-2], tuple(values[:-2]), values[-1]))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically: temp file in the same directory, fsync, rename.

    A run killed at any moment leaves either the previous file or the new one, never half.

    Args:
        path: destination ``.pt`` file.
        payload: checkpoint dict (see module docstring); ``format``/version fields are added.

    Returns:
        The path written.
    """
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
               "ganport_version": __version__, **payload}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def _upgrade(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring older checkpoint layouts to the current one (only version 1 exists so far)."""
    version = ckpt.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {version} is not supported "
                              f"(this ganport reads version {CHECKPOINT_VERSION})",
                              hint="upgrade ganport or re-train")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load, validate and upgrade a checkpoint.

    Args:
        path: the ``.pt`` file.
        map_location: device for the tensors.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: the file is missing, truncated, not a ganport checkpoint or too new.

    Example:
        >>> ckpt = load_checkpoint("runs/cgan-glyphs/checkpoints/latest.pt")  # doctest: +SKIP
        >>> ckpt["kind"], ckpt["step"]  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise _not_a_checkpoint(path)
    if path.suffix in (".onnx", ".ts", ".pt2"):
        raise CheckpointError(f"{path} is an exported model file, not a checkpoint",
                              hint="pass the .pt written by `ganport train` (RUN/checkpoints/latest.pt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.split(". ")[0]  # torch appends paragraphs of advice
        raise CheckpointError(f"{path} is not a readable ganport checkpoint ({reason[:160]})",
                              hint="the file may be truncated or not written by ganport") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a ganport checkpoint",
                              hint="pass a .pt file written by `ganport train`")
    missing = [key for key in _REQUIRED if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks field(s) {', '.join(missing)}")
    return _upgrade(ckpt, path)


def _not_a_checkpoint(path: Path) -> CheckpointError:
    """The error for a path that is not a checkpoint file, saying what it is instead."""
    from ganport.runtime.manifest import MANIFEST_NAME

    hint = "pass a .pt file written by `ganport train`"
    if not path.exists():
        return CheckpointError(f"checkpoint {path} not found", hint=hint)
    if not path.is_dir():
        return CheckpointError(f"{path} is not a regular file", hint=hint)
    if (path / MANIFEST_NAME).is_file():
        return CheckpointError(f"{path} is a model package (it holds {MANIFEST_NAME}), not a checkpoint",
                               hint="it is already exported: serve or load it as it is, or pass the .pt "
                                    "written by `ganport train` (RUN/checkpoints/latest.pt) to export again")
    for candidate in (path / "checkpoints" / "latest.pt", path / "latest.pt"):
        if candidate.is_file():
            return CheckpointError(f"{path} is a directory, not a checkpoint", hint=f"did you mean {candidate}?")
    return CheckpointError(f"{path} is a directory, not a checkpoint", hint=hint)


def build_from_checkpoint(ckpt: dict[str, Any], role: str = "generator", use_ema: bool = True) -> nn.Module:
    """Rebuild one network from a checkpoint, weights loaded, in eval mode.

    Args:
        ckpt: a dict from :func:`load_checkpoint`.
        role: ``generator``, ``discriminator`` or ``encoder``.
        use_ema: for the generator, use the EMA weights when the checkpoint has them.

    Returns:
        The network in eval mode on CPU.
    """
    networks = ckpt["networks"]
    if role not in networks:
        raise CheckpointError(f"checkpoint of kind {ckpt['kind']!r} has no {role}",
                              hint=f"it has: {', '.join(networks)}")
    entry = networks[role]
    net = rebuild_network(entry["class"], entry["init_args"])
    state = entry["state_dict"]
    if role == "generator" and use_ema and ckpt.get("ema_generator"):
        state = ckpt["ema_generator"]
    net.load_state_dict(state)
    return net.eval()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, streamed (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
