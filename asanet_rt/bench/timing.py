"""Timing one call and memory probes: the timed loop, its summary (the report's ``Measurement``), RSS figures."""
from __future__ import annotations

import math
import os
import resource
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from .settings import BenchSettings


def make_inputs(batch: int, tile: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw 0-255 float32 tiles (optical (N,3,T,T), SAR (N,1,T,T)), identical for every model of a run."""
    rng = np.random.default_rng([seed, batch, tile])
    optical = rng.integers(0, 256, (batch, 3, tile, tile), dtype=np.uint8).astype(np.float32)
    sar = rng.integers(0, 256, (batch, 1, tile, tile), dtype=np.uint8).astype(np.float32)
    return optical, sar


def rounded(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded for the report; None for None, NaN and infinities (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def summarize(samples_ns: Sequence[int], batch: int, tile: int, *, warmup: int, timer: str,
              cpu_ns: int | None = None, keep_samples: bool = True) -> dict[str, Any]:
    """Latency percentiles, mean +- std and throughput of one timed loop (the report's ``Measurement``)."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    total_s = float(ms.sum()) / 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    tiles_per_s = batch * len(ms) / total_s if total_s > 0 else float("nan")
    r = rounded
    return {
        "timer": timer,
        "iterations": int(len(ms)),
        "warmup": int(warmup),
        "total_s": round(total_s, 6),
        "latency_ms": {"p50": r(p50), "p90": r(p90), "p99": r(p99), "mean": r(float(ms.mean())),
                       "std": r(float(ms.std(ddof=1)) if len(ms) > 1 else 0.0), "min": r(float(ms.min())),
                       "max": r(float(ms.max()))},
        "throughput": {"tiles_per_s": r(tiles_per_s), "mpx_per_s": r(tiles_per_s * tile * tile / 1e6)},
        "cpu_ms_per_iter": None if cpu_ns is None else r(cpu_ns / 1e6 / len(ms)),
        "samples_ms": [round(float(v), 4) for v in ms] if keep_samples else None,
    }


def time_loop(fn: Callable[[], Any], batch: int, tile: int, settings: BenchSettings, timer: str,
              self_timed: bool = False) -> dict[str, Any]:
    """Warm up, then time ``fn`` until ``settings.iterations`` calls or ``settings.time_budget_s`` (at least
    ``settings.min_iterations`` calls). ``self_timed``: ``fn`` returns its own nanoseconds (a device timer)."""
    for _ in range(settings.warmup):
        fn()
    budget_ns = int(settings.time_budget_s * 1e9)
    samples: list[int] = []
    cpu0 = time.process_time_ns()
    start = time.perf_counter_ns()
    while len(samples) < settings.iterations:
        t0 = time.perf_counter_ns()
        measured = fn()
        t1 = time.perf_counter_ns()
        samples.append(int(measured) if self_timed and measured is not None else t1 - t0)
        if len(samples) >= settings.min_iterations and t1 - start >= budget_ns:
            break
    cpu_ns = time.process_time_ns() - cpu0
    return summarize(samples, batch, tile, warmup=settings.warmup, timer=timer, cpu_ns=cpu_ns,
                     keep_samples=settings.keep_samples)


# Memory probes (Linux /proc; getrusage elsewhere) ------------------------------------------------------------
def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    """Resident memory of this process now, MiB."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory since start or the last ``reset_peak_rss``, MiB."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024
    return kb / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (``/proc/self/clear_refs`` 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def nvml_process_mb(device: int) -> float | None:
    """Device memory this process holds on GPU ``device`` (NVML), MiB; None without NVML or a GPU."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(device))
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return proc.usedGpuMemory / (1024 * 1024)
            return None
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML raises its own errors on drivers without per-process accounting
        return None
