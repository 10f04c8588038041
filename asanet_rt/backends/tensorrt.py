"""Runner for asanet-rt engine files on TensorRT (full or lean runtime) and TensorRT-RTX.

The pattern of the TensorRT Python samples' ``common_runtime.py``, kept small: named I/O tensors, device buffers
allocated once for the profile's maximum shapes, pinned host buffers reused across calls, the input shapes set
per batch, one CUDA stream, ``execute_async_v3``. The container header is checked (``check_compatible``) before
TensorRT deserialises anything, so a wrong TensorRT version or GPU fails with a readable message.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

import numpy as np

from ..engine_file import IncompatibleEngineError, check_compatible, read_engine
from ..errors import AsanetError
from .base import Runner
from .tensorrt_common import (FULL_RUNTIMES, LEAN_RUNTIMES, HostBuffer, allow_host_code, create_runtime,  # noqa: F401
                              engine_digests, import_runtime, open_cuda, register_engine_plugins, shared_logger)

log = logging.getLogger(__name__)

#: Runtime modules per engine family (the lean ones only for version-compatible engines); kept for old imports.
RUNTIME_MODULES = {"tensorrt": FULL_RUNTIMES["tensorrt"] + LEAN_RUNTIMES, "tensorrt_rtx": FULL_RUNTIMES["tensorrt_rtx"]}


def _rtx_validity(trt: ModuleType, runtime: Any, plan: bytes, path: Path) -> None:
    """TensorRT-RTX's own header check (version, compute capability, CUDA driver) before deserialising."""
    check = getattr(runtime, "get_engine_validity", None)
    if check is None:
        return
    size = int(getattr(runtime, "engine_header_size", 0) or len(plan))
    validity, diagnostics = check(plan[:size])
    if validity == trt.EngineValidity.INVALID:
        reasons = [name for name, flag in trt.EngineInvalidityDiagnostics.__members__.items()
                   if int(diagnostics) & int(flag)]
        raise IncompatibleEngineError(f"{path}: TensorRT-RTX {trt.__version__} reports the engine invalid here "
                                      f"({', '.join(reasons) or 'no reason given'}); rebuild it with asanet-rt build")
    if validity == trt.EngineValidity.SUBOPTIMAL:
        log.warning("%s: TensorRT-RTX says this engine will run here but not optimally; rebuild it on this "
                    "machine for full speed", path)


_allow_host_code = allow_host_code  # the runner's keyword argument shadows the function's name


