"""Speed benchmarks: checkpoints (torch eager), ONNX (ONNX Runtime, OpenVINO) and engines side by side.

``run_benchmark(models, settings)`` times every model on the same random inputs for every (batch, tile) pair and
returns a JSON-ready report (``SCHEMA_VERSION``) whose ratios compare each model with the first one (the
baseline). Each model runs in a fresh subprocess (``python -m asanet_rt.bench --worker``) so the peak resident
memory it reports is its own, not what an earlier model left in the allocator.

Two figures per configuration, clearly apart:

- ``e2e``: numpy in, numpy out, host-timed with ``perf_counter_ns``: input casts, host<->device copies, output
  allocation and the runner's synchronisation included. What an application calling ``infer`` sees.
- ``compute``: inputs and outputs already where the backend wants them (ONNX Runtime IOBinding with
  pre-allocated outputs, OpenVINO tensors set once, torch tensors on the device). CUDA events around
  enqueue + synchronise where torch runs on a GPU; ``perf_counter_ns`` otherwise (a synchronous run).

torch is imported only inside the checkpoint target, in the worker that runs it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

import numpy as np

from ._version import __version__
from .errors import AsanetError
from .io_utils import atomic_output
from .metadata import METADATA_KEY, ModelMetadata

log = logging.getLogger(__name__)

#: Bumped when a key of the JSON report changes meaning or disappears (new keys do not bump it).
SCHEMA_VERSION = 1
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: Backends a model can be benchmarked on (``MODEL@BACKEND`` on the command line).
BACKENDS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "openvino",
            "tensorrt", "tensorrt_rtx")
_ALIASES = {"ort": "onnxruntime", "onnxruntime-cpu": "onnxruntime", "cpu": "onnxruntime",
            "ort-cuda": "onnxruntime-cuda", "cuda": "onnxruntime-cuda", "ort-trt": "onnxruntime-tensorrt",
            "ort-tensorrt": "onnxruntime-tensorrt", "ov": "openvino", "trt": "tensorrt", "rtx": "tensorrt_rtx",
            "tensorrt-rtx": "tensorrt_rtx", "eager": "torch", "compile": "torch-compile"}
MODES = ("both", "e2e", "compute")
#: Environment variables that cap the thread pools of OpenMP / BLAS libraries in the worker.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Distributions whose versions the report records (whichever are installed).
_PACKAGES = ("asanet-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt",
             "tensorrt-cu12", "tensorrt-cu13", "tensorrt_rtx", "tensorrt-rtx", "cuda-python", "pycuda",
             "cupy-cuda12x", "cupy-cuda13x", "nvidia-ml-py", "onnx", "matplotlib", "rasterio")
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
              "amx_bf16", "asimd", "sve")


# ---------------------------------------------------------------------------------------------------------------
# What to run and how
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """One model file on one backend; ``label`` names it in tables (unique within a run)."""

    path: str
    backend: str
    label: str = ""

    @property
    def kind(self) -> str:
        """``checkpoint``, ``onnx`` or ``engine``, by file suffix."""
        return model_kind(self.path)


@dataclass(frozen=True)
class BenchSettings:
    """Sweep, timing budget and thread count shared by every model of one run."""

    batches: tuple[int, ...] = (1,)
    tiles: tuple[int, ...] = (256,)
    warmup: int = 3
    iterations: int = 100
    time_budget_s: float = 5.0
    min_iterations: int = 3
    threads: int = 0  # 0: physical cores
    mode: str = "both"
    seed: int = 0
    device: int = 0
    torch_device: str = "cpu"
    openvino_precision: str = "f32"
    isolate: bool = True
    keep_samples: bool = True
    allow_engine_host_code: bool = False  # trust version-compatible engines' embedded code (--allow-engine-host-code)

    def resolved(self) -> "BenchSettings":
        """A copy with ``threads`` filled in and every value checked."""
        from .backends.onnxruntime import physical_cores

        threads = int(self.threads) or physical_cores()
        if threads < 1:
            raise AsanetError(f"--threads {self.threads}: need at least 1")
        if not self.batches or min(self.batches) < 1:
            raise AsanetError(f"--batch {','.join(map(str, self.batches))}: batch sizes must be >= 1")
        if not self.tiles or min(self.tiles) < 32:
            raise AsanetError(f"--tile {','.join(map(str, self.tiles))}: tiles must be >= 32 px (ASANet's minimum)")
        if self.mode not in MODES:
            raise AsanetError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.warmup < 0 or self.iterations < 1 or self.time_budget_s <= 0:
            raise AsanetError("--warmup must be >= 0, --iterations >= 1 and --time-budget > 0")
        if not (self.torch_device == "cpu" or self.torch_device.startswith("cuda")):
            raise AsanetError(f"--torch-device {self.torch_device!r}: use cpu or cuda[:N]")
        return dataclasses.replace(self, threads=threads, batches=tuple(int(b) for b in self.batches),
                                   tiles=tuple(int(t) for t in self.tiles),
                                   min_iterations=max(1, min(self.min_iterations, self.iterations)))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["batches"], data["tiles"] = list(self.batches), list(self.tiles)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BenchSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["batches"], values["tiles"] = tuple(values["batches"]), tuple(values["tiles"])
        return cls(**values)


def model_kind(path: str | os.PathLike) -> str:
    """``checkpoint``, ``onnx`` or ``engine`` from the file suffix; a clear error for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise AsanetError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected a checkpoint "
                      f"({', '.join(CHECKPOINT_SUFFIXES)}), an ONNX file (.onnx) or an engine "
                      f"({', '.join(ENGINE_SUFFIXES)})")


