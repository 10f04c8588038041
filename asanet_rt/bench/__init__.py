"""Speed benchmarks: checkpoints (torch), ONNX (ONNX Runtime, OpenVINO) and engines side by side.

``run_benchmark(models, settings)`` times every model on the same random inputs for every (batch, tile) pair and
returns a JSON-ready report (``SCHEMA_VERSION``) whose ratios compare each model with the first one (the
baseline). Every model is opened through the backend registry (``asanet_rt.backends.open_runner``), so a
backend ``classify`` can run is one ``bench`` can time; each runs in a fresh subprocess so the peak resident
memory it reports is its own.

Two figures per configuration, clearly apart:

- ``e2e``: numpy in, numpy out (``Runner.infer``), host-timed with ``perf_counter_ns``: input casts,
  host<->device copies, output allocation and the runner's synchronisation included.
- ``compute``: ``Runner.compute_fn``: inputs and outputs already where the backend wants them (ONNX Runtime
  IOBinding, OpenVINO tensors set once, torch tensors on the device, engine buffers staged), timed by the
  runner's own timer (CUDA events on a GPU where it has them).

Modules: ``settings`` (models, settings), ``measure`` (one model in one process), ``timing`` (the timed loop,
RSS), ``env`` (machine description), ``run`` (subprocess per model), ``report`` (JSON, tables), ``plot``.
torch is imported only by the torch runner, in the worker that runs a checkpoint.
"""
from __future__ import annotations

from .env import environment, gpus
from .measure import bench_config, bench_model, open_model
from .plot import plot_report
from .report import (SCHEMA_VERSION, TABLE_HEADERS, assemble_report, describe_environment, format_table, table_rows,
                     to_markdown, validate_report, write_json, write_markdown)
from .run import main, run_benchmark, run_isolated
from .settings import MODES, BenchSettings, ModelSpec, expand_models, model_kind, parse_model
from .timing import make_inputs, peak_rss_mb, reset_peak_rss, rss_mb, summarize, time_loop

#: Earlier name of :func:`gpus` (``benchmarks/run_all.py`` calls it).
_gpus = gpus

__all__ = ["MODES", "SCHEMA_VERSION", "TABLE_HEADERS", "BenchSettings", "ModelSpec", "assemble_report",
           "bench_config", "bench_model", "describe_environment", "environment", "expand_models", "format_table",
           "gpus", "main", "make_inputs", "model_kind", "open_model", "parse_model", "peak_rss_mb",
           "plot_report", "reset_peak_rss", "rss_mb", "run_benchmark", "run_isolated", "summarize", "table_rows",
           "time_loop", "to_markdown", "validate_report", "write_json", "write_markdown"]
