"""What the TensorRT runner and the engine builder share (public): the process-wide TensorRT logger, the import
of the right TensorRT module, the trust rule for engine host code, the registration of this package's V3 plugins
at inference time, and the few CUDA calls (cuda-python preferred, pycuda as fallback).

Pointers are plain ints; host buffers are numpy ``uint8`` arrays over page-locked (pinned) memory, optionally
mapped into the device address space (zero-copy, worthwhile on Jetson's integrated GPU where host and device
share DRAM). Nothing here imports TensorRT, CUDA or torch at import time.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import AsanetError

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------------------------------------------------
# TensorRT modules and the shared logger
# ------------------------------------------------------------------------------------------------------------
#: Python modules that can run an engine of each family, in order of preference. The lean runtime
#: (``tensorrt_lean``; its bindings wheel installs it as ``tensorrt_lean_bindings``) deserialises only
#: version-compatible plans, so it is tried only for those.
FULL_RUNTIMES = {"tensorrt": ("tensorrt",), "tensorrt_rtx": ("tensorrt_rtx",)}
LEAN_RUNTIMES = ("tensorrt_lean", "tensorrt_lean_bindings")

_LOGGERS: dict[str, Any] = {}


def shared_logger(trt: ModuleType) -> Any:
    """One ILogger per TensorRT module for the whole process: TensorRT keeps the first logger it is given and
    ignores (with a warning) any other, so builders, runtimes and inspectors must share it. It forwards to
    ``logging`` and keeps the error messages in ``.errors`` and recent INFO messages in ``.infos`` (clear them
    before an operation)."""
    key = trt.__name__
    if key not in _LOGGERS:
        sev = trt.ILogger.Severity

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self.infos: list[str] = []  # recent INFO messages (e.g. the build's DLA/GPU layer placement)

            def log(self, severity: Any, msg: str) -> None:
                if severity in (sev.ERROR, sev.INTERNAL_ERROR):
                    self.errors.append(msg)
                    del self.errors[:-50]
                    log.debug("%s error: %s", key, msg)
                elif severity == sev.WARNING:
                    log.warning("%s: %s", key, msg)
                else:
                    if severity == sev.INFO:
                        self.infos.append(msg)
                        del self.infos[:-400]
                    log.debug("%s: %s", key, msg)

        _LOGGERS[key] = _Logger()
    return _LOGGERS[key]


def runtime_candidates(backend: str, version_compatible: bool) -> tuple[str, ...]:
    """Module names that may run a ``backend`` engine; the lean runtime only for version-compatible plans."""
    names = FULL_RUNTIMES.get(backend, ())
    return names + LEAN_RUNTIMES if backend == "tensorrt" and version_compatible else names


def import_runtime(backend: str, module: str | None, path: Path, *, version_compatible: bool = False) -> ModuleType:
    """The TensorRT Python module that runs ``backend`` engines (``module`` forces one)."""
    if module in LEAN_RUNTIMES and not version_compatible:
        raise AsanetError(f"{path}: the lean runtime ({module}) loads only version-compatible engines and this one "
                          f"is not; run it with full TensorRT (the 'tensorrt' module)")
    names = (module,) if module else runtime_candidates(backend, version_compatible)
    if not names:
        raise AsanetError(f"{path}: unknown engine backend {backend!r} in the header")
    tried = []
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                trt = importlib.import_module(name)
        except ModuleNotFoundError:
            tried.append(name)
            continue
        except Exception as exc:  # noqa: BLE001 - PyPI placeholder packages raise at import time
            raise AsanetError(f"{path}: importing {name!r} failed ({type(exc).__name__}: {exc})") from exc
        if hasattr(trt, "Runtime"):
            return trt
        tried.append(f"{name} (no Runtime)")
    lean = ("" if backend != "tensorrt" or version_compatible else
            "; the lean runtime (tensorrt_lean) runs only engines built with --version-compatible, so this one "
            "needs full TensorRT")
    raise AsanetError(f"{path}: this engine was built by {backend}; running it needs the Python module "
                      f"{' or '.join(repr(n) for n in names)} (tried: {', '.join(tried)}){lean}")


_UNUSABLE: list[Any] = []


def create_runtime(trt: ModuleType, logger: Any) -> Any:
    """``trt.Runtime(logger)``, failing clearly without a usable GPU: depending on the release TensorRT then raises
    pybind11's 'nullptr' TypeError, returns None, or returns an unusable object after logging the error."""
    errors = getattr(logger, "errors", None)
    before = len(errors) if errors is not None else 0
    try:
        runtime = trt.Runtime(logger)
    except TypeError as exc:
        runtime, cause = None, exc
    else:
        cause = None
    if runtime is None or (errors is not None and len(errors) > before):
        if runtime is not None:
            _UNUSABLE.append(runtime)  # destroying a half-made Runtime crashes some releases: never free it
        detail = "; ".join(getattr(logger, "errors", [])[-2:]) or str(cause or "")
        raise AsanetError(f"{trt.__name__}: no CUDA GPU found, or its driver is too old for this TensorRT "
                          f"({detail})")
    return runtime


