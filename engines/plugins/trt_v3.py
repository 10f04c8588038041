"""IPluginV3 plugins for the ``asanet`` ops (TensorRT 10.3, JetPack 6, up to 11.x), launched with cuda-python.

The creators register under name = ONNX op type, version "1", namespace "asanet". TensorRT's ONNX parser looks a
plugin up by the node's op type, its ``plugin_version`` attribute (default "1") and its ``plugin_namespace``
attribute (default: the empty namespace); it never reads the ONNX domain. The builder therefore writes both
attributes on every asanet node and removes the ops' local functions from the copy the parser reads (parsers up
to 10.6 import a node from its local function before any plugin lookup). The engine then needs this module at
run time: ``asanet_rt.backends.tensorrt_common.register_engine_plugins`` registers it when an engine's metadata
says ``plugins.mode == "v3"``, after checking the kernels' sha256. Kernels come from the nvcc-built fatbin
(``make plugins``); launch geometry from ``launch.py``. Nothing here imports tensorrt or cuda at module import.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np

from asanet_rt.errors import AsanetError

from . import launch
from .build import DEFAULT_OUT, FATBIN, check_driver_supports

NAMESPACE, VERSION = "asanet", "1"
OPS = ("GRN", "SFM", "CFMGate", "CFMFuse")
_CTYPES = {np.int32: ctypes.c_int, np.int64: ctypes.c_longlong, np.float32: ctypes.c_float}


def _driver() -> Any:
    """cuda-python's driver API: ``cuda.bindings.driver`` (cuda-python >= 12.6) or ``cuda.cuda`` (older, JetPack 6)."""
    try:
        from cuda.bindings import driver
    except ImportError:
        from cuda import cuda as driver
    return driver


class _Kernels:
    """The fatbin loaded once per CUDA context (a module belongs to the context current when it was loaded);
    functions looked up by name and cached per context."""

    _lock = threading.Lock()
    _modules: dict[int, Any] = {}
    _functions: dict[tuple[int, str], Any] = {}
    path: Path = DEFAULT_OUT / FATBIN

    @classmethod
    def get(cls, name: str) -> Any:
        driver = _driver()
        err, ctx = driver.cuCtxGetCurrent()
        _check(err, "cuCtxGetCurrent")
        key = int(ctx)  # TensorRT enqueues with its context current: the primary context of its device
        with cls._lock:
            if key not in cls._modules:
                if not cls.path.is_file():
                    raise AsanetError(f"{cls.path}: plugin kernels are not built; run `make plugins`")
                err, module = driver.cuModuleLoadData(cls.path.read_bytes())
                _check(err, f"cuModuleLoadData({cls.path})")
                cls._modules[key] = module
            if (key, name) not in cls._functions:
                err, fn = driver.cuModuleGetFunction(cls._modules[key], name.encode())
                _check(err, f"cuModuleGetFunction({name})")
                cls._functions[(key, name)] = fn
            return cls._functions[(key, name)]


def _check(err: Any, what: str) -> None:
    driver = _driver()
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{what} failed: {err}")


def run_plan(plan: launch.Plan, pointers: dict[str, int], workspace: int, stream: int) -> None:
    """Launch ``plan`` on ``stream``; ``pointers`` maps op tensor names to device addresses."""
    driver = _driver()

    addresses = dict(pointers)
    for name, offset in plan.workspace_offsets().items():
        addresses[name] = workspace + offset
    for step in plan.launches:
        values, types = [], []
        for arg in step.args:
            if isinstance(arg, str):
                values.append(addresses[arg])
                types.append(ctypes.c_void_p)
            else:
                values.append(arg.item())
                types.append(_CTYPES[type(arg)])
        err, = driver.cuLaunchKernel(_Kernels.get(step.kernel), *step.grid, *step.block, step.shared_bytes,
                                     driver.CUstream(stream), (tuple(values), tuple(types)), 0)
        _check(err, f"cuLaunchKernel({step.kernel})")


def _dtype_name(trt: Any, dtype: Any) -> str:
    if dtype == trt.float32:
        return "float32"
    if dtype == trt.float16:
        return "float16"
    raise RuntimeError(f"asanet plugins take float32 or float16 tensors, not {dtype}")


def _field(fc: Any, name: str, default: float) -> float:
    for f in fc or []:
        if f.name == name:  # unknown fields (plugin_namespace, plugin_version, aot) are ignored
            return float(np.asarray(f.data).reshape(-1)[0])
    return default


