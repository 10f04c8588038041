"""nvcc compiles the plugin kernels for every supported GPU, warning-free, with every entry point present, and the
launch plans pass each kernel the arguments its PTX signature declares."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from asanet_rt.engines.plugins import launch
from asanet_rt.engines.plugins.build import (ARCHS, FATBIN, FLAGS, HEADERS, KERNELS, PTX, PTX_ARCH, SOURCE, _run,
                                             _select_archs, build_plugins, fatbin_images, nvcc, supported_archs)
from asanet_rt.errors import AsanetError

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("plugins")
    start = time.perf_counter()
    fatbin = build_plugins(out)  # raises on any nvcc diagnostic: warning-free is part of passing
    return fatbin, time.perf_counter() - start


def _expected_archs() -> tuple[int, ...]:
    return tuple(a for a in ARCHS if a in supported_archs())


@needs_nvcc
def test_fatbin_holds_sass_for_every_arch_and_ptx(built):
    fatbin, seconds = built
    assert fatbin.name == FATBIN
    images = fatbin_images(fatbin)
    assert [sm for kind, sm in images if kind == "elf"] == list(_expected_archs())
    assert [sm for kind, sm in images if kind == "ptx"] == [PTX_ARCH]
    if 110 in supported_archs():  # CUDA 13: all nine targets, and still no Xavier
        assert _expected_archs() == ARCHS
    assert 72 not in supported_archs() or int(nvcc_version()[0]) < 13
    assert seconds < 120, f"build took {seconds:.0f} s"


def nvcc_version() -> tuple[str, ...]:
    out = _run([nvcc(), "--version"])
    return tuple(re.search(r"release (\d+)\.(\d+)", out).groups())


@needs_nvcc
def test_every_kernel_in_ptx_cubins_and_fatbin(built):
    fatbin, _ = built
    ptx = (fatbin.parent / PTX).read_text()
    assert f".target sm_{PTX_ARCH}" in ptx
    blob = fatbin.read_bytes()  # SASS images are stored uncompressed: their symbol names are visible
    for name in KERNELS:
        assert f".entry {name}(" in ptx, name
        assert name.encode() in blob, name
    for arch in _expected_archs():
        cubin = (fatbin.parent / f"asanet_kernels.sm_{arch}.cubin").read_bytes()
        missing = [name for name in KERNELS if name.encode() not in cubin]
        assert not missing, (arch, missing)
    declared = set(re.findall(r'extern "C" __global__ void (\w+?)\(', SOURCE.read_text()))
    macro_names = {f"{m}_{s}" for m in re.findall(r"void (\w+)_##SUFFIX\(", SOURCE.read_text()) for s in ("f32", "f16")}
    assert set(KERNELS) == declared | macro_names


def _ptx_params(ptx: str) -> dict[str, list[str]]:
    entries = re.findall(r"\.entry (\w+)\(\s*(.*?)\)", ptx, flags=re.S)
    return {name: re.findall(r"\.param \.(\w+)", body) for name, body in entries}


def _arg_width(arg) -> str:
    if isinstance(arg, str):
        return "u64"  # a device pointer
    return {np.int64: "u64", np.int32: "u32", np.float32: "f32"}[type(arg)]


@needs_nvcc
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_launch_plans_match_kernel_signatures(built, dtype):
    """Every argument the plans pass has the width the kernel's PTX declares (a wrong one corrupts the launch)."""
    params = _ptx_params((built[0].parent / PTX).read_text())
    plans = [launch.grn_plan(2, 96, 7, 9, dtype, 1e-6), launch.sfm_plan(2, 96, 7, 9, 32, dtype),
             launch.cfm_gate_plan(2, 96, 7, 9, dtype), launch.cfm_fuse_plan(2, 96, 7, 9, dtype),
             launch.cfm_fuse_plan(1, 768, 8, 8, dtype)]
    seen = set()
    for plan in plans:
        for step in plan.launches:
            assert [_arg_width(a) for a in step.args] == params[step.kernel], step.kernel
            seen.add(step.kernel)
    assert f"cfm_fuse_warp_{'f32' if dtype == 'float32' else 'f16'}" in seen
    # AOT entry points: (input pointers..., int32 scalars..., output pointer), as tensorrt.plugin launches them.
    suffix = "f32" if dtype == "float32" else "f16"
    # Their scalars are the four int32 dimensions; sizes (H*W, N*C*H*W) are formed in 64 bits inside.
    assert params[f"cfm_gate_aot_{suffix}"] == ["u64"] * 3 + ["u32"] * 4 + ["u64"]
    assert params[f"cfm_fuse_aot_{suffix}"] == ["u64"] * 2 + ["u32"] * 4 + ["u64"]