# ------------------------------------------------------------------------------------------------------------
# Trust: engine host code (issue: a version-compatible plan carries a lean runtime that the host executes)
# ------------------------------------------------------------------------------------------------------------
#: Environment variable naming the allow-list file (instead of ``~/.config/asanet_rt/trusted_engines.txt``).
TRUSTED_ENGINES_ENV = "ASANET_RT_TRUSTED_ENGINES"


class EngineTrustError(AsanetError):
    """An engine needs its embedded host code to run and the user has not said to trust it."""


def trusted_engines_file() -> Path:
    """The allow-list of trusted engine sha256 values: ``$ASANET_RT_TRUSTED_ENGINES``, else
    ``$XDG_CONFIG_HOME/asanet_rt/trusted_engines.txt`` (``~/.config/...``)."""
    if os.environ.get(TRUSTED_ENGINES_ENV):
        return Path(os.environ[TRUSTED_ENGINES_ENV]).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "asanet_rt" / "trusted_engines.txt"


def trusted_engine_hashes(path: Path | None = None) -> set[str]:
    """sha256 values in the allow-list: one per line, the first word (``sha256sum`` output works); ``#`` comments."""
    path = path or trusted_engines_file()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise AsanetError(f"{path}: cannot read the trusted-engines list ({exc})") from exc
    found = set()
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip().split(maxsplit=1)
        if word and len(word[0]) == 64 and all(c in "0123456789abcdef" for c in word[0].lower()):
            found.add(word[0].lower())
    return found


def allow_host_code(info: Any, path: Path, *, allowed: bool = False,
                    digests: Callable[[], Iterable[str]] | None = None) -> bool:
    """Whether TensorRT may run the engine's embedded host code (``engine_host_code_allowed``).

    Only the user decides: ``allowed`` (``--allow-engine-host-code``, ``allow_host_code=True``) or an engine
    whose sha256 (``digests()``: the plan's and the file's) is in the allow-list. The header's
    ``version_compatible`` never switches it on; it only lets us refuse early with a clear message.
    """
    if allowed:
        return True
    trusted = trusted_engine_hashes()
    if trusted and digests is not None and trusted & {d.lower() for d in digests()}:
        return True
    if dict(getattr(info, "compatibility", {}) or {}).get("version_compatible"):
        raise EngineTrustError(
            f"{path}: this version-compatible engine runs code embedded in the file (TensorRT's lean runtime), "
            f"which is as risky as running a program from whoever made it; if you trust its source pass "
            f"--allow-engine-host-code (Python: allow_host_code=True) or add its sha256 to {trusted_engines_file()}")
    return False


def engine_digests(path: Path, plan: bytes) -> Callable[[], list[str]]:
    """Lazily computed sha256 of the plan and of the whole file (either may be put in the allow-list)."""
    def compute() -> list[str]:
        whole = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                whole.update(block)
        return [hashlib.sha256(plan).hexdigest(), whole.hexdigest()]
    return compute


# ------------------------------------------------------------------------------------------------------------
# Plugins needed at inference time
# ------------------------------------------------------------------------------------------------------------
def register_engine_plugins(trt: ModuleType, plugins: Mapping[str, Any], path: Path) -> None:
    """Register what the engine's plugin layers need before it is deserialised.

    ``aot`` and ``none`` need nothing (AOT kernels are inside the plan). ``v3`` loads this package's own
    IPluginV3 creators and kernels, never a library named by the header, after checking that the kernels' sha256
    equals the one recorded when the engine was built.
    """
    mode = str(plugins.get("mode") or "none")
    if mode in ("none", "aot"):
        return
    if mode != "v3":
        raise AsanetError(f"{path}: the header asks for plugin mode {mode!r}; asanet-rt knows none, aot and v3 "
                          f"(rebuild the engine with this asanet-rt)")
    try:  # the one place the runtime reaches into the engine stage, lazily (docs/design.md)
        from asanet_rt.engines.plugins import trt_v3
    except ImportError as exc:
        raise AsanetError(f"{path}: the engine uses asanet-rt's V3 plugins (SFM, CFM, GRN); importing "
                          f"asanet_rt.engines.plugins.trt_v3 failed ({exc})") from exc
    library = trt_v3.kernel_library()
    if not library.is_file():
        raise AsanetError(f"{path}: the engine uses asanet-rt's V3 plugins; their kernels {library} are not built "
                          f"(run `make plugins`)")
    want = str(plugins.get("library_sha256") or "").lower()
    have = _sha256(library)
    if want != have:
        raise AsanetError(f"{path}: the engine was built with plugin kernels of sha256 {want[:16] or '(none)'}, "
                          f"this asanet-rt's {library} has {have[:16]}; rebuild the engine (asanet-rt build) or "
                          f"the kernels it was built with")
    trt_v3.register_plugins(trt, library)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------------
# CUDA driver
# ------------------------------------------------------------------------------------------------------------
def cuda_driver_version() -> tuple[int, int] | None:
    """The CUDA version the installed driver supports, e.g. (12, 6) on JetPack 6; None without a driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return version.value // 1000, (version.value % 1000) // 10
    return None
