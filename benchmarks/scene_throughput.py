"""Scene throughput vs model-only throughput, and peak memory, for growing scene sizes.

    python benchmarks/scene_throughput.py                       # the toy model, scenes 512^2 .. 4096^2
    python benchmarks/scene_throughput.py --model m.onnx --sizes 1024,2048 --tile 512 --out bench.json

Each scene runs in a fresh process so that its peak RSS is its own. The pipeline holds one row band of tiles at
a time, so its memory does not grow with the scene's height; it grows with the width (one band of full-width
rows: about (K + 5) x 4 bytes x tile x width) and up to GDAL's capped block cache (128 MiB). "model only" feeds
ready-made tiles straight to the model: the gap to the scene rate is reading, warping, blending, writing and
tile overlap.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over fork and exec, so a child would report
    its parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux, bytes on macOS


def write_scene(folder: Path, size: int, seed: int = 0, height: int | None = None) -> tuple[Path, Path]:
    """A ``size`` wide (and ``height`` or ``size`` tall) uint8 optical (3 bands) + SAR (1 band) pair with some
    structure, written band by band so that even large scenes need little memory here."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    height = height or size
    profile = dict(driver="GTiff", width=size, height=height, dtype="uint8", crs="EPSG:32632", tiled=True,
                   blockxsize=256, blockysize=256, transform=Affine(10, 0, 500000, 0, -10, 6000000))
    opt_path, sar_path = folder / f"optical_{size}x{height}.tif", folder / f"sar_{size}x{height}.tif"
    with rasterio.open(opt_path, "w", count=3, **profile) as opt, rasterio.open(sar_path, "w", count=1,
                                                                                  **profile) as sar:
        for y in range(0, height, 256):
            h = min(256, height - y)
            coarse = rng.integers(0, 256, (4, h // 16 + 1, size // 16 + 1)).astype(np.float32)
            block = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :h, :size]
            block = np.clip(block + rng.normal(0, 20, block.shape), 0, 255).astype(np.uint8)
            window = rasterio.windows.Window(0, y, size, h)
            opt.write(block[:3], window=window)
            sar.write(block[3:], window=window)
    return opt_path, sar_path


def child_scene(args: argparse.Namespace) -> dict:
    """Classify one scene in this (fresh) process; report times and memory."""
    from asanet_rt.classifier import Classifier

    with Classifier.open(args.model, backend=args.backend) as clf:
        rss_loaded = peak_rss_mb()
        t0 = time.perf_counter()
        summary = clf.classify_scene(args.optical, args.sar, args.output, tile=args.tile, overlap=args.overlap,
                                     batch=args.batch, overwrite=True)
        seconds = time.perf_counter() - t0
    return {"width": summary.width, "height": summary.height, "tiles": summary.tiles, "tile": summary.tile,
            "overlap": summary.overlap, "batch": summary.batch, "seconds": seconds,
            "model_seconds": summary.model_seconds, "scene_mpx_s": summary.width * summary.height / 1e6 / seconds,
            "rss_loaded_mb": rss_loaded, "rss_peak_mb": peak_rss_mb()}


def child_model_only(args: argparse.Namespace) -> dict:
    """Model-only throughput: random tiles of the scene's tile size, batch after batch, nothing else."""
    from asanet_rt.classifier import Classifier

    with Classifier.open(args.model, backend=args.backend) as clf:
        tile = clf.check_tile(args.tile)
        batch = args.batch or clf.default_batch
        rng = np.random.default_rng(0)
        opt = rng.integers(0, 256, (batch, 3, tile, tile)).astype(np.float32)
        sar = rng.integers(0, 256, (batch, 1, tile, tile)).astype(np.float32)
        clf.scores(opt, sar)  # warm-up
        runs, t0 = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - t0 < args.min_seconds:
            clf.scores(opt, sar)
            runs += 1
        seconds = time.perf_counter() - t0
    return {"tile": tile, "batch": batch, "runs": runs, "tiles_s": runs * batch / seconds,
            "model_mpx_s": runs * batch * tile * tile / 1e6 / seconds}


def run_child(mode: str, args: argparse.Namespace, **extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", str(args.model), "--backend", args.backend,
           "--min-seconds", str(args.min_seconds)]
    for name in ("tile", "overlap", "batch"):
        if getattr(args, name) is not None:
            cmd += [f"--{name}", str(getattr(args, name))]
    for key, value in extra.items():
        cmd += [f"--{key}", value]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX model or engine (default: the toy test model)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--sizes", default="512,1024,2048,4096,1024x8192",
                   help="scenes, comma-separated: N for N x N px, WxH for W wide and H tall (default: squares of "
                        "512 to 4096 px, and a tall strip showing that memory does not grow with the height)")
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--overlap", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--min-seconds", type=float, default=2.0, help="model-only run length")
    p.add_argument("--out", type=Path, default=Path("scene_throughput.json"), help="JSON results")
    p.add_argument("--child", choices=("scene", "model"), help=argparse.SUPPRESS)
    p.add_argument("--optical", help=argparse.SUPPRESS)
    p.add_argument("--sar", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = child_scene(args) if args.child == "scene" else child_model_only(args)
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="asanet-bench-") as tmp:
        folder = Path(tmp)
        if args.model is None:
            sys.path.insert(0, str(REPO / "tests"))
            from toy_models import make_toy_onnx

            args.model = make_toy_onnx(folder / "toy.onnx")
        model_only = run_child("model", args)
        print(f"model {args.model.name}: {model_only['tiles_s']:.1f} tiles/s of {model_only['tile']} px "
              f"(batch {model_only['batch']}) = {model_only['model_mpx_s']:.2f} Mpx/s model only", flush=True)
        rows = []
        for spec in args.sizes.split(","):
            width, _, height = spec.strip().lower().partition("x")
            width, height = int(width), int(height or width)
            opt, sar = write_scene(folder, width, height=height)
            out = folder / f"lc_{width}x{height}.tif"
            result = run_child("scene", args, optical=str(opt), sar=str(sar), output=str(out))
            result["efficiency"] = result["scene_mpx_s"] / model_only["model_mpx_s"]
            rows.append(result)
            for path in (opt, sar, out):
                path.unlink()
            print(f"  {width} x {height} px done in {result['seconds']:.1f} s", flush=True)

    header = (f"{'scene px':>11} {'tiles':>6} {'time s':>8} {'scene Mpx/s':>12} {'model s':>8} "
              f"{'model-only Mpx/s':>17} {'scene/model':>12} {'RSS loaded MiB':>15} {'peak RSS MiB':>13} "
              f"{'pipeline MiB':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['width']:>5} x {r['height']:<5} {r['tiles']:>6} {r['seconds']:>8.2f} {r['scene_mpx_s']:>12.2f} "
              f"{r['model_seconds']:>8.2f} {model_only['model_mpx_s']:>17.2f} {r['efficiency']:>12.2f} "
              f"{r['rss_loaded_mb']:>15.0f} {r['rss_peak_mb']:>13.0f} "
              f"{r['rss_peak_mb'] - r['rss_loaded_mb']:>13.0f}")
    report = {"model": str(args.model), "backend": args.backend, "machine": platform.machine(),
              "cpus": os.cpu_count(), "model_only": model_only, "scenes": rows}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