def _default_backend(kind: str) -> str:
    return {"checkpoint": "torch", "onnx": "onnxruntime", "engine": "tensorrt"}[kind]


def _compatible(kind: str, backend: str) -> bool:
    if kind == "checkpoint":
        return backend.startswith("torch")
    if kind == "onnx":
        return backend.startswith("onnxruntime") or backend == "openvino"
    return backend in ("tensorrt", "tensorrt_rtx")


def parse_model(text: str, torch_compile: bool = False) -> ModelSpec:
    """``PATH`` or ``PATH@BACKEND`` (``ort``, ``ort-cuda``, ``openvino``, ``trt``, ``rtx``, ``torch-compile``)."""
    path, backend = text, ""
    head, sep, tail = text.rpartition("@")
    if sep and tail and (tail.lower() in BACKENDS or tail.lower() in _ALIASES):
        path, backend = head, _ALIASES.get(tail.lower(), tail.lower())
    kind = model_kind(path)
    if not Path(path).is_file():
        raise AsanetError(f"{path}: model file not found" if not Path(path).exists() else
                          f"{path}: not a model file (a directory?)")
    backend = backend or _default_backend(kind)
    if backend == "torch" and torch_compile:
        backend = "torch-compile"
    if not _compatible(kind, backend):
        raise AsanetError(f"{text}: a {kind} file cannot run on backend {backend}")
    return ModelSpec(str(path), backend)


def expand_models(models: Sequence[str | ModelSpec], torch_compile: bool = False,
                  openvino: bool = False) -> list[ModelSpec]:
    """Parse model arguments; ``openvino`` adds an OpenVINO run right after every ONNX Runtime CPU run."""
    specs: list[ModelSpec] = []
    for item in models:
        spec = item if isinstance(item, ModelSpec) else parse_model(str(item), torch_compile)
        specs.append(spec)
        if openvino and spec.kind == "onnx" and spec.backend == "onnxruntime":
            specs.append(ModelSpec(spec.path, "openvino"))
    if not specs:
        raise AsanetError("no model given; pass one or more checkpoints, ONNX files or engines")
    if any(s.backend == "openvino" for s in specs) and importlib.util.find_spec("openvino") is None:
        raise AsanetError("OpenVINO is not installed; pip install 'asanet-rt[openvino]' or drop --openvino / @openvino")
    labels: dict[str, int] = {}
    out = []
    for spec in specs:
        label = spec.label or f"{Path(spec.path).name} ({spec.backend})"
        labels[label] = labels.get(label, 0) + 1
        if labels[label] > 1:
            label = f"{label} #{labels[label]}"
        out.append(dataclasses.replace(spec, label=label))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Memory probes (Linux /proc; getrusage elsewhere)
# ---------------------------------------------------------------------------------------------------------------
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


def _nvml_process_mb(device: int) -> float | None:
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


# ---------------------------------------------------------------------------------------------------------------
# Targets: one model on one backend, as the worker drives it
# ---------------------------------------------------------------------------------------------------------------
#: A compute-only call; returns its own elapsed nanoseconds (device-timed) or None (host-timed by the caller).
ComputeFn = Callable[[], "int | None"]


