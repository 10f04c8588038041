"""Scene throughput (km2/s) vs model-only throughput, time outside the model, and peak memory per stage.

    python benchmarks/scene_throughput.py                       # the toy model, scenes 512^2 .. 4096^2
    python benchmarks/scene_throughput.py --model m.onnx --sizes 1024,4096,8192x1024,1024x8192 --out bench.json
    python benchmarks/scene_throughput.py --model m.onnx --backend openvino --ort-arena off ...

Each scene runs in a fresh process so that its peak RSS is its own. Reported per scene: km2/s (pixel area from
the GeoTIFF transform; for a CRS in degrees, at the scene-centre latitude), the overlap factor (how many times
each pixel goes through the model: tiles x tile area / scene area), model-only throughput divided by that factor
(the best a scene can do), the time outside the model as % of wall (reading, warping, blending, writing, COG
conversion: whatever the model does not overlap with; also without the one-off set-up before the first tile,
where OpenVINO compiles the model for the tile shape), and RSS sampled every 5 ms: after loading the model, the
peak while streaming tiles and the peak while converting to a COG. The pipeline holds one row band of tiles at a
time, so memory grows with the scene width, never its height (compare 1024x8192 with 1024x1024).
``--ort-arena``, ``--ort-mem-pattern``, ``--gdal-cache`` and ``--queue`` change one memory setting in the child
to measure its effect.
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

from asanet_rt.backends.cpu import cpu_model

REPO = Path(__file__).resolve().parents[1]


class RssSampler:
    """VmRSS of this process every ``interval`` s in a thread; ``mark(name)`` starts a stage, ``peaks`` per stage."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.interval = interval
        self.stage = "start"
        self.peaks: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._since = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def _sample(self) -> None:
        rss = self.rss_mb()
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def mark(self, stage: str) -> None:
        self._sample()
        now = time.perf_counter()
        self.seconds[self.stage] = round(self.seconds.get(self.stage, 0.0) + now - self._since, 3)
        self._since = now
        self.stage = stage
        self._sample()

    def stop(self) -> dict[str, float]:
        self._sample()
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in self.peaks.items()}


class TracePeak:
    """tracemalloc (numpy buffers included) sampled every 0.2 s; the allocation sites at the largest total."""

    def __init__(self) -> None:
        import threading
        import tracemalloc

        tracemalloc.start(1)
        self.best: tuple[int, object] = (0, None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import tracemalloc

        while not self._stop.wait(0.2):
            current = tracemalloc.get_traced_memory()[0]
            if current > self.best[0]:
                self.best = (current, tracemalloc.take_snapshot())

    def stop(self) -> dict:
        import tracemalloc

        self._stop.set()
        self._thread.join()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        top = []
        if self.best[1] is not None:
            for stat in self.best[1].statistics("lineno")[:8]:  # type: ignore[attr-defined]
                frame = stat.traceback[0]
                top.append({"where": f"{Path(frame.filename).name}:{frame.lineno}", "mb": round(stat.size / 2**20, 1)})
        return {"traced_peak_mb": round(peak / 2**20, 1), "traced_top_at_peak": top}


def apply_memory_settings(args: argparse.Namespace) -> None:
    """The child's memory knobs: ONNX Runtime arena and memory pattern, GDAL block cache, pipeline queue size."""
    if args.gdal_cache is not None:
        os.environ["GDAL_CACHEMAX"] = str(args.gdal_cache)
    if args.queue is not None:
        from asanet_rt import scene_pipeline

        scene_pipeline.QUEUE_SIZE = args.queue
    if args.ort_arena is None and args.ort_mem_pattern is None:
        return
    import onnxruntime as ort

    session_class = ort.InferenceSession

    class Session(session_class):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, opts: object = None, *a: object, **kw: object) -> None:
            opts = opts or ort.SessionOptions()
            if args.ort_arena is not None:
                opts.enable_cpu_mem_arena = args.ort_arena == "on"
            if args.ort_mem_pattern is not None:
                opts.enable_mem_pattern = args.ort_mem_pattern == "on"
            super().__init__(path, opts, *a, **kw)

    ort.InferenceSession = Session


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
    """Classify one scene in this (fresh) process; report times and memory per stage."""
    sampler = RssSampler()
    apply_memory_settings(args)
    from asanet_rt import scene_pipeline, sinks
    from asanet_rt.classifier import Classifier

    stream, to_cog = scene_pipeline._stream, sinks.to_cog

    def staged_stream(*a: object, **kw: object) -> object:
        sampler.mark("stream")
        try:
            return stream(*a, **kw)
        finally:
            sampler.mark("after stream")

    def staged_to_cog(*a: object, **kw: object) -> object:
        sampler.mark("cog")
        try:
            return to_cog(*a, **kw)
        finally:
            sampler.mark("after cog")

    scene_pipeline._stream, sinks.to_cog = staged_stream, staged_to_cog
    traced = TracePeak() if args.tracemalloc else None
    sampler.mark("imports")
    with Classifier.open(args.model, backend=args.backend) as clf:
        sampler.mark("open scene")
        rss_loaded = RssSampler.rss_mb()
        t0 = time.perf_counter()
        summary = clf.classify_scene(args.optical, args.sar, args.output, tile=args.tile, overlap=args.overlap,
                                     batch=args.batch, overwrite=True)
        seconds = time.perf_counter() - t0
        sampler.mark("done")
    peaks = sampler.stop()
    extra = traced.stop() if traced else {}
    px = summary.width * summary.height
    km2 = summary.area_km2  # the runtime's own figure: pixel size, degrees at the scene-centre latitude
    factor = summary.overlap_factor
    return {"width": summary.width, "height": summary.height, "tiles": summary.tiles, "tile": summary.tile,
            "overlap": summary.overlap, "batch": summary.batch, "seconds": seconds,
            "model_seconds": summary.model_seconds, "scene_mpx_s": px / 1e6 / seconds,
            "km2": km2, "km2_s": km2 / seconds, "overlap_factor": factor,
            "outside_model_pct": 100.0 * (seconds - summary.model_seconds) / seconds,
            # one-off work before the first tile: opening the rasters, the backend's set-up for the tile shape
            "setup_seconds": sampler.seconds.get("open scene", 0.0),
            "outside_model_after_setup_pct": 100.0 * (seconds - sampler.seconds.get("open scene", 0.0)
                                                      - summary.model_seconds)
            / max(seconds - sampler.seconds.get("open scene", 0.0), 1e-9),
            "rss_loaded_mb": rss_loaded, "rss_peak_mb": peak_rss_mb(), "rss_stage_peak_mb": peaks,
            "stage_seconds": sampler.seconds, **extra}


