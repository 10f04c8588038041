"""Which TensorRT builds engines here: full TensorRT (10.x, 11.x) or TensorRT-RTX.

Backend names and aliases (``trt``, ``rtx``, ``tensorrt-rtx``) resolve through the runtime's backend registry;
versions parse with ``asanet_rt.versions.parse_version``.

One code path serves all three; the differences are few and explicit (``TrtBackend`` properties):
TensorRT 11 and TensorRT-RTX are strongly typed only (no FP16/INT8 builder flags, no calibrators); TensorRT-RTX
has no plugin layers, no DLA, no version or hardware compatibility flags, and builds without a GPU.
"""
from __future__ import annotations

import importlib
import importlib.util
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from asanet_rt.backends.registry import canonical_name
from asanet_rt.errors import AsanetError
from asanet_rt.versions import parse_version

#: Registry names of the backends that build engines; each one's builder is the Python module of the same name.
BUILDERS = ("tensorrt", "tensorrt_rtx")


@dataclass(frozen=True)
class TrtBackend:
    """An imported TensorRT flavour and what its API offers."""

    name: str              # "tensorrt" or "tensorrt_rtx"
    trt: ModuleType
    version: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.version)

    @property
    def major(self) -> int:
        return self.version_tuple[0] if self.version_tuple else 0

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def label(self) -> str:
        """'TensorRT 10.3.0' / 'TensorRT-RTX 1.7.1'."""
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {'.'.join(map(str, self.version_tuple[:3]))}"

    def at_least(self, *version: int) -> bool:
        return self.version_tuple[:len(version)] >= version

    def has_member(self, enum: str, member: str) -> bool:
        """Whether ``trt.<enum>.<member>`` exists (flags come and go between releases)."""
        return hasattr(getattr(self.trt, enum, None), member)

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 and TensorRT-RTX: precision comes from the network's types, never from builder flags."""
        return self.is_rtx or self.major >= 11 or not self.has_member("BuilderFlag", "FP16")

    @property
    def supports_plugins(self) -> bool:
        """TensorRT-RTX has no plugin layers (it inlines ONNX local functions instead)."""
        return not self.is_rtx

    @property
    def has_progress_monitor(self) -> bool:
        return hasattr(self.trt, "IProgressMonitor")


def available_backends() -> list[str]:
    """Engine builders whose module is installed (found without importing it)."""
    return [name for name in BUILDERS if importlib.util.find_spec(name) is not None]


def builder_name(name: str) -> str:
    """``auto``, ``tensorrt`` or ``tensorrt_rtx`` for any registry spelling; a clear error for other backends."""
    key = str(name).strip().lower()
    if key == "auto":
        return key
    try:
        key = canonical_name(key)
    except AsanetError:
        key = ""
    if key not in BUILDERS:
        raise AsanetError(f"backend {name!r}: engines are built by auto, tensorrt (trt) or tensorrt_rtx (rtx)")
    return key


def load_backend(name: str = "auto") -> TrtBackend:
    """Import ``tensorrt`` or ``tensorrt_rtx``; ``auto`` prefers full TensorRT (GPU machines, Jetson)."""
    key = builder_name(name)
    if key == "auto":
        found = available_backends()
        if not found:
            raise AsanetError("building an engine needs TensorRT (JetPack's python3-libnvinfer, or pip install "
                              "tensorrt on a GPU machine) or TensorRT-RTX (pip install 'asanet-rt[rtx]')")
        errors = []
        for candidate in found:
            try:
                return load_backend(candidate)
            except AsanetError as exc:
                errors.append(str(exc))
        raise AsanetError("; ".join(errors))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(key)
    except ModuleNotFoundError as exc:
        hint = ("pip install 'asanet-rt[rtx]'" if key == "tensorrt_rtx" else
                "on Jetson use JetPack's TensorRT (python3-libnvinfer); elsewhere pip install tensorrt")
        raise AsanetError(f"backend {key}: the Python module {key!r} is not installed ({hint})") from exc
    except Exception as exc:  # noqa: BLE001 - the PyPI placeholder packages raise at import with their own message
        raise AsanetError(f"backend {key}: importing {key!r} failed ({type(exc).__name__}: {exc})") from exc
    if not hasattr(module, "Builder"):
        raise AsanetError(f"backend {key}: the installed {key!r} module has no builder (a lean or dispatch "
                          f"runtime, or a placeholder package); install the full {key}")
    return TrtBackend(key, module, str(getattr(module, "__version__", "0")))


def dtype_name(trt: ModuleType, dtype: Any) -> str:
    """A TensorRT DataType as a numpy-style name ('float32', 'float16', 'uint8', ...)."""
    names = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
             "INT32": "int32", "INT64": "int64", "BOOL": "bool", "FP8": "float8", "INT4": "int4", "FP4": "fp4"}
    return names.get(getattr(dtype, "name", str(dtype)), str(dtype).split(".")[-1].lower())