def model_feed(meta: ModelMetadata, bands: Sequence[str], optical: np.ndarray,
               sar: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inputs from raw tiles: as is, or normalised for a ``--input normalized`` export."""
    if (meta.export or {}).get("input", "raw") != "normalized":
        return {"optical": optical, "sar": sar}
    perm = [list(bands).index(name) for name in meta.optical_channels]
    mean = np.asarray(meta.optical_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(meta.optical_std, np.float32).reshape(1, 3, 1, 1)
    sar3 = np.repeat(sar.astype(np.float32), meta.sar_replicate, axis=1)
    s_mean = np.asarray(meta.sar_mean, np.float32).reshape(1, -1, 1, 1)
    s_std = np.asarray(meta.sar_std, np.float32).reshape(1, -1, 1, 1)
    return {"optical": (optical[:, perm].astype(np.float32) - mean) / std, "sar": (sar3 - s_mean) / s_std}


class Target:
    """One model on one backend: load once, then ``prepare`` / ``run`` / ``compute_fn`` per configuration."""

    backend = ""
    device = "cpu"

    def __init__(self, spec: ModelSpec, settings: BenchSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.metadata: ModelMetadata | None = None
        self.bands: tuple[str, ...] = ("blue", "green", "red")
        self.runtime: dict[str, Any] = {}

    # What the model accepts ---------------------------------------------------------------------------------
    def unsupported(self, batch: int, tile: int) -> str | None:
        """Why (batch, tile) is outside the model's exported ranges, or None."""
        export = (self.metadata.export or {}) if self.metadata else {}
        if "batch" in export:
            lo, hi = (int(v) for v in export["batch"])
            if not lo <= batch <= hi:
                return f"batch {batch} outside the model's exported range {lo}-{hi}"
        if "tile" in export:
            lo, hi = (int(v) for v in export["tile"])
            if not lo <= tile <= hi:
                return f"tile {tile} outside the model's exported range {lo}-{hi}"
        return None

    def info(self) -> dict[str, Any]:
        """Precision, op flavour, outputs ... for the report, from the metadata."""
        meta = self.metadata
        export = dict(meta.export or {}) if meta else {}
        return {
            "precision": export.get("precision", "fp32"),
            "flavour": export.get("ops"),
            "int8_target": export.get("int8_target"),
            "input_kind": export.get("input", "raw"),
            "outputs": list(export.get("outputs", [])) or None,
            "arch": meta.arch.name if meta else None,
            "num_classes": meta.num_classes if meta else None,
            "optical_bands": list(self.bands),
        }

    # Per configuration ------------------------------------------------------------------------------------
    def prepare(self, batch: int, tile: int) -> None:
        """Shape-specific setup (static-shape compilation); timed apart from inference."""

    def run(self, optical: np.ndarray, sar: np.ndarray) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out: the end-to-end call."""
        raise NotImplementedError

    def compute_fn(self, optical: np.ndarray, sar: np.ndarray) -> tuple[ComputeFn, str] | None:
        """A compute-only call with device-resident I/O and the name of its timer; None if not available."""
        return None

    def reset_device_peak(self) -> None:
        """Start a new device-memory high-water mark (where the backend keeps one)."""

    def device_memory(self) -> tuple[float | None, str | None]:
        """(peak device memory MiB, how it was measured), or (None, None) on the CPU."""
        if self.device == "cpu":
            return None, None
        used = _nvml_process_mb(self.settings.device)
        return (used, "nvml process usage after the run (allocator pools keep their high-water mark)") \
            if used is not None else (None, None)

    def close(self) -> None:
        """Free the backend."""


class TorchTarget(Target):
    """A checkpoint on torch: eager (the baseline) or ``torch.compile``; outputs softmax probabilities."""

    backend = "torch"

    def __init__(self, spec: ModelSpec, settings: BenchSettings) -> None:
        super().__init__(spec, settings)
        import torch

        from .export import load_checkpoint

        self.torch = torch
        torch.set_num_threads(settings.threads)
        with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
            torch.set_num_interop_threads(1)
        device = settings.torch_device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise AsanetError(f"{spec.path}: --torch-device {device} but this torch has no CUDA device")
        self.device = device if device == "cpu" or ":" in device else f"{device}:{settings.device}"
        model = load_checkpoint(spec.path).to(self.device)
        self.metadata = model.metadata
        self.bands = tuple(self.metadata.optical_channels)
        self.compiled = spec.backend == "torch-compile"
        self.net = torch.compile(model) if self.compiled else model
        meta = self.metadata
        dev = self.device
        self.opt_mean = torch.tensor(meta.optical_mean, device=dev).view(1, 3, 1, 1)
        self.opt_std = torch.tensor(meta.optical_std, device=dev).view(1, 3, 1, 1)
        self.sar_mean = torch.tensor(meta.sar_mean[:1], device=dev).view(1, 1, 1, 1)
        self.sar_std = torch.tensor(meta.sar_std[:1], device=dev).view(1, 1, 1, 1)
        self.runtime = {"torch_threads": torch.get_num_threads(), "torch_interop_threads":
                        torch.get_num_interop_threads(), "mode": "compile" if self.compiled else "eager",
                        "device": self.device}
        if self.device != "cpu":
            self.runtime["gpu"] = torch.cuda.get_device_name(self.device)

    def info(self) -> dict[str, Any]:
        data = super().info()
        data.update(precision="fp32", flavour=None, outputs=["probabilities"], input_kind="raw")
        return data

    def unsupported(self, batch: int, tile: int) -> str | None:
        return None  # the eager network takes any batch and any H, W >= 32

    def _forward(self, optical: Any, sar: Any) -> Any:
        """Same work as a raw-input ONNX export with probabilities: normalise, replicate SAR, network, softmax."""
        opt = (optical - self.opt_mean) / self.opt_std
        sar3 = ((sar - self.sar_mean) / self.sar_std).expand(-1, 3, -1, -1)
        return self.torch.softmax(self.net(opt, sar3), dim=1)

    def run(self, optical: np.ndarray, sar: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            opt = torch.from_numpy(optical).to(self.device)
            s = torch.from_numpy(sar).to(self.device)
            return {"probabilities": self._forward(opt, s).cpu().numpy()}  # .cpu() synchronises a GPU

    def compute_fn(self, optical: np.ndarray, sar: np.ndarray) -> tuple[ComputeFn, str] | None:
        torch = self.torch
        opt = torch.from_numpy(optical).to(self.device)
        s = torch.from_numpy(sar).to(self.device)
        if self.device == "cpu":
            def call() -> None:
                with torch.inference_mode():
                    self._forward(opt, s)
            return call, "perf_counter_ns"
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed() -> int:
            with torch.inference_mode():
                start.record()
                self._forward(opt, s)
                end.record()
            end.synchronize()
            return int(start.elapsed_time(end) * 1e6)
        return timed, "cuda_event"

    def reset_device_peak(self) -> None:
        if self.device != "cpu":
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def device_memory(self) -> tuple[float | None, str | None]:
        if self.device == "cpu":
            return None, None
        return (self.torch.cuda.max_memory_allocated(self.device) / (1024 * 1024),
                "torch.cuda.max_memory_allocated (tensors; the caching allocator reserves more)")


class RunnerTarget(Target):
    """An ONNX file on ONNX Runtime or an engine on TensorRT / TensorRT-RTX, through ``open_runner``."""

    def __init__(self, spec: ModelSpec, settings: BenchSettings) -> None:
        super().__init__(spec, settings)
        from .backends import open_runner

        options: dict[str, Any] = {}
        if spec.backend.startswith("onnxruntime"):
            options["threads"] = settings.threads
        elif settings.allow_engine_host_code:
            options["allow_host_code"] = True
        self.runner = open_runner(spec.path, backend=spec.backend, device=settings.device, **options)
        self.backend = spec.backend if spec.backend.startswith("onnxruntime") else (self.runner.backend or spec.backend)
        self.metadata = self.runner.metadata
        export = dict(self.metadata.export or {})
        self.bands = tuple(export.get("optical_bands") or self.metadata.optical_channels)
        providers = tuple(getattr(self.runner, "providers", ()) or ())
        gpu = spec.kind == "engine" or any(p != "CPUExecutionProvider" for p in providers[:1])
        self.device = f"cuda:{settings.device}" if gpu else "cpu"
        self.runtime = {"runner": type(self.runner).__name__, "device": self.device}
        if providers:
            self.runtime["providers"] = list(providers)
        if getattr(self.runner, "threads", None):
            self.runtime["intra_op_threads"] = int(self.runner.threads)
        self._session = getattr(self.runner, "session", None)

    def run(self, optical: np.ndarray, sar: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner.infer(model_feed(self.metadata, self.bands, optical, sar))

    def compute_fn(self, optical: np.ndarray, sar: np.ndarray) -> tuple[ComputeFn, str] | None:
        if self._session is not None:
            return self._ort_binding(optical, sar)
        hook = getattr(self.runner, "benchmark_compute", None)
        if callable(hook):  # an engine runner that can time its own enqueue + sync with CUDA events
            return hook(model_feed(self.metadata, self.bands, optical, sar)), "cuda_event"
        return None

    def _ort_binding(self, optical: np.ndarray, sar: np.ndarray) -> tuple[ComputeFn, str]:
        """IOBinding: inputs already in the session's element type and place, outputs pre-allocated."""
        import onnxruntime as ort

        sess = self._session
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
        feed = model_feed(self.metadata, self.bands, optical, sar)
        cast = {i.name: np.ascontiguousarray(feed[i.name], dtype=types.get(i.type, np.float32))
                for i in sess.get_inputs()}
        names = [o.name for o in sess.get_outputs()]
        first = sess.run(names, cast)
        place = "cpu" if self.device == "cpu" else "cuda"
        dev_id = 0 if place == "cpu" else int(self.settings.device)
        binding = sess.io_binding()
        keep = []
        for name, array in cast.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, place, dev_id)
            binding.bind_ortvalue_input(name, value)
            keep.append(value)
        for name, out in zip(names, first):
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), out.dtype, place, dev_id)
            binding.bind_ortvalue_output(name, value)
            keep.append(value)

        def call() -> None:
            sess.run_with_iobinding(binding)
            _ = keep  # the bound buffers must outlive the binding
        # ORT's Run returns after the execution provider synchronised, so the host timer is right on a GPU too.
        return call, "perf_counter_ns" if place == "cpu" else "perf_counter_ns (Run synchronises the device)"

    def close(self) -> None:
        self.runner.close()


