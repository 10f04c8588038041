"""Real parts of NVIDIA's TensorRT Python wheels for CPU tests: the pure-Python ``tensorrt.plugin`` package of the
bindings wheels (whose native module needs libnvinfer, absent without a GPU install) and the lean runtime wheels
(real native library). Wheels are downloaded once with pip into ``~/.cache/asanet_rt/wheels``; tests skip when
neither the cache nor PyPI has them."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("ASANET_RT_WHEEL_CACHE", Path.home() / ".cache" / "asanet_rt" / "wheels"))
#: TensorRT release -> bindings wheel requirement (the CUDA flavour only changes the native libraries).
BINDINGS = {"10.9": "tensorrt-cu12-bindings==10.9.0.34", "10.13": "tensorrt-cu12-bindings==10.13.3.9",
            "11.4": "tensorrt-cu13-bindings==11.4.0.106"}
LEAN = ("tensorrt-lean-cu13-bindings==11.4.0.106", "tensorrt-lean-cu13-libs==11.4.0.106")


def wheel(requirement: str) -> Path | None:
    """The cached wheel for ``requirement`` (``name==version``), downloaded with pip if missing; None if unavailable."""
    name, version = requirement.split("==")
    python = f"{sys.version_info.major}{sys.version_info.minor}"
    # Binding wheels are per Python version (the lean test imports the native module); libs wheels are py3.
    patterns = [f"{name.replace('-', '_')}-{version}-{tag}-*.whl" for tag in (f"cp{python}", "py3")]

    def cached() -> list[Path]:
        return sorted(p for pattern in patterns for p in CACHE.glob(pattern))

    if not cached():
        CACHE.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "-d", str(CACHE), requirement], check=True, capture_output=True, timeout=180)
        except (OSError, subprocess.SubprocessError):
            return None
    found = cached()
    return found[0] if found else None


def extracted(requirement: str) -> Path | None:
    """The wheel unpacked next to it (once); None if unavailable."""
    path = wheel(requirement)
    if path is None:
        return None
    out = path.with_suffix("")
    if not (out / ".complete").exists():
        with zipfile.ZipFile(path) as zf:
            zf.extractall(out)
        (out / ".complete").write_text("")
    return out


#: Run in a fresh interpreter: makes ``tensorrt`` a stand-in for the missing native module (TensorRT-RTX's
#: bindings provide the same IPluginV3 / plugin-registry classes; the few names RTX lacks are empty classes),
#: with the wheel's real ``tensorrt/plugin`` package on its path.
STANDIN = '''
import sys, types
import tensorrt_rtx as _rtx
BINDINGS, VERSION = sys.argv[1], sys.argv[2]
trt = types.ModuleType("tensorrt")
trt.__version__, trt.__path__ = VERSION, [BINDINGS]
for _name in ("IPluginV3QuickAOTBuild", "ISymExpr", "QuickPluginCreationRequest"):
    setattr(trt, _name, getattr(_rtx, _name, None) or type(_name, (), {"__init__": lambda self, *a, **k: None}))
trt.__getattr__ = lambda name: getattr(_rtx, name)
sys.modules["tensorrt"] = trt
import tensorrt.plugin as trtp
'''