def child_model_only(args: argparse.Namespace) -> dict:
    """Model-only throughput: random tiles of the scene's tile size, batch after batch, nothing else."""
    apply_memory_settings(args)
    from asanet_rt.classifier import Classifier

    with Classifier.open(args.model, backend=args.backend) as clf:
        plan = clf.tile_settings(args.tile, args.overlap, args.batch)
        tile, batch = plan.tile, plan.batch
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
            "model_mpx_s": runs * batch * tile * tile / 1e6 / seconds, "rss_peak_mb": peak_rss_mb()}


def run_child(mode: str, args: argparse.Namespace, **extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", str(args.model), "--backend", args.backend,
           "--min-seconds", str(args.min_seconds)]
    for name in ("tile", "overlap", "batch", "ort_arena", "ort_mem_pattern", "gdal_cache", "queue"):
        if name == "tracemalloc":
            continue
        if getattr(args, name) is not None:
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for key, value in extra.items():
        cmd += [f"--{key}", value]
    if args.tracemalloc and mode == "scene":
        cmd.append("--tracemalloc")
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
    p.add_argument("--ort-arena", choices=("on", "off"), default=None, help="ONNX Runtime enable_cpu_mem_arena")
    p.add_argument("--ort-mem-pattern", choices=("on", "off"), default=None, help="ONNX Runtime enable_mem_pattern")
    p.add_argument("--gdal-cache", type=int, default=None, help="GDAL_CACHEMAX in MB for the run")
    p.add_argument("--queue", type=int, default=None, help="batches waiting between two pipeline stages")
    p.add_argument("--tracemalloc", action="store_true", help="report Python/numpy allocation sites at the peak")
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
            result["model_only_per_factor_mpx_s"] = model_only["model_mpx_s"] / result["overlap_factor"]
            rows.append(result)
            for path in (opt, sar, out):
                path.unlink()
            print(f"  {width} x {height} px done in {result['seconds']:.1f} s", flush=True)

    header = (f"{'scene px':>11} {'tiles':>6} {'x model':>8} {'time s':>7} {'km2/s':>7} {'Mpx/s':>6} "
              f"{'model-only/x':>13} {'outside %':>10} {'set-up s':>9} {'after set-up %':>15} {'RSS loaded':>11} "
              f"{'stream peak':>12} {'cog peak':>9} {'peak MiB':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        stages = r["rss_stage_peak_mb"]
        print(f"{r['width']:>5} x {r['height']:<5} {r['tiles']:>6} {r['overlap_factor']:>8.2f} {r['seconds']:>7.2f} "
              f"{r['km2_s']:>7.2f} {r['scene_mpx_s']:>6.2f} {r['model_only_per_factor_mpx_s']:>13.2f} "
              f"{r['outside_model_pct']:>10.1f} {r['setup_seconds']:>9.2f} {r['outside_model_after_setup_pct']:>15.1f} "
              f"{r['rss_loaded_mb']:>11.0f} {stages.get('stream', 0):>12.0f} "
              f"{stages.get('cog', 0):>9.0f} {r['rss_peak_mb']:>9.0f}")
    settings = {k: getattr(args, k) for k in ("ort_arena", "ort_mem_pattern", "gdal_cache", "queue")}
    report = {"model": str(args.model), "backend": args.backend, "machine": platform.machine(),
              "cpu": cpu_model(), "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "settings": settings, "model_only": model_only,
              "scenes": rows}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