class OpenVINOTarget(Target):
    """An ONNX file on OpenVINO's CPU plugin, compiled per (batch, tile) as a static shape."""

    backend = "openvino"

    def __init__(self, spec: ModelSpec, settings: BenchSettings) -> None:
        super().__init__(spec, settings)
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(spec.path)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            raise AsanetError(f"{spec.path}: OpenVINO cannot read this ONNX file ({exc})") from exc
        try:
            text = str(self.model.get_rt_info(["framework", METADATA_KEY]).value)
        except Exception as exc:  # noqa: BLE001
            raise AsanetError(f"{spec.path}: no asanet-rt metadata (ONNX metadata_props key {METADATA_KEY!r}); "
                              f"export the model with `asanet-rt export`") from exc
        self.metadata = ModelMetadata.from_json(text, source=spec.path)
        export = dict(self.metadata.export or {})
        self.bands = tuple(export.get("optical_bands") or self.metadata.optical_channels)
        # f32 unless asked: on CPUs with bf16 units OpenVINO would otherwise silently run an FP32 model in bf16.
        self.config = {"INFERENCE_NUM_THREADS": int(settings.threads), "PERFORMANCE_HINT": "LATENCY",
                       "NUM_STREAMS": 1}
        if settings.openvino_precision != "auto":
            self.config["INFERENCE_PRECISION_HINT"] = settings.openvino_precision
        self.compiled: Any = None
        self.request: Any = None
        self.shape: tuple[int, int, int] | None = None
        self.runtime = {"device": "CPU", "openvino_config": {k: str(v) for k, v in self.config.items()},
                        "cpu_name": str(self.core.get_property("CPU", "FULL_DEVICE_NAME"))}

    def prepare(self, batch: int, tile: int, width: int | None = None) -> None:
        """Compile for the static shape (batch, tile, width or tile): static shapes run faster on its CPU plugin."""
        model = self.model.clone()
        sar_channels = self.metadata.sar_replicate if (self.metadata.export or {}).get("input") == "normalized" else 1
        w = width or tile
        model.reshape({"optical": [batch, 3, tile, w], "sar": [batch, sar_channels, tile, w]})
        try:
            self.compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as exc:  # noqa: BLE001
            raise AsanetError(f"{self.spec.path}: OpenVINO cannot compile the model for shape {batch}x{tile}x{w} "
                              f"({exc})") from exc
        self.request = self.compiled.create_infer_request()
        self.shape = (batch, tile, w)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.runtime["execution_precision"] = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def run(self, optical: np.ndarray, sar: np.ndarray) -> dict[str, np.ndarray]:
        """Copy the inputs into the request's tensors, run, copy the outputs out.

        start_async + wait rather than the synchronous ``infer``: the latter also computes on the calling thread,
        one thread more than ``INFERENCE_NUM_THREADS``, which oversubscribes a small machine.
        """
        for name, array in model_feed(self.metadata, self.bands, optical, sar).items():
            self.request.get_tensor(name).data[...] = array
        self.request.start_async()
        self.request.wait()
        return {out.get_any_name(): self.request.get_tensor(out).data.copy() for out in self.compiled.outputs}

    def compute_fn(self, optical: np.ndarray, sar: np.ndarray) -> tuple[ComputeFn, str] | None:
        feed = model_feed(self.metadata, self.bands, optical, sar)
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items()}
        for name, array in arrays.items():
            self.request.set_tensor(name, self.ov.Tensor(array, shared_memory=True))

        def call() -> None:
            self.request.start_async()
            self.request.wait()
            _ = arrays  # shared input memory must outlive the request's tensors
        return call, "perf_counter_ns"

    def close(self) -> None:
        self.request = self.compiled = None


