"""CPU facts: how many threads are worth using, the CPU's model and the ISA features that decide its kernels."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once); ``os.cpu_count()`` as a fallback."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def release_freed_memory() -> bool:
    """Hand memory that was freed but kept by the C allocator back to the system (glibc ``malloc_trim``).

    Loading a model reads the file and parses it before the backend copies the weights; glibc keeps those freed
    buffers mapped, so without this a loaded ONNX Runtime session holds about three times its weights in
    resident memory. Returns False where the C library has no ``malloc_trim`` (not glibc).
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes
            import ctypes.util

            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if not _TRIM:
        return False
    _TRIM(0)
    return True


_TRIM = None


#: CPU features that decide which kernels the backends pick (x86 vector/matrix units, Arm SIMD).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "sve")


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """(model name, the :data:`ISA_FLAGS` present, in table order) from ``/proc/cpuinfo`` text (x86 or Arm)."""
    model, isa = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name", "Hardware") and model is None:
            model = value.strip() or None
        if key in ("flags", "Features") and isa is None:
            flags = set(value.split())
            isa = [f for f in ISA_FLAGS if f in flags]
    return model, isa or []


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        model, _ = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = None
    return model or platform.processor() or platform.machine()