class TensorRTRunner(Runner):
    """One engine, one execution context, one CUDA stream.

    ``runtime`` forces the Python module (``tensorrt``, ``tensorrt_lean``, ``tensorrt_rtx``); ``zero_copy`` maps
    pinned host buffers into the GPU's address space instead of copying (Jetson); ``memory`` picks cuda-python or
    pycuda; ``verify`` checks the engine's sha256 before loading it; ``allow_host_code`` lets TensorRT run the
    host code a version-compatible engine carries (only when you trust the file; see ``allow_host_code()``).
    """

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: int = 0, *, runtime: str | None = None,
                 zero_copy: bool = False, memory: str | None = None, verify: bool = True,
                 allow_host_code: bool = False) -> None:
        path = Path(path)
        self._cuda: Any = None
        self._buffers: list[tuple[str, int, HostBuffer]] = []
        info, plan = read_engine(path, verify=verify)
        super().__init__(str(path), info.model)
        self.info = info
        self.backend = info.backend
        self.device = f"cuda:{int(device)}"
        version_compatible = bool(info.compatibility.get("version_compatible"))
        host_code = _allow_host_code(info, path, allowed=allow_host_code, digests=engine_digests(path, plan))
        trt = import_runtime(info.backend, runtime, path, version_compatible=version_compatible)
        self.trt = trt
        try:
            self._cuda = cuda = open_cuda(device, prefer=memory)
            self.device_info = cuda.device_info()
        except AsanetError as exc:
            raise AsanetError(f"{path}: cannot run the engine here: {exc}") from exc
        check_compatible(info, trt.__version__, self.device_info.compute_capability, backend=info.backend, path=path)
        self._logger = shared_logger(trt)
        self._logger.errors.clear()
        rt = create_runtime(trt, self._logger)
        if info.backend == "tensorrt_rtx":
            _rtx_validity(trt, rt, plan, path)
        register_engine_plugins(trt, info.plugins, path)
        if hasattr(rt, "engine_host_code_allowed"):
            rt.engine_host_code_allowed = host_code  # the user's decision, never the header's
        self.engine = rt.deserialize_cuda_engine(plan)
        del plan
        if self.engine is None:
            detail = "; ".join(self._logger.errors[-3:]) or "no message from TensorRT"
            hint = "" if host_code else ("; if it was built version-compatible and you trust it, pass "
                                         "--allow-engine-host-code")
            raise AsanetError(f"{path}: TensorRT could not deserialise the engine ({detail}){hint}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise AsanetError(f"{path}: could not create an execution context (out of GPU memory?)")
        self._runtime = rt
        self.zero_copy = bool(zero_copy)
        if self.zero_copy and not self.device_info.can_map_host_memory:
            raise AsanetError(f"{path}: zero_copy needs a GPU that can map host memory; {self.device_info.name} "
                              f"cannot")
        if self.zero_copy and not self.device_info.integrated:
            log.warning("%s: zero_copy on a discrete GPU reads inputs over PCIe during the run; it pays off on "
                        "integrated GPUs (Jetson)", path)
        self._stream = cuda.stream()
        self._allocate(path)

    def _allocate(self, path: Path) -> None:
        """Buffers for the profile's maximum shapes, bound to the context once."""
        trt, engine, context = self.trt, self.engine, self.context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = tuple(n for n in names if n not in self._inputs)
        missing = [n for n in self.input_names if n not in self._inputs]
        if missing or len(self._inputs) != len(self.input_names):
            raise AsanetError(f"{path}: engine inputs are {', '.join(self._inputs)}; the asanet-rt contract needs "
                              f"{', '.join(self.input_names)}")
        self._limits: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for name in self._inputs:
            low, _, high = engine.get_tensor_profile_shape(name, 0)
            self._limits[name] = (tuple(low), tuple(high))
            context.set_input_shape(name, tuple(high))
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._host: dict[str, HostBuffer] = {}
        self._device: dict[str, int] = {}
        for name in names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise AsanetError(f"{path}: cannot size output {name!r} (shape {shape} at the profile maximum)")
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            host = self._cuda.host_alloc(nbytes, mapped=self.zero_copy)
            dptr = host.device_ptr if self.zero_copy else self._cuda.malloc(nbytes)
            self._buffers.append((name, 0 if self.zero_copy else dptr, host))
            self._host[name], self._device[name] = host, dptr
            if not context.set_tensor_address(name, dptr):
                raise AsanetError(f"{path}: TensorRT refused the buffer address of {name!r}")

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._outputs

    def _stage(self, feed: Mapping[str, np.ndarray]) -> None:
        """Copy inputs into the pinned buffers, set their shapes, and queue the uploads."""
        if self.context is None:
            raise AsanetError(f"{self.path}: runner is closed")
        self._cuda.activate()
        for name in self._inputs:
            if name not in feed:
                raise AsanetError(f"{self.path}: input {name!r} missing from the feed")
            array = np.asarray(feed[name])
            low, high = self._limits[name]
            if array.ndim != len(high) or any(not lo <= d <= hi for d, lo, hi in zip(array.shape, low, high)):
                raise AsanetError(f"{self.path}: {name} has shape {array.shape}; this engine takes {low} to {high} "
                                  f"(rebuild with wider --batch/--tile ranges)")
            dtype = self._dtypes[name]
            host = self._host[name]
            view = host.array[:array.size * dtype.itemsize].view(dtype).reshape(array.shape)
            np.copyto(view, array, casting="unsafe")  # uint8 or float64 tiles become the engine's input type
            if not self.zero_copy:
                self._cuda.htod(self._device[name], host, view.nbytes, self._stream)
            if not self.context.set_input_shape(name, array.shape):
                raise AsanetError(f"{self.path}: TensorRT rejected shape {array.shape} for {name}")

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self._cuda.stream_handle(self._stream)):
            raise AsanetError(f"{self.path}: TensorRT failed to enqueue the inference (see its messages above)")

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns fresh host arrays (the pinned buffers are reused by the next call)."""
        self._stage(feed)
        self._enqueue()
        shapes = {}
        for name in self._outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            shapes[name] = shape
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            if not self.zero_copy:
                self._cuda.dtoh(self._host[name], self._device[name], nbytes, self._stream)
        self._cuda.synchronize(self._stream)
        result = {}
        for name, shape in shapes.items():
            dtype = self._dtypes[name]
            count = int(np.prod(shape, dtype=np.int64))
            result[name] = self._host[name].array[:count * dtype.itemsize].view(dtype).reshape(shape).copy()
        return result

    def compute_fn(self, feed: Mapping[str, np.ndarray]) -> tuple[Callable[[], int], str]:
        """Stage ``feed`` once; the returned call times one enqueue with CUDA events (nanoseconds)."""
        self._stage(feed)
        self._cuda.synchronize(self._stream)
        timer = self._cuda.event_timer(self._stream)
        return (lambda: timer(self._enqueue)), "cuda_event"

    def close(self) -> None:
        """Free the context, the engine, the buffers and the stream; safe to call twice."""
        cuda = self._cuda
        if cuda is None:
            return
        try:
            if getattr(self, "_stream", None) is not None:
                cuda.synchronize(self._stream)
        except AsanetError:
            pass
        self.context = None  # the context must go before the engine, and both before their buffers
        self.engine = None
        for _, dptr, host in self._buffers:
            if dptr:
                cuda.free(dptr)
            cuda.free_host(host)
        self._buffers = []
        if getattr(self, "_stream", None) is not None:
            cuda.destroy_stream(self._stream)
            self._stream = None
        cuda.close()
        self._cuda = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down the CUDA bindings
            pass
