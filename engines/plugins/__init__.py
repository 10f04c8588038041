"""CUDA plugins for ASANet's fusion ops (SFM, CFM, GRN) and their TensorRT registration.

Two delivery modes (``choose_plugin_mode``): ``aot`` (TensorRT >= 10.9, kernels embedded in the engine; covers the
one-kernel CFM ops) and ``v3`` (IPluginV3 through Python, TensorRT 10.3 to 11.x; all four ops, the engine needs
this package at run time).
"""
from __future__ import annotations

#: The asanet ops the AOT path implements (one kernel each); in an AOT build the others stay TensorRT layers.
AOT_OPS = ("CFMGate", "CFMFuse")


def choose_plugin_mode(trt_version: str) -> str:
    """``aot`` where ``tensorrt.plugin`` can embed kernels (TensorRT >= 10.9), else ``v3`` (JetPack 6's 10.3)."""
    parts = [int(p) for p in str(trt_version).split(".")[:2] if p.isdigit()]
    major, minor = (parts + [0, 0])[:2]
    return "aot" if (major, minor) >= (10, 9) else "v3"
