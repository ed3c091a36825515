"""Hyperparameter sweeps: train every combination of a grid, evaluate each, rank them.

``ganport sweep cgan --dataset digits --grid lr_g=1e-4,2e-4 lr_d=1e-4,2e-4 --steps 2000`` trains
the four combinations one after the other, evaluates each with :func:`~ganport.trainer.evaluation.evaluate`
and writes, under ``--out`` (default ``sweeps/<kind>-<dataset>``):

- ``runs/<run id>/``: each combination's ordinary run directory (checkpoints, samples, metrics);
- ``samples/<run id>.png``: samples from the same latents for every run (one column per class);
- ``results.csv`` and ``results.md``: one row per run, ranked by conditional accuracy (conditional
  kinds; FD breaks ties) or by FD (the others);
- ``contact_sheet.png``: every run's samples side by side in rank order, captioned with its
  settings and scores;
- ``sweep.json``: the sweep's definition and the state of each run.

Resuming: a combination recorded as done in ``sweep.json`` is skipped when the same command runs
again; an interrupted one continues from its ``latest.pt``. The run id is made of the settings
(``lr_g-0.0001_lr_d-0.0002``), so growing the grid later reuses the runs already done.

Combinations run one after the other, or ``jobs`` at a time in separate processes (several
small runs on one GPU, or one single-threaded run per CPU core: on a 2-core machine two MLP
digits runs side by side took 67 s, one after the other 119 s). Each run is then evaluated in the main process as soon
as it finishes; its progress bar goes to ``logs/<run id>.log``, and the main process prints
every running run's step and losses from its ``metrics.jsonl`` instead.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ganport.atomic import atomic_write
from ganport.errors import CheckpointError, GanportError, InvalidInputError
from ganport.runtime.images import decode_png, make_grid, save_png, to_uint8
from ganport.trainer.eval_result import EvalResult

logger = logging.getLogger(__name__)

SWEEP_FORMAT = "ganport.sweep"
SWEEP_VERSION = 1
STATE_NAME = "sweep.json"
#: Samples per run in its grid and on the contact sheet.
SAMPLES_PER_RUN = 64
SAMPLE_COLUMNS = 8
#: Classes (columns) a conditional run shows at most.
MAX_SHEET_CLASSES = 10
#: Runs per row of the contact sheet.
SHEET_COLUMNS = 4
#: Seconds between the status lines of parallel runs.
STATUS_INTERVAL = 30.0
#: TrainConfig fields a grid (or --set) may not set: the sweep decides them.
RESERVED = frozenset({"kind", "dataset", "resume", "out_dir", "run_name", "dataset_options"})


# ------------------------------------------------------------------------------ grid parsing


def _field_types() -> dict[str, str]:
    from ganport.trainer.config import TrainConfig

    return {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def settable_options() -> list[str]:
    """TrainConfig fields a grid may vary."""
    return sorted(set(_field_types()) - RESERVED)


def convert_value(name: str, text: str) -> Any:
    """Parse one option value from text using the TrainConfig field's type.

    Raises:
        InvalidInputError: unknown option or a value of the wrong type.

    Example:
        >>> convert_value("lr_g", "1e-4"), convert_value("amp", "true"), convert_value("steps", "none")
        (0.0001, True, None)
    """
    types = _field_types()
    if name not in types or name in RESERVED:
        raise InvalidInputError(f"unknown sweep option {name!r}", hint=f"valid options: {', '.join(settable_options())}")
    kind = types[name]
    text = text.strip()
    if "None" in kind and text.lower() in ("none", "null", ""):
        return None
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError as exc:
        raise InvalidInputError(f"{name}={text!r} is not a valid {kind.split(' ')[0]}") from exc
    return text


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["lr_g=1e-4,2e-4", "batch_size=32,64"]`` -> ``{"lr_g": [1e-4, 2e-4], "batch_size": [32, 64]}``.

    Option names are TrainConfig fields (``-`` may stand for ``_``); values are comma-separated.

    Raises:
        InvalidInputError: a malformed item, an unknown option (the message lists the valid
            ones), a repeated option or a bad value.

    Example:
        >>> parse_grid(["lr-g=1e-4,2e-4"])
        {'lr_g': [0.0001, 0.0002]}
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = str(item).partition("=")
        name = key.strip().replace("-", "_")
        if not sep or not name or not values.strip():
            raise InvalidInputError(f"grid item {item!r} must look like OPTION=VALUE[,VALUE...]",
                                    hint="e.g. --grid lr_g=1e-4,2e-4 batch_size=32,64")
        if name in grid:
            raise InvalidInputError(f"grid option {name!r} is given twice")
        parsed = [convert_value(name, v) for v in values.split(",")]
        if len(set(map(repr, parsed))) != len(parsed):
            raise InvalidInputError(f"grid option {name!r} repeats a value: {values}")
        grid[name] = parsed
    return grid


def parse_settings(items: Iterable[str]) -> dict[str, Any]:
    """``["image_size=16", "n_samples=64"]`` -> fixed options shared by every run (``--set``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        name = key.strip().replace("-", "_")
        if not sep or not name:
            raise InvalidInputError(f"setting {item!r} must look like OPTION=VALUE")
        out[name] = convert_value(name, value)
    return out


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, in order (the last option varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def run_id(params: Mapping[str, Any]) -> str:
    """Directory-safe id of a combination: ``lr_g-0.0001_batch_size-32`` (``base`` if empty)."""
    parts = [f"{k}-{_short(v)}" for k, v in params.items()]
    text = "_".join(parts) or "base"
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------ state


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """An interrupted sweep never leaves a half-written state file."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def _load_state(path: Path, definition: Mapping[str, Any]) -> dict[str, Any]:
    """The saved state of this sweep, a fresh one, or an error when ``path`` holds another sweep."""
    if not path.is_file():
        return {"format": SWEEP_FORMAT, "format_version": SWEEP_VERSION, "definition": dict(definition), "runs": {}}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON ({exc.msg})",
                                hint="delete it to start the sweep over") from exc
    if state.get("format") != SWEEP_FORMAT:
        raise InvalidInputError(f"{path} is not a ganport sweep state file")
    saved = json.loads(json.dumps(state.get("definition", {}), default=str))
    wanted = json.loads(json.dumps(dict(definition), default=str))
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise InvalidInputError(f"{path.parent} holds a different sweep (differs in {', '.join(diff)})",
                                hint="use another --out, or the same kind, data set, --steps and --set options")
    state.setdefault("runs", {})
    return state


# ------------------------------------------------------------------------------ running


#: States of a run in ``sweep.json``.
RUN_STATUSES = ("running", "done", "failed", "interrupted")


@dataclass
class SweepRun:
    """One combination of a sweep: its settings, state and, once done, its evaluation.

    Args:
        run: run id made of the settings (``lr_g-0.0001_batch_size-8``).
        params: the grid's values of this combination.
        status: one of :data:`RUN_STATUSES`.
        metrics: the evaluation of a done run.
        checkpoint: its ``latest.pt``.
        run_dir: its run directory.
        samples: its sample grid PNG.
        train_seconds: training time as the trainer counts it (across resumes).
        steps: training steps.
        error: first line of the error of a failed run.
        rank: 1 = best; None for runs that are not done.
    """

    run: str
    params: dict[str, Any]
    status: str = "running"
    metrics: EvalResult | None = None
    checkpoint: str | None = None
    run_dir: str | None = None
    samples: str | None = None
    train_seconds: float | None = None
    steps: int | None = None
    error: str | None = None
    rank: int | None = None

    @property
    def done(self) -> bool:
        return self.status == "done" and self.metrics is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (an entry of ``sweep.json``); unset fields are left out."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["metrics"] = None if self.metrics is None else self.metrics.to_dict()
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, run: str, data: Mapping[str, Any]) -> SweepRun:
        """Rebuild an entry of ``sweep.json`` (``run`` is its key there).

        Raises:
            InvalidInputError: a malformed entry, naming the run.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, Mapping) or "params" not in data or set(data) - names:
            raise InvalidInputError(f"sweep.json: the entry of run {run!r} is malformed",
                                    hint="delete sweep.json to start the sweep over")
        values = {**dict(data), "run": run}
        if values.get("metrics") is not None:
            values["metrics"] = EvalResult.from_dict(values["metrics"])
        return cls(**values)


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns.

    Args:
        out_dir: the sweep folder.
        rows: one :class:`SweepRun` per combination of the grid, ranked best first (failed runs last).
        csv_path: ``results.csv``.
        markdown_path: ``results.md``.
        contact_sheet: ``contact_sheet.png``.
        ran: run ids trained (or continued) by this call.
        skipped: run ids already done before this call.
    """

    out_dir: Path
    rows: list[SweepRun]
    csv_path: Path
    markdown_path: Path
    contact_sheet: Path | None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: paths as strings, rows as :meth:`SweepRun.to_dict`."""
        return {"out_dir": str(self.out_dir), "rows": [row.to_dict() for row in self.rows],
                "csv_path": str(self.csv_path), "markdown_path": str(self.markdown_path),
                "contact_sheet": None if self.contact_sheet is None else str(self.contact_sheet),
                "ran": list(self.ran), "skipped": list(self.skipped)}


def run_sweep(kind: str, dataset: str, grid: Mapping[str, Sequence[Any]], *, steps: int,
              out_dir: str | Path | None = None, settings: Mapping[str, Any] | None = None,
              eval_n: int = 2000, seed: int = 0, cache_dir: str | Path | None = None,
              classifier_options: Mapping[str, Any] | None = None,
              progress: Callable[[str], None] | None = None, jobs: int = 1) -> SweepResult:
    """Train and evaluate every combination of ``grid``; write the ranked table and contact sheet.

    Args:
        kind: model kind (``cgan``, ``dcgan``, ...).
        dataset: data set name.
        grid: ``{option: [values]}`` over TrainConfig fields (:func:`parse_grid`).
        steps: training steps per run.
        out_dir: sweep folder (default ``sweeps/<kind>-<dataset>``).
        settings: fixed TrainConfig options of every run (``image_size``, ``device``, ...).
        eval_n: images generated per evaluation.
        seed: evaluation seed (the training seed is the ``seed`` option, default 0).
        cache_dir: reference-network cache folder.
        classifier_options: :class:`~ganport.trainer.classifier.ClassifierSpec` overrides.
        progress: called with one line per event (default: the module logger).
        jobs: runs trained at the same time, each in its own process (1: one after the other).
            Unless ``settings`` fixes ``threads``, each process gets ``cpu_count // jobs`` torch
            threads.

    Returns:
        A :class:`SweepResult`.

    Raises:
        InvalidInputError: a bad grid or setting, or ``out_dir`` holding a different sweep.
        KeyboardInterrupt: a run was interrupted (its state is saved; rerun to continue).

    Example:
        >>> run_sweep("cgan", "digits", {"lr_g": [1e-4, 2e-4]}, steps=500)   # doctest: +SKIP
    """
    from ganport.trainer.config import TrainConfig

    report = progress or logger.info
    settings = dict(settings or {})
    for name in list(grid) + list(settings):
        if name in RESERVED or name not in _field_types():
            raise InvalidInputError(f"unknown sweep option {name!r}", hint=f"valid options: {', '.join(settable_options())}")
    overlap = sorted(set(grid) & set(settings))
    if overlap:
        raise InvalidInputError(f"option(s) {', '.join(overlap)} are both in the grid and fixed")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InvalidInputError(f"jobs must be a positive integer, got {jobs!r}")
    combos = combinations(grid)
    if not combos:
        raise InvalidInputError("the grid is empty")
    out = Path(out_dir) if out_dir is not None else Path("sweeps") / f"{kind}-{dataset}"
    runs_dir = out / "runs"
    configs = {}
    for params in combos:  # validate every combination before training any
        configs[run_id(params)] = TrainConfig(kind=kind, dataset=dataset, **{**settings, **params},
                                              steps=steps, out_dir=str(runs_dir), run_name=run_id(params)).validate()
    definition = {"kind": kind, "dataset": dataset, "steps": steps, "settings": settings, "eval_n": eval_n,
                  "seed": seed}
    state_path = out / STATE_NAME
    state = _load_state(state_path, definition)
    state["grid"] = {k: list(v) for k, v in grid.items()}
    runs = {rid: SweepRun.from_dict(rid, entry) for rid, entry in state["runs"].items()}

    def save() -> None:
        state["runs"] = {rid: run.to_dict() for rid, run in runs.items()}
        _write_json_atomic(state_path, state)

    references: dict[str, Any] = {}
    ran, skipped, pending = [], [], []
    for index, params in enumerate(combos, start=1):
        rid = run_id(params)
        if rid in runs and runs[rid].done:
            skipped.append(rid)
            report(f"[{index}/{len(combos)}] {rid}: done before, skipped")
        else:
            pending.append((index, params))

    def start(index: int, params: dict[str, Any]) -> SweepRun:
        rid = run_id(params)
        report(f"[{index}/{len(combos)}] {rid}: training {steps} steps")
        entry = runs[rid] = SweepRun(rid, params, "running")
        save()
        ran.append(rid)
        return entry

    def finish(index: int, entry: SweepRun, outcome: Callable[[], dict[str, Any]]) -> None:
        try:
            trained = outcome()
            _evaluate_run(entry, configs[entry.run], trained, out, eval_n, seed, cache_dir,
                          classifier_options, references, report)
        except KeyboardInterrupt:
            entry.status = "interrupted"
            save()
            raise
        except futures.BrokenExecutor as exc:  # the pool is gone: stop, do not blame the run
            entry.status = "interrupted"
            save()
            raise _worker_died(exc) from exc
        except (GanportError, RuntimeError, ValueError, FloatingPointError) as exc:
            # One diverging or impossible combination must not sink the whole sweep.
            logger.warning("run %s failed: %s", entry.run, exc)
            entry.status, entry.error = "failed", str(exc).splitlines()[0][:300]
        save()
        if entry.done:
            report(f"[{index}/{len(combos)}] {entry.run}: {_score_text(entry.metrics)}")

    if jobs == 1 or len(pending) < 2:
        for index, params in pending:
            entry = start(index, params)
            finish(index, entry, lambda: _train_run(configs[run_id(params)]))
    else:
        try:
            _run_parallel(pending, configs, jobs, settings, start, finish, report)
        except (KeyboardInterrupt, GanportError):  # stopped, or a worker process died
            for rid in ran:
                if runs[rid].status == "running":
                    runs[rid].status = "interrupted"
            save()
            raise
    rows = rank_runs([runs[run_id(p)] for p in combos])
    _restore_missing_samples(rows, seed)
    state["ranking"] = [row.run for row in rows]
    save()
    csv_path, md_path = write_tables(out, rows, list(grid), definition)
    sheet = write_contact_sheet(out / "contact_sheet.png", rows)
    report(f"results: {md_path}")
    return SweepResult(out, rows, csv_path, md_path, sheet, ran, skipped)


def _resume_or_fresh(config: Any) -> tuple[Any, Path | None]:
    """How to (re)start a run whose directory may already hold an interrupted attempt.

    Returns:
        ``(config, None)`` to train (``config`` resumes from ``latest.pt`` when that fits), or
        ``(None, latest.pt)`` when the checkpoint has already reached the run's steps.
    """
    from ganport.trainer.checkpoint import load_checkpoint
    from ganport.trainer.config import TrainConfig

    run_dir = Path(config.out_dir) / config.run_name
    latest = run_dir / "checkpoints" / "latest.pt"
    if not (run_dir / "config.json").exists():
        return config, None
    try:
        ckpt = load_checkpoint(latest)
        resumed = TrainConfig.for_resume(ckpt["config"], str(latest), steps=config.steps)
        if not resumed.conflicts_with(config.to_dict()):
            if int(ckpt["step"]) >= config.steps:
                return None, latest  # trained to the end, stopped before its evaluation
            logger.info("continuing %s from step %s", run_dir.name, ckpt.get("step"))
            return resumed, None
    except (CheckpointError, InvalidInputError, KeyError) as exc:
        logger.warning("cannot continue %s (%s); training it again", run_dir, exc)
    shutil.rmtree(run_dir)
    return config, None


def _train_run(config: Any) -> dict[str, Any]:
    """Train one combination (continuing an interrupted attempt); picklable for worker processes.

    Returns:
        ``{"checkpoint", "step", "train_seconds"}``.

    Raises:
        KeyboardInterrupt: the run was stopped by a signal (its checkpoint is saved).
    """
    from ganport.trainer.checkpoint import load_checkpoint
    from ganport.trainer.training import train

    started = time.perf_counter()
    to_train, checkpoint = _resume_or_fresh(config)
    step = None
    if to_train is not None:
        result = train(to_train)
        if result.interrupted:
            raise KeyboardInterrupt(f"run {config.run_name} interrupted by {result.interrupted}")
        checkpoint, step = result.checkpoint, result.step
    # Training time proper as the trainer counts it (continued across resumes), else wall time.
    train_seconds = float(load_checkpoint(checkpoint).get("elapsed") or time.perf_counter() - started)
    return {"checkpoint": str(checkpoint), "step": step, "train_seconds": train_seconds}


def _evaluate_run(entry: SweepRun, config: Any, trained: Mapping[str, Any], out: Path, eval_n: int, seed: int,
                  cache_dir: Any, classifier_options: Mapping[str, Any] | None, references: dict[str, Any],
                  report: Callable[[str], None]) -> None:
    """Evaluate a trained combination, write its sample grid and record both in ``entry`` (done)."""
    from ganport.trainer.evaluation import RealReference, classifier_spec_for, evaluate, open_source

    checkpoint, step = trained["checkpoint"], trained["step"]
    source = open_source(checkpoint)
    spec = classifier_spec_for(source, **dict(classifier_options or {}))
    if spec.key() not in references:  # one reference per image size: shared by the runs
        references[spec.key()] = RealReference.build(spec, eval_n, cache_dir, report)
    entry.metrics = evaluate(source, n=eval_n, seed=seed, reference=references[spec.key()])
    entry.samples = str(save_png(out / "samples" / f"{config.run_name}.png", sample_grid(source, seed)))
    entry.checkpoint = str(checkpoint)
    entry.run_dir = str(Path(config.out_dir) / config.run_name)
    entry.train_seconds = round(float(trained["train_seconds"]), 2)
    entry.steps = step if step is not None else config.steps
    entry.status = "done"


def _init_worker(threads: int) -> None:
    """Worker process set-up: its share of the CPU threads."""
    import torch

    torch.set_num_threads(threads)


def log_path(config: Any) -> Path:
    """``<sweep>/logs/<run id>.log``: where a parallel run's progress bar and warnings go."""
    return Path(config.out_dir).parent / "logs" / f"{config.run_name}.log"


def _train_run_logged(config: Any) -> dict[str, Any]:
    """:func:`_train_run` in a worker, its stderr (progress bar, warnings) in :func:`log_path`."""
    import contextlib

    path = log_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle, contextlib.redirect_stderr(handle):
        return _train_run(config)


def _latest_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The last row of a run's ``metrics.jsonl`` (None before the first row is written)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def _worker_died(exc: BaseException) -> GanportError:
    """The error of a sweep whose worker process was killed (out of memory, a signal)."""
    return GanportError(f"a sweep worker process died ({exc})",
                        hint="rerun the same command: finished runs are kept, the others continue "
                             "from their checkpoints")


def _run_parallel(pending: list[tuple[int, dict[str, Any]]], configs: Mapping[str, Any], jobs: int,
                  settings: Mapping[str, Any], start: Callable, finish: Callable,
                  report: Callable[[str], None]) -> None:
    """Train ``pending`` combinations ``jobs`` at a time in spawned processes; evaluate here.

    Each worker's progress bar goes to the run's log file (interleaved bars would be unreadable);
    this process prints a status line per running run every :data:`STATUS_INTERVAL` seconds.
    """
    threads = int(settings.get("threads") or max(1, (os.cpu_count() or 1) // jobs))
    jobs = min(jobs, len(pending))
    report(f"training {len(pending)} runs, {jobs} at a time ({threads} torch thread(s) each)")
    # spawn: a forked child would inherit this process's torch threads and CUDA state.
    context = multiprocessing.get_context("spawn")
    queue = list(pending)
    running: dict[futures.Future, tuple[int, SweepRun]] = {}
    with futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                     initargs=(threads,)) as pool:
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    index, params = queue.pop(0)
                    entry = start(index, params)
                    config = configs[entry.run]
                    report(f"[{index}] {config.run_name}: progress in {log_path(config)}")
                    try:
                        running[pool.submit(_train_run_logged, config)] = (index, entry)
                    except futures.BrokenExecutor as exc:
                        raise _worker_died(exc) from exc
                done, _ = futures.wait(running, timeout=STATUS_INTERVAL, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    index, entry = running.pop(future)
                    finish(index, entry, future.result)
                for index, entry in running.values():
                    config = configs[entry.run]
                    row = _latest_metrics(Path(config.out_dir) / config.run_name)
                    if row is not None:
                        losses = ", ".join(f"{k} {row[k]:.3f}" for k in ("d_loss", "g_loss", "recon_loss") if k in row)
                        report(f"[{index}] {config.run_name}: step {row['step']}/{config.steps}, {losses}")
        except KeyboardInterrupt:
            # Workers got the same SIGINT and save their checkpoints; rerunning continues them.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _restore_missing_samples(rows: list[SweepRun], seed: int) -> None:
    """Redraw a finished run's sample grid when its PNG was deleted (the checkpoint remains)."""
    from ganport.trainer.evaluation import open_source

    for row in rows:
        samples, checkpoint = Path(row.samples or ""), Path(row.checkpoint or "")
        if row.done and not samples.is_file() and checkpoint.is_file():
            save_png(samples, sample_grid(open_source(checkpoint), seed))


def sample_grid(source: Any, seed: int = 0) -> np.ndarray:
    """The samples a run shows on the contact sheet, from the same latents for every run.

    Conditional models: one column per class (at most 10, spread over the classes), six rows;
    unconditional: an 8 x 8 grid.
    """
    if source.conditional:
        columns = min(source.n_classes, MAX_SHEET_CLASSES)
        classes = np.round(np.linspace(0, source.n_classes - 1, columns)).astype(np.int64)
        labels = np.tile(classes, SAMPLES_PER_RUN // SAMPLE_COLUMNS - 2)
        return make_grid(to_uint8(source.generate(source.latents(len(labels), seed), labels)), nrow=columns)
    z = source.latents(SAMPLES_PER_RUN, seed)
    return make_grid(to_uint8(source.generate(z)), nrow=SAMPLE_COLUMNS)


# ------------------------------------------------------------------------------ ranking and tables


def _score_text(metrics: EvalResult) -> str:
    parts = []
    if metrics.conditional_accuracy is not None:
        parts.append(f"acc {metrics.conditional_accuracy:.1%}")
    parts.append(f"FD {metrics.fd:.3g}")
    if metrics.reconstruction is not None:
        parts.append(f"MSE {metrics.reconstruction.mse:.3g}")
    return " ".join(parts)


def rank_runs(rows: list[SweepRun]) -> list[SweepRun]:
    """Best first: by conditional accuracy (higher) then FD (lower) where present, else FD.

    Runs not done (failed, interrupted) go last, in grid order. Sets ``rank`` (1-based, None for
    those).
    """
    done = [r for r in rows if r.done]
    rest = [r for r in rows if not r.done]

    def key(row: SweepRun) -> tuple[float, float]:
        m = row.metrics
        return (-(m.conditional_accuracy or 0.0), m.fd)

    done.sort(key=key)
    for i, row in enumerate(done, start=1):
        row.rank = i
    for row in rest:
        row.rank = None
    return done + rest


def _columns(rows: list[SweepRun], grid_names: list[str]) -> list[tuple[str, Callable[[SweepRun], Any]]]:
    metrics = [r.metrics for r in rows if r.done]

    def has(name: str) -> bool:
        return any(getattr(m, name) is not None for m in metrics)

    def metric(name: str) -> Callable[[SweepRun], Any]:
        return lambda row: None if row.metrics is None else getattr(row.metrics, name)

    def param(name: str) -> Callable[[SweepRun], Any]:
        return lambda row: row.params.get(name)

    cols: list[tuple[str, Callable[[SweepRun], Any]]] = [("rank", lambda r: r.rank), ("run", lambda r: r.run)]
    cols += [(name, param(name)) for name in grid_names]
    if has("conditional_accuracy"):
        cols.append(("conditional_accuracy", metric("conditional_accuracy")))
    cols += [("fd", metric("fd")), ("fd_equal_n", metric("fd_equal_n")),
             ("fd_real_vs_real", metric("fd_real_vs_real"))]
    if has("precision"):
        cols += [("precision", metric("precision")), ("recall", metric("recall"))]
    if has("classes_covered"):
        cols.append(("classes_covered", metric("classes_covered")))
    if has("reconstruction"):
        cols.append(("recon_mse", lambda r: r.metrics.reconstruction.mse
                     if r.metrics is not None and r.metrics.reconstruction is not None else None))
    cols += [("train_seconds", lambda r: r.train_seconds), ("status", lambda r: r.status),
             ("checkpoint", lambda r: r.checkpoint)]
    if any(r.error for r in rows):
        cols.append(("error", lambda r: r.error))
    return cols


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_tables(out: Path, rows: list[SweepRun], grid_names: list[str],
                 definition: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``results.csv`` (full precision) and ``results.md`` (rounded) from ranked rows."""
    cols = _columns(rows, grid_names)
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([name for name, _ in cols])
        for row in rows:
            writer.writerow(["" if (v := get(row)) is None else v for _, get in cols])
    md_cols = [(n, g) for n, g in cols if n not in ("checkpoint",)]
    ranked_by = ("conditional accuracy (higher is better), then FD" if any(n == "conditional_accuracy" for n, _ in cols)
                 else "Fréchet distance in the reference network's features (lower is better)")
    lines = [f"# Sweep: {definition['kind']} on {definition['dataset']}, {definition['steps']} steps per run", "",
             f"Ranked by {ranked_by}. `fd_real_vs_real` is the FD of two halves of the real test images "
             "(what a perfect generator would score); `fd_equal_n` is the generated images' FD at that same "
             "sample size, the number to compare it with.", "",
             "| " + " | ".join(n for n, _ in md_cols) + " |", "|" + "---|" * len(md_cols)]
    for row in rows:
        cells = []
        for name, get in md_cols:
            value = get(row)
            cells.append(f"{value:.2%}" if name == "conditional_accuracy" and value is not None else _cell(value))
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    md_path = out / "results.md"
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def write_contact_sheet(path: Path, rows: list[SweepRun]) -> Path | None:
    """Every finished run's sample grid side by side, captioned with rank, settings and scores."""
    from ganport.trainer.explore import caption_image, tile_images

    tiles = []
    for row in rows:
        if not row.done or not Path(row.samples or "").is_file():
            continue
        grid = decode_png(Path(row.samples).read_bytes())
        lines = [f"#{row.rank}"] + [f"{k}={_short(v)}" for k, v in row.params.items()]
        lines.append(_score_text(row.metrics))
        tiles.append(caption_image(grid, lines))
    if not tiles:
        logger.warning("no finished run: no contact sheet")
        path.unlink(missing_ok=True)  # never leave a sheet of an earlier state behind
        return None
    return save_png(path, tile_images(tiles, ncol=min(SHEET_COLUMNS, len(tiles))))