@needs_nvcc
def test_build_records_the_nvcc_release(built):
    from asanet_rt.engines.plugins.build import BUILD_INFO, built_with, nvcc_version as release

    fatbin = built[0]
    assert json.loads((fatbin.parent / BUILD_INFO).read_text())["nvcc"] == list(release())
    assert built_with(fatbin) == release() == built_with(fatbin.parent / PTX)


def test_driver_older_than_nvcc_is_a_clear_error(tmp_path):
    from asanet_rt.engines.plugins.build import BUILD_INFO, check_driver_supports

    kernels = tmp_path / FATBIN
    kernels.write_bytes(b"fatbin")
    (tmp_path / BUILD_INFO).write_text(json.dumps({"nvcc": [13, 0]}))
    with pytest.raises(AsanetError) as exc:
        check_driver_supports(kernels, driver=(12, 6))  # JetPack 6's driver, a CUDA 13 build
    message = str(exc.value)
    assert "nvcc 13.0" in message and "CUDA 12.6" in message and "make plugins" in message and "\n" not in message
    check_driver_supports(kernels, driver=(13, 0))
    check_driver_supports(kernels, driver=(13, 2))
    ptx = tmp_path / "old" / PTX
    ptx.parent.mkdir()
    ptx.write_text("//\n// Generated by NVIDIA NVVM Compiler\n// Cuda compilation tools, release 12.6, V12.6.68\n")
    check_driver_supports(ptx, driver=(12, 6))
    with pytest.raises(AsanetError, match="nvcc 12.6"):
        check_driver_supports(ptx, driver=(11, 8))


def test_reductions_and_softmax_keep_torchs_nan_behaviour():
    """fmaxf/fminf drop NaN (torch's max pooling propagates it); the online softmax must not turn a -inf logit
    into NaN (exp(-inf - -inf)). The GPU tests check the numbers; this checks no kernel path uses the old forms."""
    code = SOURCE.read_text() + "".join(h.read_text() for h in HEADERS)
    body = "\n".join(line.split("//")[0] for line in code.splitlines())
    assert "fmaxf(" not in body and "fminf(" not in body
    assert "s1 += __expf(v1 - m1)" not in body and "softmax_step(v1, m1, s1)" in body


@needs_nvcc
def test_flags_turn_warnings_into_errors(tmp_path):
    """The shared flags make nvcc fail on a warning (an unused variable), so a clean build means no warnings."""
    src = tmp_path / "warn.cu"
    src.write_text('extern "C" __global__ void k(float* y) { int unused = 3; y[0] = 1.0f; }\n')
    with pytest.raises(AsanetError):
        _run([nvcc(), *FLAGS, f"-arch=sm_{_expected_archs()[0]}", "-cubin", "-o", str(tmp_path / "w.cubin"),
              str(src)])


def test_arch_selection():
    available = (75, 80, 86, 87, 89, 90, 100, 120)  # a CUDA 12.8-like toolkit: no sm_110
    assert _select_archs(None, available) == (75, 80, 86, 87, 89, 90, 100, 120)
    assert _select_archs((87, 87, 90), available) == (87, 90)
    with pytest.raises(AsanetError, match="sm_72"):
        _select_archs((72, 87), available)
    with pytest.raises(AsanetError, match="none of"):
        _select_archs(None, (50, 60))


def test_fatbin_parser_rejects_other_files(tmp_path):
    bogus = tmp_path / "x.fatbin"
    bogus.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(AsanetError, match="not a CUDA fatbin"):
        fatbin_images(bogus)


def test_makefile_delegates_flags_to_build_py():
    """One source of truth: the Makefile runs build.py and carries no nvcc flags of its own."""
    makefile = (SOURCE.parent / "Makefile").read_text()
    assert "-m asanet_rt.engines.plugins.build" in makefile and "all:" in makefile
    assert not re.search(r"^\s*nvcc|-O3|-Werror|-gencode|-Xcompiler", makefile, flags=re.M)
    assert all(h.is_file() and f'#include "{h.name}"' in SOURCE.read_text() for h in HEADERS)
