"""Ahead-of-time plugins for TensorRT >= 10.9 (``tensorrt.plugin``): the kernels' PTX is embedded in the engine,
which then runs without Python or this package (C++ ground-station software, trtexec).

The AOT interface launches one kernel per op with int32 scalar arguments and no workspace, so it covers the ops
that are one kernel: ``CFMGate`` and ``CFMFuse``. GRN and SFM need a grid-wide reduction before their
element-wise pass (one kernel could only do that with one block per sample, or a grid barrier that needs a
co-resident grid and zeroed scratch); in an AOT build their nodes keep TensorRT's own layers (parsed from the
ops' ONNX local functions), and ``v3`` mode fuses all four.

Registration: ``prepare_ptx()`` (nvcc, the driver check) then ``register_aot_plugins()`` (idempotent), both
called explicitly by the builder before TensorRT builds; importing this module registers nothing. ``aot_impl``
runs inside TensorRT's build and only hands back the PTX prepared earlier, so a missing nvcc or a driver too old
for the PTX fails before the build, where ``--plugins auto`` can still fall back to the local functions.

No ``from __future__ import annotations`` here: ``tensorrt.plugin`` validates the decorated functions' type
annotations with ``issubclass``, which needs the real classes, not strings.
"""
from pathlib import Path
from typing import List, Optional, Tuple, Union

from . import AOT_OPS  # noqa: F401  (re-exported: the ops this module registers)
from .build import DEFAULT_OUT, PTX, build_plugins, check_driver_supports

#: Threads per block of the AOT launches (the kernels are grid-stride loops: any grid covers any shape).
BLOCK = 256
LIBRARY_PATH = DEFAULT_OUT / PTX
_registered = False
_ptx: Optional[bytes] = None


def prepare_ptx() -> bytes:
    """Build the PTX if missing (needs nvcc), check the CUDA driver can JIT it, and keep it for ``aot_impl``."""
    global _ptx
    if not LIBRARY_PATH.is_file():
        build_plugins(LIBRARY_PATH.parent)
    data = Path(LIBRARY_PATH).read_bytes()
    check_driver_supports(LIBRARY_PATH)
    _ptx = data
    return data


def ptx() -> bytes:
    """The PTX ``prepare_ptx`` read; called from TensorRT's build callback, so it never compiles anything."""
    if _ptx is None:
        raise RuntimeError("asanet AOT plugins: prepare_ptx() was not called before the build")
    return _ptx


def register_aot_plugins() -> None:
    """Register ``asanet::CFMGate`` and ``asanet::CFMFuse`` with ``tensorrt.plugin`` (TensorRT >= 10.9)."""
    global _registered
    if _registered:
        return
    import tensorrt as trt
    import tensorrt.plugin as trtp

    if not hasattr(trtp, "aot_impl"):
        raise RuntimeError(f"tensorrt {trt.__version__} has no tensorrt.plugin.aot_impl (needs >= 10.9); use the "
                           "v3 plugins (asanet_rt.engines.plugins.trt_v3)")

    # Plain helpers (not seen by tensorrt.plugin): string annotations, evaluated by nobody.
    def suffix(desc: "trtp.TensorDesc") -> str:
        return "f32" if desc.dtype == trt.float32 else "f16"

    def launch_params(plane: "trtp.ShapeExpr", planes: "trtp.ShapeExpr") -> "trtp.KernelLaunchParams":
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(plane, BLOCK) * planes
        params.block_x = BLOCK
        params.shared_mem = 0
        return params

    AotResult = Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]

    # -- CFMGate: w = concat(x1 * sigmoid(s[:, :C]), x2 * sigmoid(s[:, C:])), (N, 2C, H, W)
    @trtp.register("asanet::CFMGate")
    def cfm_gate_desc(x1: trtp.TensorDesc, x2: trtp.TensorDesc, s: trtp.TensorDesc) -> trtp.TensorDesc:
        d = x1.shape_expr
        # A fresh descriptor: x1.like() would share x1's ShapeExprs, and editing it would change the input's C.
        return trtp.from_shape_expr((d[0], d[1] * 2, d[2], d[3]), dtype=x1.dtype)

    @trtp.autotune("asanet::CFMGate")
    def cfm_gate_autotune(x1: trtp.TensorDesc, x2: trtp.TensorDesc, s: trtp.TensorDesc,
                          outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        # "|" ties the positions: all FP32 or all FP16 (the contract's single dtype per op), NCHW linear.
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl("asanet::CFMGate")
    def cfm_gate_aot(x1: trtp.TensorDesc, x2: trtp.TensorDesc, s: trtp.TensorDesc,
                     outputs: Tuple[trtp.TensorDesc], tactic: int) -> AotResult:
        d = x1.shape_expr
        # cfm_gate_aot_*(x1, x2, s, int n, int channels, int h, int w, out): sizes formed in 64 bits inside.
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (d[0], d[1], d[2], d[3])])
        # Grid-stride kernel: about one thread per output element, the block count as a product of small terms.
        return f"cfm_gate_aot_{suffix(x1)}".encode(), ptx(), launch_params(d[2] * d[3], d[0] * d[1] * 2), extra

    # -- CFMFuse: y = w[:, :C] * softmax_c(a[:, :C]) + w[:, C:] * softmax_c(a[:, C:]), (N, C, H, W)
    @trtp.register("asanet::CFMFuse")
    def cfm_fuse_desc(w: trtp.TensorDesc, a: trtp.TensorDesc) -> trtp.TensorDesc:
        d = w.shape_expr
        return trtp.from_shape_expr((d[0], d[1] // 2, d[2], d[3]), dtype=w.dtype)

    @trtp.autotune("asanet::CFMFuse")
    def cfm_fuse_autotune(w: trtp.TensorDesc, a: trtp.TensorDesc,
                          outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl("asanet::CFMFuse")
    def cfm_fuse_aot(w: trtp.TensorDesc, a: trtp.TensorDesc, outputs: Tuple[trtp.TensorDesc],
                     tactic: int) -> AotResult:
        d = w.shape_expr
        # cfm_fuse_aot_*(w, a, int n, int channels, int h, int w, y): one thread per (n, pixel)
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (d[0], d[1] // 2, d[2], d[3])])
        return f"cfm_fuse_aot_{suffix(w)}".encode(), ptx(), launch_params(d[2] * d[3], d[0]), extra

    _registered = True

