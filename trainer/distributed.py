"""Device selection and ``torchrun`` (DistributedDataParallel) set-up.

The same ``ganport train`` command runs single-process or distributed: when ``torchrun`` has set
``WORLD_SIZE`` (and ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), :func:`setup` joins the
process group (NCCL on CUDA, gloo on CPU), pins each process to GPU ``LOCAL_RANK`` and the trainer
wraps its networks in DDP. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ganport.errors import BackendUnavailableError, InvalidInputError

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process runs.

    Args:
        device: the torch device of this process.
        rank: global rank (0 when not distributed).
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this node.
        initialized: whether this module created the process group (and must destroy it).
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def distributed(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and shows progress."""
        return self.rank == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """Map ``auto``/``cpu``/``cuda`` to a device.

    Raises:
        BackendUnavailableError: ``cuda`` was requested but no CUDA device is usable.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if requested not in ("auto", "cuda"):
        raise InvalidInputError(f"unknown device {requested!r}", hint="choose auto, cpu or cuda")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if requested == "cuda":
        raise BackendUnavailableError("device cuda was requested but torch sees no CUDA device",
                                      hint="use --device cpu or auto, or install a CUDA build of torch")
    return torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidInputError(f"environment variable {name}={value!r} must be an integer") from exc


def setup(requested_device: str) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1, else run single-process.

    Args:
        requested_device: ``TrainConfig.device``.

    Returns:
        The :class:`DistContext` of this process.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    device = resolve_device(requested_device, local_rank)
    if world_size <= 1:
        return DistContext(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialized = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                device_id=device if device.type == "cuda" else None)
        initialized = True
    logger.info("rank %d/%d on %s (%s)", rank, world_size, device, dist.get_backend())
    return DistContext(device, rank, world_size, local_rank, initialized)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if ctx.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op single-process)."""
    if ctx.distributed:
        dist.barrier()


def mean_across_ranks(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (for logging); returns it unchanged single-process."""
    if not ctx.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size
