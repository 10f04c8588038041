"""Run the plugin kernels on CuPy arrays (tests and benchmarks on a GPU without TensorRT)."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import launch
from .build import DEFAULT_OUT, FATBIN, build_plugins


@functools.lru_cache(maxsize=1)
def module(fatbin: str | None = None):
    """The loaded kernel module; builds the fatbin for this GPU first if it is missing."""
    import cupy as cp

    path = Path(fatbin) if fatbin else DEFAULT_OUT / FATBIN
    if not path.exists():
        path = build_plugins(DEFAULT_OUT, (int(cp.cuda.Device().compute_capability),))
    return cp.RawModule(path=str(path))


def run_plan(plan: launch.Plan, buffers: dict) -> None:
    """Execute ``plan`` with ``buffers`` (name -> cupy array) plus a fresh float32 workspace."""
    import cupy as cp

    buffers = dict(buffers)
    for name, count in plan.workspace.items():
        buffers[name] = cp.empty(count, dtype=cp.float32)
    mod = module()
    for step in plan.launches:
        args = tuple(buffers[a] if isinstance(a, str) else a for a in step.args)
        mod.get_function(step.kernel)(step.grid, step.block, args, shared_mem=step.shared_bytes)


def _dtype(x) -> str:
    return str(np.dtype(x.dtype))


def grn(x, gamma, beta, eps: float = 1e-6):
    import cupy as cp

    y = cp.empty_like(x)
    run_plan(launch.grn_plan(*x.shape, _dtype(x), eps), {"x": x, "gamma": gamma, "beta": beta, "y": y})
    return y


def sfm(x1, x2, w1, b1, w2, b2):
    import cupy as cp

    y1, y2 = cp.empty_like(x1), cp.empty_like(x2)
    run_plan(launch.sfm_plan(*x1.shape, w1.shape[0], _dtype(x1)),
             {"x1": x1, "x2": x2, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "y1": y1, "y2": y2})
    return y1, y2


def cfm_gate(x1, x2, s):
    import cupy as cp

    n, c, h, w = x1.shape
    out = cp.empty((n, 2 * c, h, w), dtype=x1.dtype)
    run_plan(launch.cfm_gate_plan(n, c, h, w, _dtype(x1)), {"x1": x1, "x2": x2, "s": s, "w": out})
    return out


def cfm_fuse(w, a):
    import cupy as cp

    n, c2, h, wd = w.shape
    y = cp.empty((n, c2 // 2, h, wd), dtype=w.dtype)
    run_plan(launch.cfm_fuse_plan(n, c2 // 2, h, wd, _dtype(w)), {"w": w, "a": a, "y": y})
    return y
