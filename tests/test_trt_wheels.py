"""Against the real Python parts of NVIDIA's TensorRT wheels (downloaded once into ~/.cache/asanet_rt/wheels):
the ``tensorrt.plugin`` package of the 10.9, 10.13 and 11.4 bindings validates and registers our AOT plugins
(its native module is stood in for by TensorRT-RTX's bindings), and the real lean runtime (11.4) is picked only
for version-compatible engines and reports a missing GPU clearly."""
from __future__ import annotations

import subprocess
import sys

import pytest

from trt_wheels import BINDINGS, LEAN, STANDIN, extracted

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX's bindings stand in for the native tensorrt module")

_REGISTER = STANDIN + '''
from pathlib import Path
from asanet_rt.engines.plugins import trt_aot
ptx = Path(sys.argv[3])
ptx.write_text("// Cuda compilation tools, release 13.0, V13.0.88\\n.entry cfm_gate_aot_f32(")
trt_aot.LIBRARY_PATH = ptx
trt_aot.register_aot_plugins()
trt_aot.register_aot_plugins()  # idempotent: a second registration would raise in tensorrt.plugin
from tensorrt.plugin._lib import QDP_REGISTRY
for key in ("asanet::CFMGate", "asanet::CFMFuse"):
    d = QDP_REGISTRY[key]
    print(key, ",".join(d.input_tensor_names), d.num_outputs, d.aot_impl_func is not None,
          d.autotune_func is not None)
'''


