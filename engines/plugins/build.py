"""Compile the plugin kernels with nvcc: one fatbin (SASS for every supported GPU + PTX) and one PTX file.

This module is the single source of truth for the nvcc flags; the Makefile calls it. CUDA 13 targets sm_75 and
newer: Xavier (sm_72, JetPack 5) is out.

    python -m asanet_rt.engines.plugins.build [--out DIR] [--arch 80,87]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from asanet_rt.errors import AsanetError

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "asanet_kernels.cu"
DEFAULT_OUT = HERE / "build"
#: Turing, Ampere (A100, RTX 30), Orin (87), Ada (89), Hopper (90), Blackwell (100, 110 Thor, 120 RTX 50).
ARCHS = (75, 80, 86, 87, 89, 90, 100, 110, 120)
#: The PTX embedded for forward compatibility and handed to TensorRT's AOT plugins: the oldest target.
PTX_ARCH = 75
FLAGS = ("-O3", "-std=c++17", "-lineinfo", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Werror")
#: Every kernel the plugins launch (extern "C" names in asanet_kernels.cu).
KERNELS = tuple(f"{op}_{dtype}" for op in ("grn_norm", "grn_apply", "sfm_pool", "sfm_mlp", "sfm_apply", "cfm_gate",
                                           "cfm_fuse", "cfm_fuse_warp", "cfm_gate_aot", "cfm_fuse_aot") for dtype in ("f32", "f16")) + (
    "grn_scale_f32",)
FATBIN, PTX = "asanet_kernels.fatbin", "asanet_kernels.ptx"


def nvcc() -> str:
    found = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(found).exists():
        raise AsanetError("nvcc not found: install the CUDA toolkit (13.x) or set CUDA_HOME")
    return str(found)


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise AsanetError(f"nvcc failed ({' '.join(cmd)}):\n{output}")
    return output


def build_plugins(out_dir: str | os.PathLike | None = None, archs: tuple[int, ...] | None = None) -> Path:
    """Compile the fatbin and the PTX into ``out_dir`` (default ``engines/plugins/build``); returns the fatbin.

    Each architecture compiles in parallel to a cubin, then ``nvcc -fatbin`` bundles the cubins with the PTX.
    Any compiler warning is an error.
    """
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    archs = tuple(archs or ARCHS)
    compiler = nvcc()
    jobs = [[compiler, *FLAGS, f"-arch=sm_{a}", "-cubin", "-o", str(out / f"asanet_kernels.sm_{a}.cubin"),
             str(SOURCE)] for a in archs]
    jobs.append([compiler, *FLAGS, f"-arch=compute_{PTX_ARCH}", "-ptx", "-o", str(out / PTX), str(SOURCE)])
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        warnings = [w for w in pool.map(_run, jobs) if w]
    if warnings:
        raise AsanetError("nvcc printed diagnostics (treated as errors):\n" + "\n".join(warnings))
    images = [f"--image3=kind=elf,sm={a},file={out / f'asanet_kernels.sm_{a}.cubin'}" for a in archs]
    images.append(f"--image3=kind=ptx,sm={PTX_ARCH},file={out / PTX}")
    fatbinary = Path(compiler).with_name("fatbinary")
    if fatbinary.exists():
        _run([str(fatbinary), "--create", str(out / FATBIN), "-64", *images])
    else:  # nvcc can make the fatbin itself, recompiling (slower, same result)
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        _run([compiler, *FLAGS, *gencode, f"-gencode=arch=compute_{PTX_ARCH},code=compute_{PTX_ARCH}", "-fatbin",
              "-o", str(out / FATBIN), str(SOURCE)])
    return out / FATBIN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile asanet-rt's plugin kernels with nvcc.")
    parser.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--arch", default=None, help=f"comma list of SM versions (default {','.join(map(str, ARCHS))})")
    args = parser.parse_args(argv)
    archs = tuple(int(a) for a in args.arch.split(",")) if args.arch else None
    try:
        path = build_plugins(args.out, archs)
    except AsanetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.with_name(PTX)} (sm_{', sm_'.join(map(str, archs or ARCHS))} + PTX "
          f"compute_{PTX_ARCH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
