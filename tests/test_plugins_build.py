"""nvcc compiles the plugin kernels for every supported GPU, warning-free, with every entry point present."""
from __future__ import annotations

import shutil

import pytest

from asanet_rt.engines.plugins.build import ARCHS, FATBIN, KERNELS, PTX, build_plugins


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")
def test_fatbin_and_ptx_for_every_arch(tmp_path):
    fatbin = build_plugins(tmp_path)
    assert fatbin == tmp_path / FATBIN and fatbin.stat().st_size > 100_000
    ptx = (tmp_path / PTX).read_text()
    for name in KERNELS:
        assert f".entry {name}(" in ptx, name
    for arch in ARCHS:
        cubin = (tmp_path / f"asanet_kernels.sm_{arch}.cubin").read_bytes()
        assert all(name.encode() in cubin for name in KERNELS), arch
    assert 72 not in ARCHS  # Xavier: CUDA 13 does not target it
