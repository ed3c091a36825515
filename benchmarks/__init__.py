"""ganport benchmarks: speed measured side by side in one run, written as JSON and tables.

Run ``python -m benchmarks.run`` (``make bench``); ``--quick`` for a smoke run with tiny
settings, ``--only NAME ...`` for a subset. Each benchmark is one module with one function
``run(ctx) -> dict`` (see :mod:`benchmarks.common`); :mod:`benchmarks.run` writes each result to
``benchmarks/results/<name>.json`` and prints the tables and the headline ratios.

Modules: :mod:`.backends`, :mod:`.int8` (int8 vs fp32 speed and eval), :mod:`.serving`, :mod:`.batching`, :mod:`.word`, :mod:`.training`,
:mod:`.footprint`, :mod:`.peer` (against a Triton peer); shared pieces in :mod:`.common` (timing,
percentiles, tables, machine info), :mod:`.models` (untrained model packages), :mod:`.servers`
(in-process and subprocess servers), :mod:`.load` (the multi-process load generator) and, for the
peer, :mod:`.peer_env` (its venv) and ``peer_triton.py`` (its server, run in that venv).
"""

#: The benchmarks in the order the runner executes them.
BENCHMARK_NAMES = ("backends", "int8", "serving", "batching", "word", "training", "footprint", "peer")
