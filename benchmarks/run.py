"""Run the ganport benchmarks: ``python -m benchmarks.run [--quick] [--only NAME ...] [--out DIR]``.

Every selected benchmark runs in this one process against the same model packages (built once,
untrained, in a scratch folder), writes ``<out>/<name>.json`` and prints its table(s) as it
finishes; at the end all tables are printed again, followed by the headline ratios and their
targets. A benchmark that fails is reported and the others still run (exit status 1).

Examples:
    python -m benchmarks.run                        # everything (several minutes)
    python -m benchmarks.run --quick                # smoke run, tiny settings
    python -m benchmarks.run --only serving batching --out /tmp/bench
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import BENCHMARK_NAMES
from benchmarks.common import RESULTS_DIR, BenchContext, finish_result, fmt, render_table, write_result

logger = logging.getLogger("benchmarks.run")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The runner's command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, numbers not meaningful")
    parser.add_argument("--only", nargs="+", choices=BENCHMARK_NAMES, metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARK_NAMES)})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"folder for the JSON results (default {RESULTS_DIR})")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for every backend and for training (default 2)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder for models and runs (default: a temporary one, deleted)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def run_benchmark(name: str, ctx: BenchContext) -> dict[str, Any]:
    """Import ``benchmarks.<name>`` and call its ``run(ctx)``; returns the finished result."""
    module = importlib.import_module(f"benchmarks.{name}")
    return finish_result(module.run(ctx))


def print_tables(result: dict[str, Any]) -> None:
    """Print a result's tables and notes."""
    print(f"\n== {result['benchmark']} ({result['elapsed_s']:.0f} s{', quick' if result['quick'] else ''})")
    for table in result["tables"]:
        print(render_table(table))
        print()
    for note in result["notes"]:
        print(f"  * {note}")


def print_headlines(results: list[dict[str, Any]]) -> None:
    """One line per headline figure: value, target and whether it was met."""
    print("\n== headline figures")
    lines = []
    for result in results:
        for item in result["headline"]:
            value = fmt(item["value"]) + (item["unit"] if item["unit"] in ("x", "%") else f" {item['unit']}")
            verdict = "" if item["met"] is None else ("  [met]" if item["met"] else "  [NOT met]")
            target = f"  target {item['target']}" if item["target"] else ""
            detail = f"  ({item['detail']})" if item["detail"] else ""
            lines.append((f"{result['benchmark']}: {item['name']}", value.strip(), f"{target}{verdict}{detail}"))
    if not lines:
        print("  (none)")
        return
    width = max(len(label) for label, _, _ in lines)
    value_width = max(len(value) for _, value, _ in lines)
    for label, value, rest in lines:
        print(f"  {label.ljust(width)}  {value.rjust(value_width)}{rest}")


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; returns the exit status (1 if any failed)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("benchmarks").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    names = [n for n in BENCHMARK_NAMES if not args.only or n in args.only]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ganport-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = BenchContext(quick=args.quick, threads=args.threads, workdir=workdir)
    command = " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])])
    print(f"ganport benchmarks: {', '.join(names)}{' (quick)' if args.quick else ''}; "
          f"threads {args.threads}; results in {args.out}; load average {os.getloadavg()[0]:.1f}", flush=True)
    results, failed = [], []
    started = time.perf_counter()
    try:
        for name in names:
            logger.info("running %s ...", name)
            try:
                result = run_benchmark(name, ctx)
            except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
                logger.error("benchmark %s failed:\n%s", name, traceback.format_exc())
                failed.append(name)
                continue
            result["command"] = command
            path = write_result(result, args.out)
            results.append(result)
            print_tables(result)
            print(f"  -> {path}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(results) > 1:
        print("\n\n######## all results")
        for result in results:
            print_tables(result)
    print_headlines(results)
    print(f"\n{len(results)} benchmark(s) in {time.perf_counter() - started:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
