"""The one table of backends: names, aliases, the module that runs each, file kinds and the options it takes.

``open_runner``, ``classify``, ``batch``, ``eval``, ``bench`` and ``compare`` all resolve names and open models
here. Adding a backend is one runner module and one row in :data:`BACKENDS`. Runner modules are imported only
when a model is opened on them, so the runtime never imports torch, OpenVINO or TensorRT by itself; the torch
backend's runner lives in the export stage (``asanet_rt.export.torch_runner``).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import AsanetError
from ..model_files import check_onnx_file
from .base import Runner

log = logging.getLogger(__name__)

#: File kind -> suffixes (lower case). A model file's kind decides which backends can open it.
FILE_KINDS: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "engine": (".engine", ".plan", ".trt"),
    "checkpoint": (".pth", ".pt", ".safetensors"),
}
#: Environment variable naming the backend ``auto`` resolves to (a registry name or alias), for scripts and tests.
BACKEND_ENV = "ASANET_RT_BACKEND"


@dataclass(frozen=True)
class BackendSpec:
    """One row of the table."""

    name: str                          # canonical name, used in reports and on the command line
    kind: str                          # file kind it runs: "onnx", "engine" or "checkpoint"
    device: str                        # "cpu" or "gpu"
    module: str                        # module holding the runner class, imported when a model is opened
    runner: str                        # runner class name in ``module``
    requires: tuple[str, ...]          # Python modules of which one must be importable for it to be available
    install: str                       # what to install when none is
    options: frozenset[str]            # keyword options the runner accepts besides ``device``
    aliases: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments this name implies
    label: str = ""                    # how tables print it

    @property
    def display(self) -> str:
        return self.label or self.name

    def available(self) -> bool:
        """Whether one of ``requires`` is installed (found without importing it)."""
        return any(_module_found(m) for m in self.requires)


_CPU_THREADS = frozenset({"threads"})
BACKENDS: tuple[BackendSpec, ...] = (
    BackendSpec("onnxruntime", "onnx", "cpu", "asanet_rt.backends.onnxruntime", "OnnxRuntimeRunner",
                ("onnxruntime",), "pip install onnxruntime", _CPU_THREADS | {"spinning", "provider_options"},
                aliases=("ort", "onnxruntime-cpu", "cpu"), fixed={"provider": "cpu"}, label="ONNX Runtime"),
    BackendSpec("openvino", "onnx", "cpu", "asanet_rt.backends.openvino", "OpenVINORunner",
                ("openvino",), "pip install 'asanet-rt[openvino]'", _CPU_THREADS | {"precision", "config"},
                aliases=("ov",), label="OpenVINO"),
    BackendSpec("onnxruntime-cuda", "onnx", "gpu", "asanet_rt.backends.onnxruntime", "OnnxRuntimeRunner",
                ("onnxruntime",), "pip install onnxruntime-gpu", _CPU_THREADS | {"provider_options"},
                aliases=("ort-cuda", "cuda"), fixed={"provider": "cuda"}, label="ONNX Runtime CUDA"),
    BackendSpec("onnxruntime-tensorrt", "onnx", "gpu", "asanet_rt.backends.onnxruntime", "OnnxRuntimeRunner",
                ("onnxruntime",), "pip install onnxruntime-gpu", _CPU_THREADS | {"provider_options"},
                aliases=("ort-trt", "ort-tensorrt"), fixed={"provider": "tensorrt"},
                label="ONNX Runtime TensorRT"),
    BackendSpec("tensorrt", "engine", "gpu", "asanet_rt.backends.tensorrt", "TensorRTRunner",
                ("tensorrt", "tensorrt_lean"), "JetPack's TensorRT, or pip install 'asanet-rt[tensorrt]'",
                frozenset({"runtime", "zero_copy", "memory", "verify", "allow_host_code"}),
                aliases=("trt",), label="TensorRT"),
    BackendSpec("tensorrt_rtx", "engine", "gpu", "asanet_rt.backends.tensorrt", "TensorRTRunner",
                ("tensorrt_rtx",), "pip install 'asanet-rt[rtx]'",
                frozenset({"runtime", "zero_copy", "memory", "verify", "allow_host_code"}),
                aliases=("rtx", "tensorrt-rtx"), label="TensorRT-RTX"),
    BackendSpec("torch", "checkpoint", "cpu", "asanet_rt.export.torch_runner", "TorchRunner",
                ("torch",), "pip install 'asanet-rt[export]'", _CPU_THREADS | {"torch_device"},
                aliases=("eager", "torch-eager"), label="torch eager"),
    BackendSpec("torch-compile", "checkpoint", "cpu", "asanet_rt.export.torch_runner", "TorchRunner",
                ("torch",), "pip install 'asanet-rt[export]'", _CPU_THREADS | {"torch_device"},
                aliases=("compile",), fixed={"compile": True}, label="torch.compile"),
)
_BY_NAME: dict[str, BackendSpec] = {}
for _spec in BACKENDS:
    for _key in (_spec.name, *_spec.aliases):
        _BY_NAME[_key] = _spec
#: Every accepted spelling, canonical names first ("auto" picks by file kind and, for ONNX on a CPU, by speed).
BACKEND_NAMES: tuple[str, ...] = ("auto",) + tuple(s.name for s in BACKENDS)
ALIASES: dict[str, str] = {a: s.name for s in BACKENDS for a in s.aliases}


def _module_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def get_backend(name: str) -> BackendSpec:
    """The row for a canonical name or alias; a clear error listing the choices otherwise."""
    spec = _BY_NAME.get(str(name).strip().lower())
    if spec is None:
        raise AsanetError(f"backend {name!r}: choose one of {', '.join(BACKEND_NAMES)} "
                          f"(aliases: {', '.join(sorted(ALIASES))})")
    return spec


def canonical_name(name: str) -> str:
    """``auto`` or the canonical spelling of a backend name or alias."""
    key = str(name).strip().lower()
    return "auto" if key == "auto" else get_backend(key).name


def file_kind(path: str | os.PathLike) -> str:
    """``onnx``, ``engine`` or ``checkpoint`` by suffix; a clear error for anything else."""
    suffix = Path(path).suffix.lower()
    for kind, suffixes in FILE_KINDS.items():
        if suffix in suffixes:
            return kind
    known = ", ".join(s for suffixes in FILE_KINDS.values() for s in suffixes)
    raise AsanetError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected one of {known}")


def backends_for(kind: str, device: str | None = None, installed: bool = False) -> list[BackendSpec]:
    """Rows that run files of ``kind`` (optionally only ``device`` "cpu"/"gpu", only installed ones)."""
    return [s for s in BACKENDS if s.kind == kind and (device is None or s.device == device)
            and (not installed or s.available())]


def available_backends(kind: str = "onnx", device: str = "cpu") -> list[str]:
    """Names of the installed backends that run ``kind`` files on ``device``."""
    return [s.name for s in backends_for(kind, device, installed=True)]


def resolve(path: str | os.PathLike, backend: str = "auto") -> BackendSpec:
    """The backend that opens ``path``: the one named, or for ``auto`` the default for the file's kind.

    For ONNX files ``auto`` is ``$ASANET_RT_BACKEND`` when set, else ONNX Runtime; ``choose_backend`` (used by
    ``Classifier.open`` and the commands) goes further and times the installed CPU backends.
    """
    kind = file_kind(path)
    name = str(backend).strip().lower()
    if name == "auto":
        env = os.environ.get(BACKEND_ENV, "").strip()
        if env and kind == "onnx":
            spec = get_backend(env)
            if spec.kind == kind:
                return spec
            log.warning("%s=%s runs %s files, not %s; ignored", BACKEND_ENV, env, spec.kind, kind)
        # Engines: one runner reads the container header and picks TensorRT or TensorRT-RTX itself.
        return {"onnx": get_backend("onnxruntime"), "engine": get_backend("tensorrt"),
                "checkpoint": get_backend("torch")}[kind]
    spec = get_backend(name)
    if spec.kind != kind:
        runs = ", ".join(s.name for s in backends_for(kind))
        hint = " (build one with `asanet-rt build`)" if spec.kind == "engine" else ""
        raise AsanetError(f"{path}: backend {spec.name} runs {spec.kind} files{hint}; {kind} files run on {runs}")
    return spec


def open_runner(path: str | os.PathLike, backend: str = "auto", device: int = 0, **options: Any) -> Runner:
    """Open ``path`` on ``backend`` (``auto``: by file type) on GPU ``device``; ``options`` go to the runner.

    Options set to None are treated as not given; an option the backend does not take is an error naming it
    (e.g. ``threads`` on a TensorRT engine), so a setting is never silently ignored.
    """
    path = Path(path)
    if not path.exists():
        raise AsanetError(f"{path}: model file not found")
    if not path.is_file():
        raise AsanetError(f"{path}: not a model file (a directory?)")
    spec = resolve(path, backend)
    if spec.kind == "onnx":
        check_onnx_file(path)  # external data and metadata size, before ONNX Runtime or OpenVINO reads anything
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - spec.options)
    if unknown:
        raise AsanetError(f"{path}: backend {spec.name} does not take {', '.join(unknown)} "
                          f"(it takes {', '.join(sorted(spec.options)) or 'no options'})")
    runner_class = _runner_class(spec, path)
    kwargs = dict(spec.fixed)
    kwargs.update(given)
    return runner_class(path, device=device, **kwargs)


def _runner_class(spec: BackendSpec, path: Path) -> type[Runner]:
    """The runner class of ``spec``, imported now; a clear error naming what to install otherwise."""
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or spec.module
        if missing == spec.module:
            raise AsanetError(f"{path}: {spec.display} support is not part of this install ({spec.module} is "
                              f"missing)") from exc
        raise AsanetError(f"{path}: backend {spec.name} needs the Python package {missing!r} "
                          f"({spec.install})") from exc
    except ImportError as exc:  # a package that is there but broken (placeholder wheels raise at import)
        raise AsanetError(f"{path}: backend {spec.name} could not be loaded ({exc}); {spec.install}") from exc
    runner_class = getattr(module, spec.runner, None)
    if runner_class is None:
        raise AsanetError(f"{path}: {spec.module} has no {spec.runner}")
    return runner_class
