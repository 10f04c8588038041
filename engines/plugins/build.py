"""Compile the plugin kernels with nvcc: one fatbin (SASS for every supported GPU + PTX) and one PTX file.

This module is the single source of truth for the nvcc flags; the Makefile calls it. CUDA 13 targets sm_75 and
newer: Xavier (sm_72, JetPack 5) is out. With an older toolkit (JetPack 6's CUDA 12.x, whose driver cannot load
CUDA 13 output) the default architecture list shrinks to what that nvcc supports.

    python -m asanet_rt.engines.plugins.build [--out DIR] [--arch 80,87]
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from asanet_rt.errors import AsanetError

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "asanet_kernels.cu"
#: Device helpers included by SOURCE (shipped as package data next to it).
HEADERS = (HERE / "asanet_common.cuh",)
DEFAULT_OUT = HERE / "build"
#: Turing, Ampere (A100, RTX 30), Orin (87), Ada (89), Hopper (90), Blackwell (100, 110 Thor, 120 RTX 50).
#: Binary compatibility within a major version covers the rest (sm_103 runs sm_100 SASS, sm_121 runs sm_120).
ARCHS = (75, 80, 86, 87, 89, 90, 100, 110, 120)
#: The PTX embedded for forward compatibility and handed to TensorRT's AOT plugins: the oldest target.
PTX_ARCH = 75
FLAGS = ("-O3", "-std=c++17", "-lineinfo", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Werror")
#: Every kernel the plugins launch (extern "C" names in asanet_kernels.cu).
KERNELS = tuple(f"{op}_{dtype}" for op in ("grn_norm", "grn_apply", "sfm_pool", "sfm_mlp", "sfm_apply", "cfm_gate",
                                           "cfm_fuse", "cfm_fuse_warp", "cfm_gate_aot", "cfm_fuse_aot")
                for dtype in ("f32", "f16")) + ("grn_scale_f32",)
FATBIN, PTX = "asanet_kernels.fatbin", "asanet_kernels.ptx"
#: Written next to the kernels: the nvcc release that built them (the CUDA driver must be at least that major).
BUILD_INFO = "build_info.json"
log = logging.getLogger(__name__)


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


def nvcc_version(compiler: str | None = None) -> tuple[int, int]:
    """(major, minor) of ``nvcc --version`` ("release 13.0" -> (13, 0))."""
    match = re.search(r"release (\d+)\.(\d+)", _run([compiler or nvcc(), "--version"]))
    if not match:
        raise AsanetError("nvcc --version printed no release number")
    return int(match.group(1)), int(match.group(2))


def built_with(path: str | os.PathLike) -> tuple[int, int] | None:
    """The CUDA release whose nvcc built the kernels at ``path``: ``build_info.json`` beside them, else the
    "Cuda compilation tools, release X.Y" line nvcc writes at the top of a PTX file."""
    path = Path(path)
    info = path.parent / BUILD_INFO
    try:
        major, minor = json.loads(info.read_text())["nvcc"]
        return int(major), int(minor)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        head = path.read_bytes()[:4096].decode("latin-1")
    except OSError:
        return None
    match = re.search(r"Cuda compilation tools, release (\d+)\.(\d+)", head)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_driver_supports(path: str | os.PathLike, driver: tuple[int, int] | None = None) -> None:
    """Refuse kernels from an nvcc newer than the CUDA driver can load (a CUDA 13 build on JetPack 6's CUDA 12.6
    driver, or on a desktop driver older than 580): one clear error naming both versions, before TensorRT runs."""
    if driver is None:
        from asanet_rt.backends.tensorrt_common import cuda_driver_version

        driver = cuda_driver_version()
    nvcc_release = built_with(path)
    if driver is None or nvcc_release is None:
        return  # no driver (other checks say so) or an unknown build: nothing to compare
    if driver[0] < nvcc_release[0]:
        raise AsanetError(
            f"{path}: the plugin kernels were built by nvcc {nvcc_release[0]}.{nvcc_release[1]} (CUDA "
            f"{nvcc_release[0]}), but this CUDA driver supports CUDA {driver[0]}.{driver[1]} and cannot load them; "
            f"rebuild them with this machine's CUDA {driver[0]}.x toolkit (`make plugins`; JetPack 6 ships CUDA "
            f"12.6) or install a CUDA {nvcc_release[0]} driver (desktop: 580 or newer for CUDA 13)")
    if driver < nvcc_release:
        log.warning("%s: built by nvcc %d.%d, the driver supports CUDA %d.%d: its SASS loads, but the driver cannot "
                    "JIT the PTX (GPUs without SASS in the fatbin, and TensorRT's AOT plugins)", path,
                    *nvcc_release, *driver)


@functools.lru_cache(maxsize=None)
def supported_archs(compiler: str | None = None) -> tuple[int, ...]:
    """The SM versions this nvcc can target (``nvcc --list-gpu-arch``), ascending."""
    out = _run([compiler or nvcc(), "--list-gpu-arch"])
    return tuple(sorted({int(m) for m in re.findall(r"compute_(\d+)", out)}))


def _select_archs(requested: tuple[int, ...] | None, available: tuple[int, ...]) -> tuple[int, ...]:
    """The requested architectures (all must be supported) or, by default, ARCHS minus what nvcc lacks."""
    if requested:
        missing = sorted(set(requested) - set(available))
        if missing:
            raise AsanetError(f"--arch: this nvcc cannot target sm_{', sm_'.join(map(str, missing))} "
                              f"(it supports sm_{', sm_'.join(map(str, available))})")
        return tuple(dict.fromkeys(requested))
    chosen = tuple(a for a in ARCHS if a in available)
    if not chosen:
        raise AsanetError(f"nvcc supports none of sm_{', sm_'.join(map(str, ARCHS))}")
    return chosen


def build_plugins(out_dir: str | os.PathLike | None = None, archs: tuple[int, ...] | None = None) -> Path:
    """Compile the fatbin and the PTX into ``out_dir`` (default ``engines/plugins/build``); returns the fatbin.

    Each architecture compiles in parallel to a cubin, then ``fatbinary`` bundles the cubins with the PTX.
    Any compiler diagnostic is an error. ``archs=None`` means every ARCHS entry this nvcc supports.
    """
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    compiler = nvcc()
    available = supported_archs(compiler)
    archs = _select_archs(tuple(archs) if archs else None, available)
    # The lowest PTX this nvcc writes: JIT-compiled by the driver on GPUs newer than every SASS image.
    ptx_arch = PTX_ARCH if PTX_ARCH in available else min(a for a in available if a >= min(archs))
    jobs = [[compiler, *FLAGS, f"-arch=sm_{a}", "-cubin", "-o", str(out / f"asanet_kernels.sm_{a}.cubin"),
             str(SOURCE)] for a in archs]
    jobs.append([compiler, *FLAGS, f"-arch=compute_{ptx_arch}", "-ptx", "-o", str(out / PTX), str(SOURCE)])
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 2)) as pool:
        warnings = [w for w in pool.map(_run, jobs) if w]
    if warnings:
        raise AsanetError("nvcc printed diagnostics (treated as errors):\n" + "\n".join(warnings))
    images = [f"--image3=kind=elf,sm={a},file={out / f'asanet_kernels.sm_{a}.cubin'}" for a in archs]
    images.append(f"--image3=kind=ptx,sm={ptx_arch},file={out / PTX}")
    fatbinary = Path(compiler).with_name("fatbinary")
    try:
        if not fatbinary.exists():
            raise AsanetError(f"{fatbinary} not found")
        _run([str(fatbinary), "--create", str(out / FATBIN), "-64", *images])
    except AsanetError:  # no fatbinary, or one without --image3: nvcc makes the fatbin itself (recompiling)
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        _run([compiler, *FLAGS, *gencode, f"-gencode=arch=compute_{ptx_arch},code=compute_{ptx_arch}", "-fatbin",
              "-o", str(out / FATBIN), str(SOURCE)])
    (out / BUILD_INFO).write_text(json.dumps({"nvcc": list(nvcc_version(compiler)), "sass": list(archs),
                                              "ptx": ptx_arch}))
    return out / FATBIN


def fatbin_images(path: str | os.PathLike) -> list[tuple[str, int]]:
    """``(kind, sm)`` of each image in a fatbin, kind ``"elf"`` (SASS) or ``"ptx"``: what a build really holds.

    Layout (CUDA's fatbin container): a 16-byte header (magic 0xBA55ED50, version, header size, payload size),
    then entries, each a header (kind u16 at 0: 1 PTX, 2 ELF; header size u32 at 4; payload size u64 at 8;
    SM u32 at 28) followed by its payload.
    """
    data = Path(path).read_bytes()
    if len(data) < 16 or struct.unpack_from("<I", data)[0] != 0xBA55ED50:
        raise AsanetError(f"{path}: not a CUDA fatbin")
    header_size, payload = struct.unpack_from("<HQ", data, 6)
    images, at, end = [], header_size, min(len(data), header_size + payload)
    while at + 32 <= end:
        kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, at)
        sm = struct.unpack_from("<I", data, at + 28)[0]
        images.append(({1: "ptx", 2: "elf"}.get(kind, f"kind{kind}"), sm))
        at += entry_header + size
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile asanet-rt's plugin kernels with nvcc.")
    parser.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--arch", default=None, help=f"comma list of SM versions (default {','.join(map(str, ARCHS))}, "
                                                     "less any this nvcc cannot target)")
    args = parser.parse_args(argv)
    try:
        archs = tuple(int(a) for a in args.arch.split(",")) if args.arch else None
    except ValueError:
        print(f"error: --arch {args.arch!r}: expected SM numbers such as 87 or 80,90", file=sys.stderr)
        return 2
    try:
        path = build_plugins(args.out, archs)
        images = fatbin_images(path)
    except AsanetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sass = [sm for kind, sm in images if kind == "elf"]
    ptx = [sm for kind, sm in images if kind == "ptx"]
    print(f"wrote {path} (SASS sm_{', sm_'.join(map(str, sass))}; PTX compute_{', compute_'.join(map(str, ptx))}) "
          f"and {path.with_name(PTX)}")
    skipped = [a for a in ARCHS if a not in sass] if archs is None else []
    if skipped:
        print(f"note: this nvcc cannot target sm_{', sm_'.join(map(str, skipped))}; those GPUs JIT the PTX if their "
              "driver accepts it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