def open_target(spec: ModelSpec, settings: BenchSettings) -> Target:
    """The target for ``spec``'s backend."""
    if spec.backend.startswith("torch"):
        return TorchTarget(spec, settings)
    if spec.backend == "openvino":
        return OpenVINOTarget(spec, settings)
    return RunnerTarget(spec, settings)


# ---------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------
def make_inputs(batch: int, tile: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw 0-255 float32 tiles (optical (N,3,T,T), SAR (N,1,T,T)), identical for every model of a run."""
    rng = np.random.default_rng([seed, batch, tile])
    optical = rng.integers(0, 256, (batch, 3, tile, tile), dtype=np.uint8).astype(np.float32)
    sar = rng.integers(0, 256, (batch, 1, tile, tile), dtype=np.uint8).astype(np.float32)
    return optical, sar


def summarize(samples_ns: Sequence[int], batch: int, tile: int, *, warmup: int, timer: str,
              cpu_ns: int | None = None, keep_samples: bool = True) -> dict[str, Any]:
    """Latency percentiles, mean +- std and throughput of one timed loop (the report's ``Measurement``)."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    total_s = float(ms.sum()) / 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    tiles_per_s = batch * len(ms) / total_s if total_s > 0 else float("nan")
    return {
        "timer": timer,
        "iterations": int(len(ms)),
        "warmup": int(warmup),
        "total_s": round(total_s, 6),
        "latency_ms": {"p50": _r(p50), "p90": _r(p90), "p99": _r(p99), "mean": _r(float(ms.mean())),
                       "std": _r(float(ms.std(ddof=1)) if len(ms) > 1 else 0.0), "min": _r(float(ms.min())),
                       "max": _r(float(ms.max()))},
        "throughput": {"tiles_per_s": _r(tiles_per_s), "mpx_per_s": _r(tiles_per_s * tile * tile / 1e6)},
        "cpu_ms_per_iter": None if cpu_ns is None else _r(cpu_ns / 1e6 / len(ms)),
        "samples_ms": [round(float(v), 4) for v in ms] if keep_samples else None,
    }


def _r(value: float, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def time_loop(fn: Callable[[], Any], batch: int, tile: int, settings: BenchSettings, timer: str,
              self_timed: bool = False) -> dict[str, Any]:
    """Warm up, then time ``fn`` until ``settings.iterations`` calls or ``settings.time_budget_s`` (at least
    ``settings.min_iterations`` calls)."""
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


def bench_config(target: Target, batch: int, tile: int, settings: BenchSettings,
                 say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Time one (batch, tile) configuration of a loaded target."""
    entry: dict[str, Any] = {"batch": batch, "tile": tile, "status": "ok", "reason": None, "first_call_ms": None,
                             "e2e": None, "compute": None, "compute_note": None, "peak_rss_mb": None,
                             "peak_device_memory_mb": None, "device_memory_source": None}
    reason = target.unsupported(batch, tile)
    if reason:
        entry.update(status="skipped", reason=reason)
        say(f"  batch {batch} tile {tile}: skipped ({reason})")
        return entry
    optical, sar = make_inputs(batch, tile, settings.seed)
    reset_peak_rss()
    target.reset_device_peak()
    try:
        t0 = time.perf_counter_ns()
        target.prepare(batch, tile)
        target.run(optical, sar)  # first call: lazy initialisation, compilation, allocator growth
        entry["first_call_ms"] = _r((time.perf_counter_ns() - t0) / 1e6, 3)
        if settings.mode in ("both", "e2e"):
            entry["e2e"] = time_loop(lambda: target.run(optical, sar), batch, tile, settings, "perf_counter_ns")
        if settings.mode in ("both", "compute"):
            compute = target.compute_fn(optical, sar)
            if compute is None:
                entry["compute_note"] = f"{target.backend}: no device-resident I/O exposed; e2e only"
            else:
                fn, timer = compute
                entry["compute"] = time_loop(fn, batch, tile, settings, timer, self_timed=timer == "cuda_event")
    except AsanetError as exc:
        entry.update(status="error", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one failing shape must not lose the others' numbers
        entry.update(status="error", reason=f"{type(exc).__name__}: {exc}")
    entry["peak_rss_mb"] = _r(peak_rss_mb(), 1)
    mem, source = target.device_memory()
    entry["peak_device_memory_mb"], entry["device_memory_source"] = _r(mem, 1) if mem is not None else None, source
    say(_progress_line(entry))
    return entry


def _progress_line(entry: Mapping[str, Any]) -> str:
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


def bench_model(spec: ModelSpec, settings: BenchSettings,
                say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Load one model and time every configuration; errors are recorded, not raised (the run goes on)."""
    record: dict[str, Any] = {"label": spec.label, "path": spec.path, "kind": spec.kind, "backend": spec.backend,
                              "error": None, "configs": []}
    with contextlib.suppress(OSError):
        record["file_bytes"] = os.path.getsize(spec.path)
    record["rss_before_load_mb"] = _r(rss_mb(), 1)
    scoped = reset_peak_rss()
    record["rss_peak_scope"] = "per-config" if scoped else "process"
    say(f"{spec.label}: loading")
    target: Target | None = None
    try:
        t0 = time.perf_counter()
        target = open_target(spec, settings)
        record["load_s"] = _r(time.perf_counter() - t0, 3)
        record["rss_after_load_mb"] = _r(rss_mb(), 1)
        record["peak_rss_load_mb"] = _r(peak_rss_mb(), 1)
        record["backend"] = target.backend or spec.backend
        record["device"] = target.device
        record.update(target.info())
        record["runtime"] = target.runtime
        for tile in settings.tiles:
            for batch in settings.batches:
                record["configs"].append(bench_config(target, batch, tile, settings, say))
        record["runtime"] = target.runtime  # OpenVINO adds the execution precision once compiled
    except AsanetError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported per model; the other models still run
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
    finally:
        if target is not None:
            with contextlib.suppress(Exception):
                target.close()
    peaks = [c["peak_rss_mb"] for c in record["configs"] if c.get("peak_rss_mb") is not None]
    peaks.append(record.get("peak_rss_load_mb") or 0.0)
    record["peak_rss_mb"] = max(peaks) if peaks else None
    if record["error"]:
        say(f"{spec.label}: error: {record['error']}")
    return record


# ---------------------------------------------------------------------------------------------------------------
# Isolation: one subprocess per model
# ---------------------------------------------------------------------------------------------------------------
def _run_isolated(spec: ModelSpec, settings: BenchSettings, quiet: bool) -> dict[str, Any]:
    """Run ``bench_model`` in a fresh interpreter; its thread pools capped through the environment."""
    env = dict(os.environ)
    for var in _THREAD_VARS:
        env[var] = str(settings.threads)
    with tempfile.TemporaryDirectory(prefix="asanet_bench_") as tmp:
        job, out = Path(tmp, "job.json"), Path(tmp, "result.json")
        job.write_text(json.dumps({"spec": dataclasses.asdict(spec), "settings": settings.to_dict(),
                                   "quiet": quiet}))
        cmd = [sys.executable, "-m", "asanet_rt.bench", "--worker", str(job), str(out)]
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet else None,
                              stderr=subprocess.PIPE if quiet else None, text=True)
        if out.is_file():
            return json.loads(out.read_text())
        detail = (proc.stderr or "").strip().splitlines()[-5:] if quiet else []
        error = f"worker exited with status {proc.returncode} before writing a result"
        if proc.returncode < 0:
            error += f" (signal {-proc.returncode}; out of memory?)"
        if detail:
            error += ": " + " | ".join(detail)
        return {"label": spec.label, "path": spec.path, "kind": spec.kind, "backend": spec.backend,
                "error": error, "configs": []}


def _worker_main(job_path: str, out_path: str) -> int:
    """Entry point of the per-model subprocess."""
    job = json.loads(Path(job_path).read_text())
    spec = ModelSpec(**job["spec"])
    settings = BenchSettings.from_dict(job["settings"])
    quiet = bool(job.get("quiet"))

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    record = bench_model(spec, settings, say)
    with atomic_output(out_path) as tmp:
        tmp.write_text(json.dumps(record))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The run and its report
# ---------------------------------------------------------------------------------------------------------------
def environment(settings: BenchSettings | None = None) -> dict[str, Any]:
    """The machine and software a run measured: CPU, memory, GPUs, OS, Python and package versions."""
    from .backends.onnxruntime import physical_cores

    cpu: dict[str, Any] = {"model": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
                           "physical_cores": physical_cores(), "isa": []}
    with contextlib.suppress(AttributeError):
        cpu["affinity_cpus"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model name", "Hardware") and cpu["model"] in ("", platform.machine(),
                                                                                     platform.processor()):
                cpu["model"] = value.strip()
            if key in ("flags", "Features") and not cpu["isa"]:
                flags = set(value.split())
                cpu["isa"] = [f for f in _ISA_FLAGS if f in flags]
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 ** 2, 1)
    packages = {}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    env = {"cpu": cpu, "memory_gb": memory_gb, "os": platform.platform(), "python": platform.python_version(),
           "packages": packages, "gpus": _gpus(),
           "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if settings is not None:
        env["threads_used"] = settings.threads
    return env


def _gpus() -> list[dict[str, Any]]:
    """GPUs and driver from ``nvidia-smi`` (empty without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines() if out.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append({"index": int(parts[0]), "name": parts[1], "driver": parts[2],
                         "memory_mb": float(parts[3]) if parts[3].replace(".", "").isdigit() else None})
    return gpus


def run_benchmark(models: Sequence[str | ModelSpec], settings: BenchSettings = BenchSettings(), *,
                  torch_compile: bool = False, openvino: bool = False, quiet: bool = False,
                  stream: TextIO | None = None) -> dict[str, Any]:
    """Benchmark ``models`` (the first is the baseline) and return the report (see ``SCHEMA_VERSION``)."""
    settings = settings.resolved()
    specs = expand_models(models, torch_compile=torch_compile, openvino=openvino)
    stream = stream or sys.stderr
    env = environment(settings)
    records = []
    for spec in specs:
        if settings.isolate:
            if not quiet:
                print(f"[{len(records) + 1}/{len(specs)}] {spec.label} (fresh subprocess)", file=stream, flush=True)
            records.append(_run_isolated(spec, settings, quiet))
        else:
            say = (lambda text: None) if quiet else (lambda text: print(text, file=stream, flush=True))
            records.append(bench_model(spec, settings, say))
    if all(r.get("error") for r in records):
        raise AsanetError("every model failed: " + "; ".join(f"{r['label']}: {r['error']}" for r in records))
    return assemble_report(records, settings, env)


def assemble_report(records: Sequence[Mapping[str, Any]], settings: BenchSettings,
                    env: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten per-model records into the report and add the ratios against the first model."""
    models, results = [], []
    for index, record in enumerate(records):
        model = {k: v for k, v in record.items() if k != "configs"}
        model["index"] = index
        models.append(model)
        for config in record.get("configs", []):
            results.append({"model": record["label"], "model_index": index, **config})
    base = {(r["batch"], r["tile"]): r for r in results if r["model_index"] == 0 and r["status"] == "ok"}
    base_rss = models[0].get("peak_rss_mb") if models else None
    for r in results:
        ref = base.get((r["batch"], r["tile"]))
        r["vs_baseline"] = _ratios(ref, r) if ref is not None and r["status"] == "ok" else None
    for m in models:
        m["peak_rss_ratio"] = _div(m.get("peak_rss_mb"), base_rss)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "asanet-rt.bench",
        "sdk_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": dict(env),
        "settings": {**settings.to_dict(), "isolation": "subprocess" if settings.isolate else "in-process"},
        "baseline": models[0]["label"] if models else None,
        "models": models,
        "results": results,
    }


def _div(a: float | None, b: float | None) -> float | None:
    return _r(a / b, 4) if a is not None and b else None


def _p50(measure: Mapping[str, Any] | None) -> float | None:
    return measure["latency_ms"]["p50"] if measure else None


def _ratios(ref: Mapping[str, Any], r: Mapping[str, Any]) -> dict[str, float | None]:
    """Speed-ups (> 1: faster than the baseline) and the memory ratio for one configuration."""
    tput = lambda m: m["throughput"]["tiles_per_s"] if m else None  # noqa: E731
    return {
        "e2e_speedup_p50": _div(_p50(ref.get("e2e")), _p50(r.get("e2e"))),
        "compute_speedup_p50": _div(_p50(ref.get("compute")), _p50(r.get("compute"))),
        "e2e_throughput_ratio": _div(tput(r.get("e2e")), tput(ref.get("e2e"))),
        "peak_rss_ratio": _div(r.get("peak_rss_mb"), ref.get("peak_rss_mb")),
    }


# ---------------------------------------------------------------------------------------------------------------
# Output: terminal table, markdown, JSON, plot
# ---------------------------------------------------------------------------------------------------------------
TABLE_HEADERS = ("model", "prec", "batch", "tile", "e2e p50 ms", "p90", "p99", "mean ± std", "tiles/s", "Mpx/s",
                 "compute p50 ms", "× e2e", "× compute", "peak RSS MiB", "dev MiB")


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per (model, batch, tile), in run order; the × columns are speed-ups against the baseline."""
    models = {m["index"]: m for m in report["models"]}
    rows = []
    for r in report["results"]:
        m = models[r["model_index"]]
        head = (r["model"], str(m.get("precision") or "-"), str(r["batch"]), str(r["tile"]))
        if r["status"] != "ok":
            rows.append(head + (f"{r['status']}: {r['reason']}",) + ("",) * (len(TABLE_HEADERS) - 5))
            continue
        e2e, comp, ratio = r.get("e2e"), r.get("compute"), r.get("vs_baseline") or {}
        lat = e2e["latency_ms"] if e2e else {}
        rows.append(head + (
            _fmt(lat.get("p50")), _fmt(lat.get("p90")), _fmt(lat.get("p99")),
            f"{lat['mean']:.2f} ± {lat['std']:.2f}" if e2e else "-",
            _fmt(e2e["throughput"]["tiles_per_s"]) if e2e else "-",
            _fmt(e2e["throughput"]["mpx_per_s"], ".3f") if e2e else "-",
            _fmt(_p50(comp)), _fmt(ratio.get("e2e_speedup_p50")), _fmt(ratio.get("compute_speedup_p50")),
            _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(r.get("peak_device_memory_mb"), ".0f")))
    for m in report["models"]:
        if m.get("error"):
            rows.append((m["label"], "-", "-", "-", f"error: {m['error']}") + ("",) * (len(TABLE_HEADERS) - 5))
    return rows


def describe_environment(report: Mapping[str, Any]) -> list[str]:
    """A few lines: machine, threads, versions, settings."""
    env, s = report["environment"], report["settings"]
    cpu = env["cpu"]
    lines = [f"CPU: {cpu.get('model')} ({cpu.get('physical_cores')} physical cores, {cpu.get('logical_cpus')} "
             f"logical, {cpu.get('affinity_cpus', '?')} usable; {' '.join(cpu.get('isa') or []) or 'no ISA flags'})"
             f", {env.get('memory_gb')} GB RAM; threads used: {s['threads']}"]
    for gpu in env.get("gpus") or []:
        lines.append(f"GPU {gpu['index']}: {gpu['name']}, driver {gpu['driver']}, {gpu.get('memory_mb')} MiB")
    if env.get("load_average"):
        lines.append("load average at start: " + ", ".join(f"{v:.2f}" for v in env["load_average"]))
    pk = env.get("packages", {})
    lines.append("software: Python " + env["python"] + ", " + ", ".join(f"{k} {v}" for k, v in pk.items()
                                                                     if k not in ("rasterio", "onnx")))
    lines.append(f"settings: warm-up {s['warmup']}, up to {s['iterations']} iterations or {s['time_budget_s']} s "
                 f"per figure (at least {s['min_iterations']}), mode {s['mode']}, {s['isolation']} per model, "
                 f"seed {s['seed']}")
    lines.append(f"baseline: {report['baseline']}; × = baseline p50 / model p50 (> 1: faster than the baseline)")
    return lines


def format_table(report: Mapping[str, Any]) -> str:
    """The terminal table: environment lines, then aligned columns."""
    rows = table_rows(report)
    widths = [len(h) for h in TABLE_HEADERS]
    for row in rows:
        if len(row) > 4 and row[5:] and not any(row[5:]):  # an error/skip row spans the number columns
            continue
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    right = set(range(2, len(TABLE_HEADERS)))

    def line(cells: Sequence[str]) -> str:
        if len(cells) > 5 and not any(cells[5:]):
            return "  ".join(c.ljust(w) for c, w in zip(cells[:4], widths)) + "  " + cells[4]
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = describe_environment(report) + ["", line(TABLE_HEADERS), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    notes = {r["compute_note"] for r in report["results"] if r.get("compute_note")}
    out += [f"note: {n}" for n in sorted(notes)]
    return "\n".join(out)


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: environment, a pipe table, how to read it."""
    lines = ["# asanet-rt bench", "", f"Run {report['created_utc']} with asanet-rt {report['sdk_version']}.", ""]
    lines += [f"- {text}" for text in describe_environment(report)]
    lines += ["", "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "|".join(
        "---" if i < 2 else "---:" for i in range(len(TABLE_HEADERS))) + "|"]
    for row in table_rows(report):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    lines += ["", "e2e: numpy in, numpy out (host copies included), `perf_counter_ns`. compute: device-resident "
              "inputs and pre-allocated outputs; timer per result in the JSON. Ratios come from this one run; "
              "see the README's bench section for how to read them on a busy machine."]
    notes = {r["compute_note"] for r in report["results"] if r.get("compute_note")}
    lines += [f"- {n}" for n in sorted(notes)]
    return "\n".join(lines) + "\n"


def write_json(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The report as JSON, written atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")


def write_markdown(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(to_markdown(report))


def plot_report(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    """A PNG: e2e latency distribution (box plots) and throughput bars per model and batch, one row per tile."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AsanetError(f"{path}: --plot needs matplotlib (pip install 'asanet-rt[plot]')") from exc
    ok = [r for r in report["results"] if r["status"] == "ok" and r.get("e2e")]
    if not ok:
        raise AsanetError(f"{path}: nothing to plot, no configuration ran")
    tiles = sorted({r["tile"] for r in ok})
    labels = list(dict.fromkeys(r["model"] for r in ok))
    fig, axes = plt.subplots(len(tiles), 2, figsize=(15, 4.2 * len(tiles)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, tile in enumerate(tiles):
        rs = [r for r in ok if r["tile"] == tile]
        ax = axes[row][0]
        data = [r["e2e"]["samples_ms"] or [r["e2e"]["latency_ms"]["p50"]] for r in rs]
        box = ax.boxplot(data, patch_artist=True, showfliers=True)
        for patch, r in zip(box["boxes"], rs):
            patch.set_facecolor(colours[labels.index(r["model"]) % len(colours)])
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(rs) + 1), [f"{r['model']}\nb={r['batch']}" for r in rs], rotation=30,
                      ha="right", fontsize=7)
        ax.set_ylabel("e2e latency per batch (ms)")
        ax.set_title(f"latency distribution, tile {tile}")
        if max(max(d) for d in data) > 10 * min(min(d) for d in data):
            ax.set_yscale("log")
        ax = axes[row][1]
        batches = sorted({r["batch"] for r in rs})
        width = 0.8 / max(len(labels), 1)
        for i, label in enumerate(labels):
            values = [next((r["e2e"]["throughput"]["tiles_per_s"] for r in rs
                            if r["model"] == label and r["batch"] == b), 0.0) for b in batches]
            ax.bar([j + i * width for j in range(len(batches))], values, width, label=label,
                   color=colours[i % len(colours)])
        ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(batches))],
                      [f"batch {b}" for b in batches])
        heights = [bar.get_height() for bar in ax.patches if bar.get_height() > 0]
        if heights and max(heights) > 30 * min(heights):
            ax.set_yscale("log")
        ax.set_ylabel("tiles/s (e2e)")
        ax.set_title(f"throughput, tile {tile}")
        ax.legend(fontsize=7)
    fig.suptitle(f"asanet-rt bench: {report['environment']['cpu'].get('model')}, {report['settings']['threads']} "
                 f"threads", fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def validate_report(report: Mapping[str, Any]) -> None:
    """Check a report's top-level shape and schema version (readers should call this first)."""
    version = report.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise AsanetError(f"bench report schema_version {version!r}: this asanet-rt reads up to {SCHEMA_VERSION}")
    for key in ("environment", "settings", "baseline", "models", "results"):
        if key not in report:
            raise AsanetError(f"bench report: missing key {key!r}")


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m asanet_rt.bench --worker JOB OUT`` (internal: the per-model subprocess)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "--worker":
        return _worker_main(args[1], args[2])
    print("usage: asanet-rt bench MODEL [MODEL ...] (this module's own entry point is internal)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
