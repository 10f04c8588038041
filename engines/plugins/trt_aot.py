"""Ahead-of-time plugins for TensorRT >= 10.9 (``tensorrt.plugin``): the kernels' PTX is embedded in the engine,
which then runs without Python or this package (C++ ground-station software, trtexec).

The AOT interface launches one kernel per op with int32 scalar arguments and no workspace, so it covers the ops
that are one kernel: ``CFMGate`` and ``CFMFuse``. GRN and SFM need a reduction before their element-wise pass;
in an AOT build their nodes keep TensorRT's own layers (parsed from the ops' ONNX local functions), and
``--plugins v3`` fuses all four. Importing this module registers the ops; it needs ``tensorrt`` >= 10.9.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

from . import AOT_OPS  # noqa: F401  (re-exported: the ops this module registers)
from .build import DEFAULT_OUT, PTX, build_plugins

BLOCK = 256
LIBRARY_PATH = DEFAULT_OUT / PTX


def ptx() -> bytes:
    """The PTX of the plugin kernels (built on first use if missing)."""
    if not LIBRARY_PATH.is_file():
        build_plugins(DEFAULT_OUT)
    return Path(LIBRARY_PATH).read_bytes()


def _register() -> None:
    import tensorrt as trt
    import tensorrt.plugin as trtp

    def suffix(desc) -> str:
        return "f32" if desc.dtype == trt.float32 else "f16"

    @trtp.register("asanet::CFMGate")
    def cfm_gate_desc(x1: trtp.TensorDesc, x2: trtp.TensorDesc, s: trtp.TensorDesc) -> trtp.TensorDesc:
        out = x1.like()
        out.shape_expr[1] = x1.shape_expr[1] * 2
        return out

    @trtp.autotune("asanet::CFMGate")
    def cfm_gate_autotune(x1, x2, s, outputs) -> list:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl("asanet::CFMGate")
    def cfm_gate_aot(x1: trtp.TensorDesc, x2: trtp.TensorDesc, s: trtp.TensorDesc,
                     outputs: Tuple[trtp.TensorDesc], tactic: int):
        dims = x1.shape_expr
        hw = dims[2] * dims[3]
        total = outputs[0].shape_expr.numel()
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(total, BLOCK)
        params.block_x = BLOCK
        params.shared_mem = 0
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (dims[1], hw, total)])
        return f"cfm_gate_aot_{suffix(x1)}".encode(), ptx(), params, extra

    @trtp.register("asanet::CFMFuse")
    def cfm_fuse_desc(w: trtp.TensorDesc, a: trtp.TensorDesc) -> trtp.TensorDesc:
        out = w.like()
        out.shape_expr[1] = w.shape_expr[1] // 2
        return out

    @trtp.autotune("asanet::CFMFuse")
    def cfm_fuse_autotune(w, a, outputs) -> list:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl("asanet::CFMFuse")
    def cfm_fuse_aot(w: trtp.TensorDesc, a: trtp.TensorDesc, outputs: Tuple[trtp.TensorDesc], tactic: int):
        dims = w.shape_expr
        hw = dims[2] * dims[3]
        pixels = dims[0] * hw
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(pixels, BLOCK)
        params.block_x = BLOCK
        params.shared_mem = 0
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (dims[1] // 2, hw, pixels)])
        return f"cfm_fuse_aot_{suffix(w)}".encode(), ptx(), params, extra


_register()
