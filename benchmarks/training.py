"""Training step rate: steps/s for each model kind at its default batch size, CPU (and GPU).

Each kind trains on the built-in ``glyphs`` set (28x28, 62 classes) through the public API,
``ganport.trainer.train(TrainConfig(...))``, for two logging windows of ``K`` steps: the first is
warm-up, the second is measured. The trainer's own ``metrics.jsonl`` gives each window's
``images_per_s`` (wall clock from the window's first step to its last, synchronised by the loss
read-back at the window's end), so steps/s = images/s / batch size. Samples and checkpoints are
written only before and after the windows. On a CUDA machine every kind is also run on the GPU
with AMP off and on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from typing import Any

from benchmarks.common import BenchContext, headline, make_table, new_result

logger = logging.getLogger(__name__)

DATASET = "glyphs"


def run(ctx: BenchContext) -> dict[str, Any]:
    """Steps/s per kind, device and AMP setting."""
    import torch

    from ganport.trainer import TrainConfig
    from ganport.trainer.config import KINDS

    kinds = ctx.pick(("cgan",), KINDS)
    window = ctx.pick(2, 10)
    batch = TrainConfig.__dataclass_fields__["batch_size"].default
    setups = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if ctx.cuda else [])
    settings = {"kinds": list(kinds), "dataset": DATASET, "batch_size": batch, "warmup_steps": window,
                "measured_steps": window, "threads": ctx.threads,
                "setups": [f"{device}{' amp' if amp else ''}" for device, amp in setups]}
    result = new_result("training", ctx, settings)
    torch.set_num_threads(ctx.threads)
    for kind in kinds:
        for device, amp in setups:
            logger.info("training %s on %s%s", kind, device, " with AMP" if amp else "")
            result["rows"].append(_measure(ctx, kind, device, amp, window, batch))
    if not ctx.cuda:
        result["notes"].append("no CUDA device: GPU rows (AMP off/on) were not measured")
    result["tables"].append(make_table(
        f"training: steps/s at batch {batch} on {DATASET} 28x28 ({window} warm-up + {window} measured steps)",
        ["kind", "device", "amp", "steps/s", "images/s", "warm-up steps/s", "whole run s"],
        [[r["kind"], r["device"], r["amp"], r["steps_per_s"], r["images_per_s"], r["warmup_steps_per_s"],
          r["run_seconds"]] for r in result["rows"]]))
    for row in result["rows"]:
        result["headline"].append(headline(
            f"train {row['kind']} {row['device']}{' amp' if row['amp'] else ''}", row["steps_per_s"], "steps/s"))
    return result


def _measure(ctx: BenchContext, kind: str, device: str, amp: bool, window: int, batch: int) -> dict[str, Any]:
    """Train ``2 * window`` steps and read the second window's rate from ``metrics.jsonl``."""
    import time

    from ganport.trainer import TrainConfig, train

    never = 10**9  # no samples or checkpoints inside the windows (train() still writes them at the end)
    config = TrainConfig(kind=kind, dataset=DATASET, n_samples=2 * window * batch, batch_size=batch,
                         steps=2 * window, log_every=window, sample_interval=never, checkpoint_interval=never,
                         device=device, amp=amp, seed=0, out_dir=str(ctx.workdir / "runs"),
                         run_name=f"{kind}-{device}{'-amp' if amp else ''}")
    log_path = ctx.workdir / f"train-{config.run_name}.log"
    started = time.perf_counter()
    with open(log_path, "w") as log, contextlib.redirect_stderr(log):  # the progress bar goes to the log
        outcome = train(config)
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if len(rows) < 2:
        raise RuntimeError(f"{outcome.run_dir}/metrics.jsonl has {len(rows)} row(s), expected 2 windows")
    warm, measured = rows[-2], rows[-1]
    return {"kind": kind, "device": device, "amp": amp, "batch_size": batch, "steps": outcome.step,
            "steps_per_s": measured["images_per_s"] / batch, "images_per_s": measured["images_per_s"],
            "warmup_steps_per_s": warm["images_per_s"] / batch, "run_seconds": seconds,
            "config": {k: v for k, v in dataclasses.asdict(config).items() if k in ("kind", "dataset", "n_samples",
                                                                                    "batch_size", "steps", "amp",
                                                                                    "device", "latent_dim")}}