@pytest.mark.parametrize("release", sorted(BINDINGS))
def test_aot_plugins_register_with_the_real_tensorrt_plugin_package(release, tmp_path):
    root = extracted(BINDINGS[release])
    if root is None:
        pytest.skip(f"{BINDINGS[release]} is neither cached nor downloadable")
    version = BINDINGS[release].split("==")[1]
    proc = subprocess.run([sys.executable, "-c", _REGISTER, str(root / "tensorrt_bindings"), version,
                           str(tmp_path / "k.ptx")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert "asanet::CFMGate x1,x2,s 1 True True" in lines, proc.stdout
    assert "asanet::CFMFuse w,a 1 True True" in lines, proc.stdout


_EVALUATE = STANDIN + '''
from pathlib import Path
from asanet_rt.engines.plugins import trt_aot
ptx = Path(sys.argv[3]); ptx.write_text("// Cuda compilation tools, release 13.0, V13.0.88\\n")
trt_aot.LIBRARY_PATH = ptx
trt_aot._ptx = None
trt_aot.check_driver_supports = lambda path: None  # no driver here; checked in test_plugins_build
trt_aot.prepare_ptx()
trt_aot.register_aot_plugins()
from tensorrt.plugin._lib import QDP_REGISTRY
from tensorrt.plugin._tensor import SymIntExpr, ShapeExpr, ShapeExprs, TensorDesc

class D:
    """A concrete IDimensionExpr: the real symbolic classes evaluate to numbers with it."""
    def __init__(self, v):
        self.v = int(v)
    def is_constant(self):
        return True
    def get_constant_value(self):
        return self.v

trt.IDimensionExpr = D
OPS = {trt.DimensionOperation.SUM: lambda a, b: a + b, trt.DimensionOperation.PROD: lambda a, b: a * b,
       trt.DimensionOperation.SUB: lambda a, b: a - b, trt.DimensionOperation.FLOOR_DIV: lambda a, b: a // b,
       trt.DimensionOperation.CEIL_DIV: lambda a, b: -(-a // b), trt.DimensionOperation.MAX: max,
       trt.DimensionOperation.MIN: min}

class Builder:
    def constant(self, v):
        return D(v)
    def operation(self, op, a, b):
        return D(OPS[op](a.v, b.v))

SymIntExpr._exprBuilder = Builder()

def desc(shape, dtype):
    return TensorDesc(ShapeExprs.from_tuple([ShapeExpr(D(v)) for v in shape]), dtype)

def value(e):
    return e._expr.get_constant_value() if hasattr(e, "_expr") else int(e)

x = desc((2, 96, 7, 9), trt.float16)
out = QDP_REGISTRY["asanet::CFMGate"].register_func(x, x, desc((2, 192, 1, 1), trt.float16))
print("gate out", [value(e) for e in out.shape_expr])
name, code, params, extra = QDP_REGISTRY["asanet::CFMGate"].aot_impl_func(x, x, x, (out,), 0)
print("gate", name, len(code), value(params.grid_x), value(params.block_x), [value(e) for e in extra], [type(e).__name__ for e in extra])
w = desc((1, 1536, 8, 8), trt.float32)
y = QDP_REGISTRY["asanet::CFMFuse"].register_func(w, w)
print("fuse out", [value(e) for e in y.shape_expr])
name, code, params, extra = QDP_REGISTRY["asanet::CFMFuse"].aot_impl_func(w, w, (y,), 0)
print("fuse", name, value(params.grid_x), value(params.block_x), [value(e) for e in extra])
'''


@pytest.mark.parametrize("release", sorted(BINDINGS))
def test_aot_impl_evaluates_with_the_real_symbolic_expressions(release, tmp_path):
    """Our register/aot_impl functions run on tensorrt.plugin's own ShapeExpr/SymInt32/cdiv classes (a concrete
    expression builder stands in for TensorRT's): output shapes, launch grid and the four int32 scalars."""
    root = extracted(BINDINGS[release])
    if root is None:
        pytest.skip(f"{BINDINGS[release]} is neither cached nor downloadable")
    proc = subprocess.run([sys.executable, "-c", _EVALUATE, str(root / "tensorrt_bindings"),
                           BINDINGS[release].split("==")[1], str(tmp_path / "k.ptx")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert "gate out [2, 192, 7, 9]" in lines and "fuse out [1, 768, 8, 8]" in lines, proc.stdout
    # grid = cdiv(7*9, 256) * (2 * 96 * 2) blocks of 256; scalars N, C, H, W as SymInt32 (the PTX takes 4 x u32)
    assert "gate b'cfm_gate_aot_f16' 50 384 256 [2, 96, 7, 9] ['SymInt32', 'SymInt32', 'SymInt32', 'SymInt32']" \
        in lines, proc.stdout
    assert "fuse b'cfm_fuse_aot_f32' 1 256 [1, 768, 8, 8]" in lines, proc.stdout


_LEAN = '''
import sys
sys.path[:0] = sys.argv[1:3]
sys.modules["tensorrt"] = None  # full TensorRT absent: only the lean runtime is installed
from pathlib import Path
from asanet_rt.backends.tensorrt_common import create_runtime, import_runtime, shared_logger
from asanet_rt.errors import AsanetError
path = Path("model.engine")
try:
    import_runtime("tensorrt", None, path, version_compatible=False)
except AsanetError as exc:
    print("PLAIN:", exc)
trt = import_runtime("tensorrt", None, path, version_compatible=True)
print("LEAN:", trt.__name__, trt.__version__, hasattr(trt, "Builder"))
try:
    create_runtime(trt, shared_logger(trt))
    print("RUNTIME: created")
except AsanetError as exc:
    print("RUNTIME:", exc)
sys.stdout.flush()
import os
os._exit(0)  # without a GPU the lean runtime's half-made Runtime crashes when destroyed at interpreter exit
'''


def test_real_lean_runtime_only_for_version_compatible_engines():
    roots = [extracted(r) for r in LEAN]
    if None in roots:
        pytest.skip(f"{' and '.join(LEAN)} are neither cached nor downloadable")
    bindings, libs = roots
    proc = subprocess.run([sys.executable, "-c", _LEAN, str(bindings), str(libs)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "PLAIN:" in out and "needs full TensorRT" in out, out
    assert "LEAN: tensorrt_lean" in out and "11.4.0" in out and "False" in out, out  # no builder in the lean runtime
    gpu = subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0 if _which("nvidia-smi") else False
    if not gpu:
        assert "RUNTIME: " in out and "no CUDA GPU found" in out, out


def _which(name: str) -> bool:
    import shutil
    return shutil.which(name) is not None
