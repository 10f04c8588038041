"""Backends behind one runner interface: ``open_runner(path)`` picks the right one for a model file.

The table of backends (names, aliases, modules, file kinds, options) is ``registry.BACKENDS``. ONNX files run on
ONNX Runtime (CPU, or its CUDA / TensorRT execution providers) or OpenVINO; engines (``.engine``, ``.plan``,
``.trt``) on TensorRT or TensorRT-RTX; checkpoints on torch (the export stage). Each runner module is imported only
when a model is opened on it.
"""
from __future__ import annotations

from .base import ComputeFn, Runner
from .feed import model_feed
from .registry import (ALIASES, BACKEND_NAMES, BACKENDS, FILE_KINDS, BackendSpec, available_backends,
                       backends_for, canonical_name, file_kind, get_backend, open_runner, resolve)

#: Suffixes by file kind (kept for callers of earlier releases; ``FILE_KINDS`` is the table).
ONNX_SUFFIXES = FILE_KINDS["onnx"]
ENGINE_SUFFIXES = FILE_KINDS["engine"]

__all__ = ["ALIASES", "BACKEND_NAMES", "BACKENDS", "BackendSpec", "ComputeFn", "ENGINE_SUFFIXES", "FILE_KINDS",
           "ONNX_SUFFIXES", "Runner", "available_backends", "backends_for", "canonical_name",
           "file_kind", "get_backend", "model_feed", "open_runner", "resolve"]
