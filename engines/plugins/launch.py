"""Launch plans for the plugin kernels: which kernels, in what order, with what grid, block, shared memory and
arguments, for given shapes. CuPy (tests), cuda-python (IPluginV3) and TensorRT's AOT path all execute these
plans, so the geometry is written once. No GPU library is imported here.

Arguments are either a buffer name (a string: an op input/output or a float32 workspace) or a numpy scalar whose
type is the kernel parameter's C type (int32 for ``int``, int64 for ``long long``, float32 for ``float``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

Arg = Union[str, np.generic]
BLOCK = 256
#: Grid-stride kernels never need more blocks than this to fill the largest GPUs.
MAX_BLOCKS = 65535


@dataclass(frozen=True)
class Launch:
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Arg, ...]
    shared_bytes: int = 0


@dataclass(frozen=True)
class Plan:
    """Kernels to run in order, and the float32 scratch buffers (name -> element count) they share."""

    launches: tuple[Launch, ...]
    workspace: dict[str, int] = field(default_factory=dict)

    @property
    def workspace_bytes(self) -> int:
        # Each buffer starts 256-byte aligned inside one allocation.
        return sum(_align(4 * n) for n in self.workspace.values())

    def workspace_offsets(self) -> dict[str, int]:
        offsets, at = {}, 0
        for name, n in self.workspace.items():
            offsets[name] = at
            at += _align(4 * n)
        return offsets


def _align(nbytes: int, to: int = 256) -> int:
    return (nbytes + to - 1) // to * to


def _suffix(dtype: str) -> str:
    if dtype not in ("float32", "float16"):
        raise ValueError(f"plugin kernels take float32 or float16, not {dtype}")
    return "f32" if dtype == "float32" else "f16"


def _stride_grid(total: int) -> tuple[int, int, int]:
    return (max(1, min(MAX_BLOCKS, (total + BLOCK - 1) // BLOCK)), 1, 1)


def _reduce_block(length: int) -> tuple[int, int, int]:
    """Threads for a per-plane reduction: enough warps for the plane, at most 1024."""
    return (min(1024, max(32, (min(length, 1024) + 31) // 32 * 32)), 1, 1)


def grn_plan(n: int, c: int, h: int, w: int, dtype: str, eps: float) -> Plan:
    s, hw = _suffix(dtype), h * w
    planes = n * c
    return Plan((
        Launch(f"grn_norm_{s}", (planes, 1, 1), _reduce_block(hw), ("x", "g", np.int64(hw))),
        Launch("grn_scale_f32", (n, 1, 1), _reduce_block(c), ("g", "scale", np.int32(c), np.float32(eps))),
        Launch(f"grn_apply_{s}", _stride_grid(planes * hw), (BLOCK, 1, 1),
               ("x", "gamma", "beta", "scale", "y", np.int32(c), np.int64(hw), np.int64(planes * hw))),
    ), {"g": planes, "scale": planes})


def sfm_plan(n: int, c: int, h: int, w: int, hidden: int, dtype: str) -> Plan:
    s, hw = _suffix(dtype), h * w
    planes = n * c
    return Plan((
        Launch(f"sfm_pool_{s}", (planes, 1, 1), _reduce_block(hw), ("x1", "x2", "pq", np.int64(hw), np.int64(planes))),
        Launch(f"sfm_mlp_{s}", (n, 2, 1), (BLOCK, 1, 1),
               ("pq", "w1", "b1", "w2", "b2", "gates", np.int32(c), np.int32(hidden), np.int64(planes)),
               shared_bytes=4 * (c + hidden)),
        Launch(f"sfm_apply_{s}", _stride_grid(planes * hw), (BLOCK, 1, 1),
               ("x1", "x2", "gates", "y1", "y2", np.int64(hw), np.int64(planes * hw))),
    ), {"pq": 2 * planes, "gates": 2 * planes})


def cfm_gate_plan(n: int, c: int, h: int, w: int, dtype: str) -> Plan:
    total = n * 2 * c * h * w
    return Plan((Launch(f"cfm_gate_{_suffix(dtype)}", _stride_grid(total), (BLOCK, 1, 1),
                        ("x1", "x2", "s", "w", np.int32(c), np.int64(h * w), np.int64(total))),))


#: Below this many pixels a thread per pixel leaves the GPU idle; a warp per pixel splits the channels instead.
WARP_PER_PIXEL_BELOW = 8192


def cfm_fuse_plan(n: int, c: int, h: int, w: int, dtype: str) -> Plan:
    """``c`` is the output's channel count (the inputs have 2c)."""
    pixels = n * h * w
    args = ("w", "a", "y", np.int32(c), np.int64(h * w), np.int64(pixels))
    if pixels < WARP_PER_PIXEL_BELOW and c >= 64:
        return Plan((Launch(f"cfm_fuse_warp_{_suffix(dtype)}", _stride_grid(pixels * 32), (BLOCK, 1, 1), args),))
    return Plan((Launch(f"cfm_fuse_{_suffix(dtype)}", _stride_grid(pixels), (BLOCK, 1, 1), args),))
