"""Backends behind one runner interface: ``open_runner(path)`` picks the right one for a model file.

ONNX files run on ONNX Runtime (CPU by default; its CUDA or TensorRT execution provider on request). Serialized
engines (``.engine``, ``.plan``, ``.trt``) run on TensorRT through ``asanet_rt.backends.tensorrt``, imported only
when an engine is opened, so the runtime never needs TensorRT otherwise.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ..errors import AsanetError
from ..model_files import check_onnx_file
from .base import Runner

__all__ = ["Runner", "open_runner", "ONNX_SUFFIXES", "ENGINE_SUFFIXES", "BACKENDS"]

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: Backend names ``open_runner`` accepts; the ``onnxruntime-*`` names pick an execution provider.
ONNX_BACKENDS = ("onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
ENGINE_BACKENDS = ("tensorrt", "tensorrt_rtx")
BACKENDS = ("auto",) + ONNX_BACKENDS + ENGINE_BACKENDS
_ALIASES = {"ort": "onnxruntime", "cpu": "onnxruntime-cpu", "cuda": "onnxruntime-cuda", "ort-cuda": "onnxruntime-cuda",
            "ort-trt": "onnxruntime-tensorrt", "ort-tensorrt": "onnxruntime-tensorrt", "trt": "tensorrt",
            "tensorrt-rtx": "tensorrt_rtx", "rtx": "tensorrt_rtx"}


def open_runner(path: str | os.PathLike, backend: str = "auto", device: int = 0, **options: Any) -> Runner:
    """Open ``path`` with ``backend`` (``auto``: by file type) on GPU ``device``; ``options`` go to the runner."""
    path = Path(path)
    name = _ALIASES.get(backend.lower(), backend.lower())
    if name not in BACKENDS:
        raise AsanetError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if not path.exists():
        raise AsanetError(f"{path}: model file not found")
    if not path.is_file():
        raise AsanetError(f"{path}: not a model file (a directory?)")
    suffix = path.suffix.lower()
    if name == "auto":
        if suffix in ONNX_SUFFIXES:
            name = "onnxruntime"
        elif suffix in ENGINE_SUFFIXES:
            name = "tensorrt"
        else:
            raise AsanetError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected "
                              f"{', '.join(ONNX_SUFFIXES + ENGINE_SUFFIXES)} or an explicit backend")
    if name in ONNX_BACKENDS:
        if suffix in ENGINE_SUFFIXES:
            raise AsanetError(f"{path}: a serialized engine cannot run on {name}; use backend tensorrt")
        check_onnx_file(path)  # external data and metadata size, before ONNX Runtime reads anything
        from .onnxruntime import OnnxRuntimeRunner

        provider = None if name == "onnxruntime" else name.split("-", 1)[1]
        return OnnxRuntimeRunner(path, device=device, provider=options.pop("provider", provider), **options)
    if suffix in ONNX_SUFFIXES:
        raise AsanetError(f"{path}: backend {name} runs engines; build one with `asanet-rt build` or use "
                          f"backend onnxruntime")
    # TensorRT and TensorRT-RTX engines share one runner, which reads the engine's own container header.
    return _tensorrt_runner_class(path)(path, device=device, **options)


def _tensorrt_runner_class(path: Path) -> type[Runner]:
    """``asanet_rt.backends.tensorrt.TensorRTRunner``, imported lazily; a clear error when it is not available."""
    module_name = "asanet_rt.backends.tensorrt"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise AsanetError(f"{path}: engine support is not part of this install "
                              f"({module_name} is missing)") from exc
        raise AsanetError(f"{path}: running an engine needs the Python package {exc.name!r} "
                          f"(pip install 'asanet-rt[tensorrt]' on a GPU machine)") from exc
    runner_class = getattr(module, "TensorRTRunner", None)
    if runner_class is None:
        raise AsanetError(f"{path}: {module_name} has no TensorRTRunner")
    return runner_class
