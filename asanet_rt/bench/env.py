"""The machine and software a run measured: CPU (model, cores, ISA flags), memory, GPUs, OS, package versions."""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ..backends.cpu import ISA_FLAGS, parse_cpuinfo  # noqa: F401 - re-exported for reports
from .settings import BenchSettings

#: Distributions whose versions the report records (whichever are installed).
PACKAGES = ("asanet-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt",
            "tensorrt-cu12", "tensorrt-cu13", "tensorrt_rtx", "tensorrt-rtx", "cuda-python", "pycuda",
            "cupy-cuda12x", "cupy-cuda13x", "nvidia-ml-py", "onnx", "matplotlib", "rasterio")
def describe_cpu() -> dict[str, Any]:
    """CPU model, logical CPUs, physical cores, CPUs this process may use, ISA flags."""
    from ..backends.cpu import physical_cores

    cpu: dict[str, Any] = {"model": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
                           "physical_cores": physical_cores(), "isa": []}
    with contextlib.suppress(AttributeError):
        cpu["affinity_cpus"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        model, isa = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
        if model and cpu["model"] in ("", platform.machine(), platform.processor()):
            cpu["model"] = model
        cpu["isa"] = isa
    return cpu


def memory_gb() -> float | None:
    """Total memory, GB (Linux); None elsewhere."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    return None


def package_versions() -> dict[str, str]:
    """Versions of the installed :data:`PACKAGES`."""
    packages = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    return packages


def gpus() -> list[dict[str, Any]]:
    """GPUs and driver from ``nvidia-smi`` (empty without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.stdout.strip().splitlines() if out.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            found.append({"index": int(parts[0]), "name": parts[1], "driver": parts[2],
                          "memory_mb": float(parts[3]) if parts[3].replace(".", "").isdigit() else None})
    return found


def environment(settings: BenchSettings | None = None) -> dict[str, Any]:
    """The report's ``environment``: CPU, memory, GPUs, OS, Python and package versions, load average."""
    env = {"cpu": describe_cpu(), "memory_gb": memory_gb(), "os": platform.platform(),
           "python": platform.python_version(), "packages": package_versions(), "gpus": gpus(),
           "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if settings is not None:
        env["threads_used"] = settings.threads
    return env
