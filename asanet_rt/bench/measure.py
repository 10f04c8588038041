"""One model in this process: open it through the backend registry, then time every (batch, tile) configuration.

Everything backend-specific comes from the :class:`~asanet_rt.backends.Runner`: ``prepare`` (per-shape
compilation), ``infer`` (the e2e call), ``compute_fn`` (device-resident I/O), ``runtime_info``, ``device_memory``.
"""
from __future__ import annotations

import contextlib
import os
import time
import traceback
from typing import Any, Callable, Mapping

from ..backends import Runner, model_feed, open_runner
from ..errors import AsanetError
from ..model_summary import model_summary
from .settings import BenchSettings, ModelSpec
from .timing import make_inputs, nvml_process_mb, peak_rss_mb, reset_peak_rss, rounded, rss_mb, time_loop

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def open_model(spec: ModelSpec, settings: BenchSettings) -> Runner:
    """``spec`` opened on its backend with the settings that backend takes (threads, torch device, precision)."""
    return open_runner(spec.path, backend=spec.backend, device=settings.device,
                       **settings.runner_options(spec.backend))


def device_memory(runner: Runner, settings: BenchSettings) -> tuple[float | None, str | None]:
    """The runner's own peak device figure; for a GPU runner without one, NVML's per-process usage."""
    mem, source = runner.device_memory()
    if mem is None and runner.device != "cpu":
        used = nvml_process_mb(settings.device)
        if used is not None:
            return used, "nvml process usage after the run (allocator pools keep their high-water mark)"
    return mem, source


def bench_config(runner: Runner, batch: int, tile: int, settings: BenchSettings, say: Say = _quiet
                 ) -> dict[str, Any]:
    """Time one (batch, tile) configuration of an opened model."""
    entry: dict[str, Any] = {"batch": batch, "tile": tile, "status": "ok", "reason": None, "first_call_ms": None,
                             "e2e": None, "compute": None, "compute_note": None, "peak_rss_mb": None,
                             "peak_device_memory_mb": None, "device_memory_source": None}
    reason = runner.inputs.unsupported(batch, tile)
    if reason:
        entry.update(status="skipped", reason=reason)
        say(f"  batch {batch} tile {tile}: skipped ({reason})")
        return entry
    optical, sar = make_inputs(batch, tile, settings.seed)
    feed = model_feed(runner.metadata, optical, sar)
    reset_peak_rss()
    runner.reset_device_peak()
    try:
        t0 = time.perf_counter_ns()
        runner.prepare(batch, tile)
        runner.infer(feed)  # first call: lazy initialisation, compilation, allocator growth
        entry["first_call_ms"] = rounded((time.perf_counter_ns() - t0) / 1e6, 3)
        if settings.mode in ("both", "e2e"):
            entry["e2e"] = time_loop(lambda: runner.infer(feed), batch, tile, settings, "perf_counter_ns")
        if settings.mode in ("both", "compute"):
            compute = runner.compute_fn(feed)
            if compute is None:
                entry["compute_note"] = f"{runner.backend}: no device-resident I/O exposed; e2e only"
            else:
                fn, timer = compute
                entry["compute"] = time_loop(fn, batch, tile, settings, timer, self_timed=timer == "cuda_event")
    except AsanetError as exc:
        entry.update(status="error", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one failing shape must not lose the others' numbers
        entry.update(status="error", reason=f"{type(exc).__name__}: {exc}")
    entry["peak_rss_mb"] = rounded(peak_rss_mb(), 1)
    mem, source = device_memory(runner, settings)
    entry["peak_device_memory_mb"], entry["device_memory_source"] = rounded(mem, 1), source
    say(progress_line(entry))
    return entry


def progress_line(entry: Mapping[str, Any]) -> str:
    """One line per configuration for the progress output."""
    head = f"  batch {entry['batch']} tile {entry['tile']}:"
    if entry["status"] != "ok":
        return f"{head} {entry['status']} ({entry['reason']})"
    parts = []
    for mode in ("e2e", "compute"):
        m = entry.get(mode)
        if m:
            parts.append(f"{mode} p50 {m['latency_ms']['p50']:.2f} ms ({m['iterations']} it, "
                         f"{m['throughput']['tiles_per_s']:.2f} tiles/s)")
    return f"{head} " + "; ".join(parts) + f"; peak RSS {entry['peak_rss_mb']:.0f} MiB"


def bench_model(spec: ModelSpec, settings: BenchSettings, say: Say = _quiet) -> dict[str, Any]:
    """Open one model and time every configuration; errors are recorded, not raised (the run goes on)."""
    record: dict[str, Any] = {"label": spec.label, "path": spec.path, "kind": spec.kind, "backend": spec.backend,
                              "error": None, "configs": []}
    with contextlib.suppress(OSError):
        record["file_bytes"] = os.path.getsize(spec.path)
    record["rss_before_load_mb"] = rounded(rss_mb(), 1)
    scoped = reset_peak_rss()
    record["rss_peak_scope"] = "per-config" if scoped else "process"
    say(f"{spec.label}: loading")
    runner: Runner | None = None
    try:
        t0 = time.perf_counter()
        runner = open_model(spec, settings)
        record["load_s"] = rounded(time.perf_counter() - t0, 3)
        record["rss_after_load_mb"] = rounded(rss_mb(), 1)
        record["peak_rss_load_mb"] = rounded(peak_rss_mb(), 1)
        # The runner's own name where it knows better (an engine's header says TensorRT or TensorRT-RTX).
        record["backend"] = runner.backend or spec.backend
        record["device"] = runner.device
        record.update(model_summary(runner))
        record["runtime"] = runner.runtime_info()
        for tile in settings.tiles:
            for batch in settings.batches:
                record["configs"].append(bench_config(runner, batch, tile, settings, say))
        record["runtime"] = runner.runtime_info()  # OpenVINO adds the execution precision once compiled
    except AsanetError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported per model; the other models still run
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
    finally:
        if runner is not None:
            with contextlib.suppress(Exception):
                runner.close()
    peaks = [c["peak_rss_mb"] for c in record["configs"] if c.get("peak_rss_mb") is not None]
    peaks.append(record.get("peak_rss_load_mb") or 0.0)
    record["peak_rss_mb"] = max(peaks) if peaks else None
    if record["error"]:
        say(f"{spec.label}: error: {record['error']}")
    return record
