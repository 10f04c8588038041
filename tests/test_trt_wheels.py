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
