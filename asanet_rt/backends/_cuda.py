"""The few CUDA runtime calls the TensorRT runner needs, through cuda-python (preferred) or pycuda (fallback).

Pointers are plain ints; host buffers are numpy ``uint8`` arrays over page-locked (pinned) memory, optionally
mapped into the device address space (zero-copy, worthwhile on Jetson's integrated GPU where host and device
share DRAM).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import AsanetError


@dataclass
class HostBuffer:
    """Pinned host memory: ``array`` (uint8) for numpy, ``device_ptr`` when mapped (zero-copy), else 0."""

    array: np.ndarray
    device_ptr: int
    handle: Any


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: tuple[int, int]
    integrated: bool
    can_map_host_memory: bool

    @property
    def cc_text(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


class CudaPython:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` on cuda-python < 12.6)."""

    name = "cuda-python"

    def __init__(self, device: int) -> None:
        try:
            from cuda.bindings import runtime as rt
        except ModuleNotFoundError:
            from cuda import cudart as rt  # type: ignore[no-redef]
        self.rt = rt
        self.device = int(device)
        count = self._call(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if self.device >= count:
            raise AsanetError(f"GPU {self.device} requested; this machine has {count}")
        self.activate()

    def _call(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            text = self.rt.cudaGetErrorString(err)[1]
            raise AsanetError(f"CUDA {what} failed: {text.decode() if isinstance(text, bytes) else text}")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def activate(self) -> None:
        """Make this runner's GPU current for the calling thread (the runtime API's current device is per thread)."""
        self._call(self.rt.cudaSetDevice(self.device), "cudaSetDevice")

    def device_info(self) -> DeviceInfo:
        rt, attr = self.rt, self.rt.cudaDeviceAttr
        get = lambda a: int(self._call(rt.cudaDeviceGetAttribute(a, self.device), "cudaDeviceGetAttribute"))
        props = self._call(rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return DeviceInfo(name, (get(attr.cudaDevAttrComputeCapabilityMajor), get(attr.cudaDevAttrComputeCapabilityMinor)),
                          bool(get(attr.cudaDevAttrIntegrated)), bool(get(attr.cudaDevAttrCanMapHostMemory)))

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(max(1, nbytes)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def host_alloc(self, nbytes: int, mapped: bool) -> HostBuffer:
        flags = self.rt.cudaHostAllocMapped if mapped else self.rt.cudaHostAllocDefault
        ptr = int(self._call(self.rt.cudaHostAlloc(max(1, nbytes), flags), "cudaHostAlloc"))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * max(1, nbytes)).from_address(ptr))
        dptr = int(self._call(self.rt.cudaHostGetDevicePointer(ptr, 0), "cudaHostGetDevicePointer")) if mapped else 0
        return HostBuffer(array, dptr, ptr)

    def free_host(self, buf: HostBuffer) -> None:
        self.rt.cudaFreeHost(buf.handle)

    def stream(self) -> Any:
        return self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self.rt.cudaStreamDestroy(stream)

    def synchronize(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def htod(self, dptr: int, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dptr, buf.handle, nbytes, kind, stream), "cudaMemcpyAsync (to device)")

    def dtoh(self, buf: HostBuffer, dptr: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(buf.handle, dptr, nbytes, kind, stream), "cudaMemcpyAsync (to host)")

    def event_timer(self, stream: Any) -> Callable[[Callable[[], None]], int]:
        """``timer(work)`` runs ``work`` between two CUDA events on ``stream`` and returns elapsed nanoseconds."""
        rt = self.rt
        start = self._call(rt.cudaEventCreate(), "cudaEventCreate")
        end = self._call(rt.cudaEventCreate(), "cudaEventCreate")

        def timer(work: Callable[[], None]) -> int:
            self._call(rt.cudaEventRecord(start, stream), "cudaEventRecord")
            work()
            self._call(rt.cudaEventRecord(end, stream), "cudaEventRecord")
            self._call(rt.cudaEventSynchronize(end), "cudaEventSynchronize")
            return int(self._call(rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime") * 1e6)
        return timer

    def close(self) -> None:
        """Nothing to release: the runtime API shares the device's primary context with TensorRT."""


class PyCuda:
    """pycuda's driver API on the device's primary context (the one TensorRT's runtime API uses)."""

    name = "pycuda"

    def __init__(self, device: int) -> None:
        import pycuda.driver as cuda

        self.cuda = cuda
        cuda.init()
        if int(device) >= cuda.Device.count():
            raise AsanetError(f"GPU {device} requested; this machine has {cuda.Device.count()}")
        self.dev = cuda.Device(int(device))
        self.context = self.dev.retain_primary_context()
        self.context.push()
        self._allocs: dict[int, Any] = {}

    def activate(self) -> None:
        """pycuda's context is pushed once, on the thread that opened the runner."""

    def device_info(self) -> DeviceInfo:
        attr = self.cuda.device_attribute
        return DeviceInfo(self.dev.name(), self.dev.compute_capability(),
                          bool(self.dev.get_attribute(attr.INTEGRATED)),
                          bool(self.dev.get_attribute(attr.CAN_MAP_HOST_MEMORY)))

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(max(1, nbytes))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def host_alloc(self, nbytes: int, mapped: bool) -> HostBuffer:
        flags = self.cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        array = self.cuda.pagelocked_empty(max(1, nbytes), np.uint8, mem_flags=flags)
        return HostBuffer(array, int(array.base.get_device_pointer()) if mapped else 0, array)

    def free_host(self, buf: HostBuffer) -> None:
        buf.array.base.free()

    def stream(self) -> Any:
        return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        """pycuda streams are freed with their Python object."""

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def htod(self, dptr: int, buf: HostBuffer, nbytes: int, stream: Any) -> None:
        self.cuda.memcpy_htod_async(dptr, buf.array[:nbytes], stream)

    def dtoh(self, buf: HostBuffer, dptr: int, nbytes: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(buf.array[:nbytes], dptr, stream)

    def event_timer(self, stream: Any) -> Callable[[Callable[[], None]], int]:
        start, end = self.cuda.Event(), self.cuda.Event()

        def timer(work: Callable[[], None]) -> int:
            start.record(stream)
            work()
            end.record(stream)
            end.synchronize()
            return int(end.time_since(start) * 1e6)
        return timer

    def close(self) -> None:
        for ptr in list(self._allocs):
            self.free(ptr)
        try:
            self.context.pop()
        except Exception:  # noqa: BLE001 - popping from another thread or twice is harmless here
            pass


CudaApi = CudaPython | PyCuda
MEMORY_BACKENDS = ("cuda-python", "pycuda")


def open_cuda(device: int = 0, prefer: str | None = None) -> CudaApi:
    """cuda-python if installed (or ``prefer``red), else pycuda; a clear error when neither works."""
    order = [prefer] if prefer else list(MEMORY_BACKENDS)
    if prefer and prefer not in MEMORY_BACKENDS:
        raise AsanetError(f"memory backend {prefer!r}: choose {', '.join(MEMORY_BACKENDS)}")
    missing = []
    for name in order:
        try:
            return CudaPython(device) if name == "cuda-python" else PyCuda(device)
        except ModuleNotFoundError:
            missing.append(name)
        except AsanetError:
            raise
        except Exception as exc:  # noqa: BLE001 - pycuda raises its own LogicError / RuntimeError on no driver
            raise AsanetError(f"CUDA ({name}) could not open GPU {device}: {type(exc).__name__}: {exc}") from exc
    raise AsanetError(f"running an engine needs cuda-python (pip install cuda-python) or pycuda; "
                      f"not installed: {', '.join(missing)}")


def current_device_info(device: int = 0) -> DeviceInfo | None:
    """The GPU's name and compute capability, or None when no GPU (or no CUDA Python package) is usable."""
    try:
        cuda = open_cuda(device)
    except AsanetError:
        return None
    try:
        return cuda.device_info()
    except AsanetError:
        return None
    finally:
        cuda.close()
