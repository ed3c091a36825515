"""How many calls of one model run at once (Triton's instance count) and with how many threads.

torch-free and grpc-free (the CLI parses ``--instances`` with it before the server is imported).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from ganport.errors import InvalidInputError
from ganport.runtime.manifest import CONV_KINDS

#: ``instances`` value that lets each model's kind and device decide (:func:`resolve_instances`).
AUTO_INSTANCES = "auto"
InstancesArg = Union[int, str]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_instances(instances: InstancesArg, kind: str, device: str, threads: Optional[int] = None) -> int:
    """Model calls of one model that may run at once: ``instances`` itself, or for ``"auto"``
    2 for a convolutional generator (:data:`~ganport.runtime.manifest.CONV_KINDS`) on a CPU with
    cores for two calls of ``threads`` intra-op threads each (any 2+ cores when ``threads`` is
    unset: :func:`default_threads` then shares them), and 1 otherwise.

    Why: on CPU, two single-threaded convolution calls at once get more images per second out of
    two cores than one call with two intra-op threads (DCGAN 64x64 under 32 one-image clients:
    1.07-1.23x in five ``make bench-peer`` runs), while the MLP models lose (0.76-1.19x: their
    batches shrink and the per-request work dominates). A batch bigger than one instance's share
    is split across the idle instances (:class:`~.batcher.DynamicBatcher`), so a lone batch of 64
    still uses every core; a lone one-image request runs on one thread.

    Args:
        instances: a count >= 1, or ``"auto"``.
        kind: the model's kind (manifest ``kind``).
        device: where it runs (``cpu``, ``cuda``, ``cuda:N``).
        threads: intra-op threads per call when set explicitly (``--threads``), else None.

    Raises:
        InvalidInputError: ``instances`` is neither ``"auto"`` nor an integer >= 1.
    """
    if instances == AUTO_INSTANCES:
        fits = _cores() >= 2 * max(1, threads or 1)
        return 2 if kind in CONV_KINDS and device.startswith("cpu") and fits else 1
    return int(check_instances(instances))


def check_instances(instances: Any) -> InstancesArg:
    """``instances`` as given if it is ``"auto"`` or an integer >= 1 (an integer string is
    converted); else :class:`~ganport.errors.InvalidInputError` naming the valid choices."""
    if instances == AUTO_INSTANCES:
        return AUTO_INSTANCES
    try:
        count = int(instances)
    except (TypeError, ValueError):
        count = 0
    if isinstance(instances, float) or count < 1:
        raise InvalidInputError(f"invalid instances {instances!r}",
                                hint=f"use {AUTO_INSTANCES!r} or an integer >= 1 (model calls running at once)")
    return count


def default_threads(n_models: int, instances: int = 1) -> int:
    """Intra-op threads per model call when none are given: the CPU cores shared among the calls
    that can run at once (``instances`` per model).

    With one model and one instance a batch gets every core; with several models or instances,
    each call gets an equal share (at least one), so busy models do not oversubscribe the CPU.
    """
    return max(1, _cores() // (max(1, n_models) * max(1, instances)))
