"""OpenVINO backend: an ONNX file on OpenVINO's CPU plugin, compiled once per input shape.

OpenVINO runs the same ONNX files as ONNX Runtime (FP32, FP16, INT8 Q/DQ); on many x86 CPUs it runs INT8 files
faster. Its CPU plugin runs static shapes fastest, so each (batch, height, width) is compiled on first use and
kept; a scene uses one or two shapes (full tiles, and a smaller batch at the end).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import AsanetError
from ..io_utils import cache_dir
from ..metadata import METADATA_KEY, ModelMetadata
from .base import ComputeFn, Runner
from .cpu import physical_cores, release_freed_memory

log = logging.getLogger(__name__)

#: Inference precisions a user may ask for; "auto" lets OpenVINO choose (bf16 on CPUs with bf16 units).
PRECISIONS = ("f32", "bf16", "f16", "auto")
#: Compiled shapes kept per runner.
MAX_SHAPES = 4


class OpenVINORunner(Runner):
    """One ``openvino.Core`` model; ``threads`` (default physical cores), ``precision`` (default ``f32``).

    ``f32`` by default so that an FP32 file computes in FP32 (OpenVINO would otherwise run it in bf16 on CPUs
    with bf16 units, which changes results); quantised layers of an INT8 file run in INT8 either way.
    ``config`` adds OpenVINO CPU properties.
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike, device: int = 0, threads: int | None = None,
                 precision: str = "f32", config: Mapping[str, Any] | None = None) -> None:
        import openvino as ov

        path = Path(path)
        if precision not in PRECISIONS:
            raise AsanetError(f"{path}: OpenVINO precision {precision!r}: choose {', '.join(PRECISIONS)}")
        self._ov = ov
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            raise AsanetError(f"{path}: OpenVINO cannot read this ONNX file ({exc})") from exc
        try:
            text = str(self.model.get_rt_info(["framework", METADATA_KEY]).value)
        except Exception as exc:  # noqa: BLE001 - missing rt_info raises a plain RuntimeError
            raise AsanetError(f"{path}: no asanet-rt metadata (ONNX metadata_props key {METADATA_KEY!r}); export "
                              f"the model with `asanet-rt export`") from exc
        super().__init__(str(path), ModelMetadata.from_json(text, source=str(path)))
        names = {p.get_any_name() for p in self.model.inputs}
        if not set(self.input_names) <= names:
            raise AsanetError(f"{path}: model inputs are {', '.join(sorted(names))}; the asanet-rt contract needs "
                              f"{', '.join(self.input_names)}")
        self.threads = int(threads) if threads else physical_cores()
        self.precision = precision
        # LATENCY with one stream: one request at a time uses every thread on the one tile batch in flight.
        self.config: dict[str, Any] = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                                       "NUM_STREAMS": 1}
        if precision != "auto":
            self.config["INFERENCE_PRECISION_HINT"] = precision
        # OpenVINO's own cache of compiled models: a later run of the same model and shape skips most of the
        # compilation (0.84 -> 0.25 s for the demo model at 512 px)
        self.config["CACHE_DIR"] = str(cache_dir("openvino"))
        self.config.update(dict(config or {}))
        self._output_names = tuple(o.get_any_name() for o in self.model.outputs)
        self._compiled: OrderedDict[tuple[int, ...], tuple[Any, Any]] = OrderedDict()

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def _sar_channels(self) -> int:
        return self.metadata.sar_replicate if self.inputs.kind == "normalized" else 1

    def _request(self, shape: tuple[int, int, int]) -> tuple[Any, Any]:
        """(compiled model, infer request) for (batch, height, width), compiled on first use."""
        if self.model is None:
            raise AsanetError(f"{self.path}: runner is closed")
        entry = self._compiled.get(shape)
        if entry is not None:
            self._compiled.move_to_end(shape)
            return entry
        n, h, w = shape
        model = self.model.clone()
        model.reshape({"optical": [n, 3, h, w], "sar": [n, self._sar_channels(), h, w]})
        try:
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as exc:  # noqa: BLE001
            raise AsanetError(f"{self.path}: OpenVINO cannot compile the model for shape {n}x{h}x{w} ({exc})") from exc
        entry = (compiled, compiled.create_infer_request())
        self._compiled[shape] = entry
        release_freed_memory()  # compilation's scratch buffers are freed now; give their pages back
        while len(self._compiled) > MAX_SHAPES:
            self._compiled.popitem(last=False)
        log.debug("%s: OpenVINO compiled %dx%dx%d", self.path, n, h, w)
        return entry

    def prepare(self, batch: int, tile: int, width: int | None = None) -> None:
        self._request((int(batch), int(tile), int(width or tile)))

    def infer(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Copy the inputs into the request's tensors, run, copy the outputs out.

        start_async + wait rather than the synchronous ``infer``: the latter also computes on the calling thread,
        one thread more than ``INFERENCE_NUM_THREADS``, which oversubscribes a small machine.
        """
        optical = feed["optical"]
        compiled, request = self._request((optical.shape[0], optical.shape[2], optical.shape[3]))
        for name in self.input_names:
            request.get_tensor(name).data[...] = feed[name]
        request.start_async()
        request.wait()
        names = list(outputs) if outputs is not None else list(self._output_names)
        return {name: request.get_tensor(name).data.copy() for name in names}

    def compute_fn(self, feed: Mapping[str, np.ndarray]) -> tuple[ComputeFn, str] | None:
        arrays = {k: np.ascontiguousarray(feed[k], dtype=np.float32) for k in self.input_names}
        optical = arrays["optical"]
        _, request = self._request((optical.shape[0], optical.shape[2], optical.shape[3]))
        for name, array in arrays.items():
            request.set_tensor(name, self._ov.Tensor(array, shared_memory=True))

        def call() -> None:
            request.start_async()
            request.wait()
            _ = arrays  # shared input memory must outlive the request's tensors
        return call, "perf_counter_ns"

    def runtime_info(self) -> dict[str, Any]:
        info = {**super().runtime_info(), "openvino_config": {k: str(v) for k, v in self.config.items()},
                "intra_op_threads": self.threads}
        try:
            info["cpu_name"] = str(self.core.get_property("CPU", "FULL_DEVICE_NAME"))
        except Exception:  # noqa: BLE001 - a property name an OpenVINO release lacks
            pass
        if self._compiled:
            compiled = next(reversed(self._compiled.values()))[0]
            hint = compiled.get_property("INFERENCE_PRECISION_HINT")
            info["execution_precision"] = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        return info

    def close(self) -> None:
        self._compiled.clear()
        self.model = None