def make_classes(trt: Any) -> dict[str, tuple[type, type]]:
    """Plugin and creator classes for every op, built against the given ``tensorrt`` module."""

    class _Base(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        op = ""
        num_outputs_ = 1

        def __init__(self, eps: float = 1e-6) -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name, self.plugin_namespace, self.plugin_version = self.op, NAMESPACE, VERSION
            self.num_outputs = self.num_outputs_
            self.eps = eps
            self._plans: dict[tuple, launch.Plan] = {}

        # -- core
        def get_capability_interface(self, capability: Any) -> Any:
            return self

        def clone(self) -> Any:
            return type(self)(self.eps)

        # -- build
        def get_output_data_types(self, input_types: list) -> list:
            return [input_types[0]] * self.num_outputs

        def supports_format_combination(self, pos: int, in_out: list, num_inputs: int) -> bool:
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return desc.type in (trt.float32, trt.float16)
            return desc.type == in_out[0].desc.type  # one dtype for every input and output (the contract)

        def configure_plugin(self, inputs: list, outputs: list) -> None:
            pass

        def get_fields_to_serialize(self) -> Any:
            return self._keep_fields([])

        def _keep_fields(self, fields: list, *arrays: np.ndarray) -> Any:
            # TensorRT before 10.6 reads the returned collection after the call returns: keep it (and the
            # arrays its fields point into) alive on the plugin, or the serialized engine holds freed memory.
            self._serialized_fields = (arrays, fields, trt.PluginFieldCollection(fields))
            return self._serialized_fields[2]

        def get_workspace_size(self, inputs: list, outputs: list) -> int:
            return self.plan([tuple(d.max) for d in inputs], "float32").workspace_bytes

        def get_valid_tactics(self) -> list:
            return []

        # -- runtime
        def set_tactic(self, tactic: int) -> None:
            pass

        def on_shape_change(self, inputs: list, outputs: list) -> None:
            pass

        def attach_to_context(self, context: Any) -> Any:
            return self.clone()

        def enqueue(self, input_desc: list, output_desc: list, inputs: list, outputs: list, workspace: int,
                    stream: int) -> None:
            key = (tuple(tuple(d.dims) for d in input_desc), _dtype_name(trt, input_desc[0].type))
            plan = self._plans.get(key)
            if plan is None:  # shapes change rarely (per profile / tile size): keep the geometry per shape
                plan = self._plans[key] = self.plan([list(s) for s in key[0]], key[1])
            run_plan(plan, self.pointers(inputs, outputs), workspace, stream)

        # -- per op
        def plan(self, shapes: list[tuple[int, ...]], dtype: str) -> launch.Plan:
            raise NotImplementedError

        def pointers(self, inputs: list, outputs: list) -> dict[str, int]:
            raise NotImplementedError

    class GRNPlugin(_Base):
        op = "GRN"

        def get_output_shapes(self, inputs: list, shape_inputs: list, builder: Any) -> list:
            return [inputs[0]]

        def get_fields_to_serialize(self) -> Any:
            data = np.array([self.eps], np.float32)
            return self._keep_fields([trt.PluginField("eps", data, trt.PluginFieldType.FLOAT32)], data)

        def plan(self, shapes, dtype):
            return launch.grn_plan(*shapes[0], dtype, self.eps)

        def pointers(self, inputs, outputs):
            return {"x": inputs[0], "gamma": inputs[1], "beta": inputs[2], "y": outputs[0]}

    class SFMPlugin(_Base):
        op = "SFM"
        num_outputs_ = 2

        def get_output_shapes(self, inputs, shape_inputs, builder):
            return [inputs[0], inputs[1]]

        def plan(self, shapes, dtype):
            return launch.sfm_plan(*shapes[0], shapes[2][0], dtype)

        def pointers(self, inputs, outputs):
            names = ("x1", "x2", "w1", "b1", "w2", "b2")
            return {**dict(zip(names, inputs)), "y1": outputs[0], "y2": outputs[1]}

    class CFMGatePlugin(_Base):
        op = "CFMGate"

        def get_output_shapes(self, inputs, shape_inputs, builder):
            x = inputs[0]
            channels = builder.operation(trt.DimensionOperation.PROD, x[1], builder.constant(2))
            return [trt.DimsExprs([x[0], channels, x[2], x[3]])]

        def plan(self, shapes, dtype):
            return launch.cfm_gate_plan(*shapes[0], dtype)

        def pointers(self, inputs, outputs):
            return {"x1": inputs[0], "x2": inputs[1], "s": inputs[2], "w": outputs[0]}

    class CFMFusePlugin(_Base):
        op = "CFMFuse"

        def get_output_shapes(self, inputs, shape_inputs, builder):
            w = inputs[0]
            channels = builder.operation(trt.DimensionOperation.FLOOR_DIV, w[1], builder.constant(2))
            return [trt.DimsExprs([w[0], channels, w[2], w[3]])]

        def plan(self, shapes, dtype):
            n, c2, h, w = shapes[0]
            return launch.cfm_fuse_plan(n, c2 // 2, h, w, dtype)

        def pointers(self, inputs, outputs):
            return {"w": inputs[0], "a": inputs[1], "y": outputs[0]}

    def creator_for(plugin_cls: type) -> type:
        class Creator(trt.IPluginCreatorV3One):
            def __init__(self) -> None:
                trt.IPluginCreatorV3One.__init__(self)
                self.name, self.plugin_namespace, self.plugin_version = plugin_cls.op, NAMESPACE, VERSION
                fields = [trt.PluginField("eps", np.array([], np.float32), trt.PluginFieldType.FLOAT32)] \
                    if plugin_cls is GRNPlugin else []
                self.field_names = trt.PluginFieldCollection(fields)

            def create_plugin(self, name: str, fc: Any, phase: Any) -> Any:
                return plugin_cls(_field(fc, "eps", 1e-6))

        Creator.__name__ = f"{plugin_cls.op}Creator"
        return Creator

    plugins = (GRNPlugin, SFMPlugin, CFMGatePlugin, CFMFusePlugin)
    return {p.op: (p, creator_for(p)) for p in plugins}


_registered: dict[int, list] = {}


def kernel_library() -> Path:
    """The fatbin these plugins load (its sha256 is recorded in engines built with them)."""
    return _Kernels.path


def register_plugins(trt: Any, fatbin: str | Path | None = None) -> str:
    """Register the four creators with ``trt``'s plugin registry (once per module); returns the fatbin path."""
    if fatbin is not None:
        _Kernels.path = Path(fatbin)
    if not _Kernels.path.is_file():
        raise AsanetError(f"{_Kernels.path}: plugin kernels are not built; run `make plugins`")
    check_driver_supports(_Kernels.path)
    if id(trt) not in _registered:
        registry = trt.get_plugin_registry()
        creators = [creator() for _, creator in make_classes(trt).values()]
        for creator in creators:
            registry.register_creator(creator, NAMESPACE)
        _registered[id(trt)] = creators  # the registry holds no Python reference: keep them alive
    return str(_Kernels.path)
