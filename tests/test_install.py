"""The install resolution check (tools/install.py) that CI runs: it must flag torch's CUDA stack."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("install_tool", Path(__file__).parents[1] / "tools" / "install.py")
install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install)


def _report(*packages: tuple[str, str, list[str]]) -> dict:
    return {"install": [{"metadata": {"name": n, "version": v, "requires_dist": r}} for n, v, r in packages]}


CPU_TORCH = ("torch", "2.13.0+cpu", ["filelock", "sympy>=1.13"])
CUDA_TORCH = ("torch", "2.13.0", ["nvidia-cublas-cu12==12.8; platform_system == 'Linux'", "triton==3.5"])


def test_cpu_install_passes():
    assert install.unwanted_wheels(_report(CPU_TORCH, ("numpy", "2.3.0", [])), "export,plot") == []


def test_cuda_stack_is_flagged():
    bad = install.unwanted_wheels(_report(CPU_TORCH, ("nvidia_cudnn-cu12", "9.1", []), ("triton", "3.5", [])),
                                  "export,plot,rtx")
    assert bad == ["nvidia-cudnn-cu12==9.1", "triton==3.5"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyPI's torch is a CUDA build on Linux only")
def test_cuda_torch_is_flagged():
    assert install.unwanted_wheels(_report(CUDA_TORCH), "export") == ["torch==2.13.0 (a CUDA build)"]


def test_gpu_packages_only_with_gpu_extras():
    report = _report(CPU_TORCH, ("cuda-bindings", "13.4", []), ("tensorrt_rtx", "1.7", []))
    assert install.unwanted_wheels(report, "export,plot") == ["cuda-bindings==13.4", "tensorrt-rtx==1.7"]
    assert install.unwanted_wheels(report, "export,rtx") == []


def test_pip_command_uses_the_cpu_index_only_when_given():
    cmd = install.pip_command("py", "export", install.TORCH_CPU_INDEX)
    assert cmd[:6] == ["py", "-m", "pip", "install", "--extra-index-url", install.TORCH_CPU_INDEX]
    assert cmd[-1].endswith("[export]")
    assert "--extra-index-url" not in install.pip_command("py", "export", None)
    cmd = install.pip_command("py", "export", install.TORCH_CPU_INDEX, ["file:///mirror/simple"])
    assert cmd[4:8] == ["--extra-index-url", install.TORCH_CPU_INDEX, "--extra-index-url", "file:///mirror/simple"]


def test_unreachable_index_is_detected_quickly():
    assert install.index_reachable("http://127.0.0.1:9/whl/cpu", timeout=1) is False
