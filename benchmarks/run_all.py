"""Regenerate the README's performance table on this machine (``make bench``).

    python benchmarks/run_all.py                      # tiny + atto, batch 1 and 8, 256 px; scenes 512..2048 px
    python benchmarks/run_all.py --quick              # a smoke run: shorter budgets, smaller scenes
    python benchmarks/run_all.py --models-dir ~/asanet-bench-models   # keep the exported models for the next run

What it measures, each in one ``asanet-rt bench`` run so that ratios come from one run:

1. CPU, per arch (``tiny``, the paper's model, and ``atto``): torch eager on the checkpoint (the baseline) vs
   ONNX Runtime FP32 vs ONNX Runtime INT8 (``--int8-target cpu``), plus OpenVINO FP32 / INT8 when installed;
   256 x 256 tiles (the paper's setting), batch 1 and 8. Weights are random (seeded): speed does not depend on
   the weight values. The INT8 model is calibrated on two TerraMesh tiles and keeps only the default layers
   in float (gates, pooling products; ``--keep-fp none``: no sensitivity pass); accuracy is not measured here.
2. Scene throughput vs model-only throughput and peak RSS for growing scenes (``benchmarks/scene_throughput.py``
   with the tiny FP32 model), when that script is present.
3. With an NVIDIA GPU: the plugin vs the portable op flavour as TensorRT engines (``asanet-rt build``) and ONNX
   Runtime's CUDA provider when available. The paper's 48.7 FPS (a GPU figure) is quoted as context only.

Results: ``benchmarks/results/bench.json`` (machine description, every ``asanet-rt bench`` report, the scene
results) and ``benchmarks/results/bench.md`` (the tables the README quotes). Budget: under 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ARCHS = ("tiny", "atto")
NUM_CLASSES = 7  # WHU-OPT-SAR, the official config the SDK defaults to
PAPER_FPS = 48.7  # ASANet-tiny at 256 x 256 on a GPU (ISPRS J. 2024, table of results)
CALIB_CANDIDATES = (REPO / "tests" / "data" / "terramind", REPO.parent / "shared" / "data" / "terramind")


def log(text: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {text}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Models: random-weight checkpoints and their FP32 / INT8 exports
# ---------------------------------------------------------------------------------------------------------------
def calibration_folder(tmp: Path) -> Path:
    """Real tiles for INT8 calibration (TerraMesh), or two synthetic GeoTIFF pairs when they are absent."""
    for folder in CALIB_CANDIDATES:
        if folder.is_dir():
            return folder
    import numpy as np
    import rasterio
    from affine import Affine

    folder = tmp / "calib"
    rng = np.random.default_rng(0)
    for sub, count in (("optical", 3), ("sar", 1)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            with rasterio.open(folder / sub / f"t{i}.tif", "w", driver="GTiff", width=256, height=256, count=count,
                               dtype="uint8", crs="EPSG:32632", transform=Affine(10, 0, 0, 0, -10, 0)) as dst:
                dst.write(rng.integers(0, 256, (count, 256, 256), dtype=np.uint8))
    return folder


def prepare_models(arch: str, folder: Path, calib: Path, plugins: bool, start: float) -> dict[str, Path]:
    """``{arch}.safetensors`` (seeded random weights), FP32 and INT8 (cpu) ONNX; reused when already there."""
    paths = {"checkpoint": folder / f"{arch}.safetensors", "fp32": folder / f"{arch}_fp32.onnx",
             "int8": folder / f"{arch}_int8_cpu.onnx", "int8_openvino": folder / f"{arch}_int8_openvino.onnx"}
    if plugins:
        paths["fp32_plugins"] = folder / f"{arch}_fp32_plugins.onnx"
    if all(p.is_file() for p in paths.values()):
        log(f"{arch}: reusing the models in {folder}", start)
        return paths
    import torch
    from safetensors.torch import save_file

    from asanet_rt.export.checkpoint import load_checkpoint
    from asanet_rt.export.network import build_model
    from asanet_rt.export.onnx_export import ExportOptions
    from asanet_rt.export.pipeline import PrecisionOptions, export_model
    from asanet_rt.metadata import ArchSpec

    torch.manual_seed(0)
    net = build_model(ArchSpec.from_name(arch, NUM_CLASSES))
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(paths["checkpoint"]))
    model = load_checkpoint(paths["checkpoint"], dataset="whu-opt-sar")
    options = ExportOptions(batch=(1, 8), tile=(256, 512))
    log(f"{arch}: exporting FP32 ONNX", start)
    export_model(model, paths["fp32"], options, PrecisionOptions(), report=False)
    log(f"{arch}: exporting INT8 ONNX (cpu and openvino targets, 2 calibration tiles, keep-fp none)", start)
    for key, target in (("int8", "cpu"), ("int8_openvino", "openvino")):
        export_model(model, paths[key], options, PrecisionOptions(precision="int8", int8_target=target,
                                                                  calib=(str(calib),), calib_tiles=2,
                                                                  keep_fp="none"), report=False)
    if plugins:
        log(f"{arch}: exporting the plugin flavour (FP32)", start)
        from dataclasses import replace

        export_model(model, paths["fp32_plugins"], replace(options, ops="plugins"), PrecisionOptions(),
                     report=False)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------
def cpu_section(arch: str, paths: dict[str, Path], args: argparse.Namespace, start: float) -> dict[str, Any]:
    """torch eager vs FP32 and INT8 on every installed CPU backend and on the default path (``auto``, what
    classify runs): one bench run per arch, ratios against torch."""
    from asanet_rt import bench

    settings = bench.BenchSettings(batches=tuple(args.batches), tiles=(args.tile,), warmup=1,
                                   iterations=args.iterations, time_budget_s=args.time_budget, min_iterations=3,
                                   threads=args.threads, mode="both" if args.compute else "e2e")
    backends = ["onnxruntime"] + (["openvino"] if args.openvino else [])
    models = [str(paths["checkpoint"])]
    for key in ("fp32", "int8", "int8_openvino") if args.openvino else ("fp32", "int8"):
        models += [f"{paths[key]}@{b}" for b in backends] + [str(paths[key])]  # the bare path: auto's choice
    log(f"{arch}: bench torch eager vs FP32 / INT8 on {', '.join(backends)} and auto", start)
    report = bench.run_benchmark(models, settings, quiet=True)
    report["gmacs_per_tile"] = macs(arch, args.tile)
    return report


def macs(arch: str, tile: int) -> float:
    """Multiply-accumulates (G) of ``arch`` per ``tile`` x ``tile`` tile (``asanet-rt info``'s count)."""
    from asanet_rt.export.info import count_macs
    from asanet_rt.export.network import build_model
    from asanet_rt.metadata import ArchSpec

    return round(count_macs(build_model(ArchSpec.from_name(arch, NUM_CLASSES)).eval(), tile, tile), 3)


def accuracy_guard(start: float) -> dict[str, Any] | None:
    """The INT8 (cpu target) accuracy guard with the demo model: agreement with FP32 on real tiles never used for
    calibration (``benchmarks/int8_speed.py``'s measurement, cpu form only)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import int8_speed

    if not (REPO / "demo" / "asanet_demo.pth").is_file():
        return None
    log("accuracy guard: demo model, INT8 (cpu) vs FP32 on tiles not used for calibration", start)
    return int8_speed.accuracy(str(REPO / "demo" / "asanet_demo.pth"), 8, forms=("cpu",))["cpu"]


def scene_section(model: Path, args: argparse.Namespace, tmp: Path, start: float) -> dict[str, Any] | None:
    """``benchmarks/scene_throughput.py`` on growing scenes, if the script is there."""
    script = REPO / "benchmarks" / "scene_throughput.py"
    if not script.is_file():
        return {"skipped": "benchmarks/scene_throughput.py is not present"}
    out = tmp / "scene.json"
    cmd = [sys.executable, str(script), "--model", str(model), "--sizes", ",".join(map(str, args.scene_sizes)),
           "--tile", str(args.tile), "--batch", "8", "--min-seconds", str(min(args.time_budget, 3.0)),
           "--out", str(out)]
    log(f"scenes {', '.join(f'{s} px' for s in args.scene_sizes)} with {model.name} (scene_throughput.py)", start)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        return {"skipped": f"scene_throughput.py failed (exit {done.returncode}): {tail}"}
    return json.loads(out.read_text())


def _has_build_command() -> bool:
    from asanet_rt.cli import build_parser

    parser = build_parser()
    sub = next((a for a in parser._actions if a.dest == "command"), None)  # argparse keeps subparsers here
    return sub is not None and "build" in getattr(sub, "choices", {})


def gpu_section(paths: dict[str, Path], args: argparse.Namespace, tmp: Path, start: float) -> dict[str, Any]:
    """Portable vs plugin flavour as engines (and ORT CUDA when available), tiny FP32; ratios vs portable."""
    from asanet_rt import bench

    models: list[str] = []
    notes: list[str] = []
    if _has_build_command():
        for flavour in ("fp32", "fp32_plugins"):
            engine = tmp / f"{paths[flavour].stem}.engine"
            log(f"building {engine.name} (asanet-rt build)", start)
            done = subprocess.run([sys.executable, "-m", "asanet_rt.cli", "build", str(paths[flavour]), "-o",
                                   str(engine)], capture_output=True, text=True)
            if done.returncode == 0 and engine.is_file():
                models.append(str(engine))
            else:
                notes.append(f"building {engine.name} failed: "
                             + " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:]))
    else:
        notes.append("no `asanet-rt build` command in this install: engines not benchmarked")
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            models += [f"{paths['fp32']}@ort-cuda", f"{paths['fp32_plugins']}@ort-cuda"]
    if not models:
        return {"skipped": "; ".join(notes) or "no GPU backend available"}
    settings = bench.BenchSettings(batches=tuple(args.batches), tiles=(args.tile,), warmup=5,
                                   iterations=max(args.iterations, 50), time_budget_s=args.time_budget,
                                   threads=args.threads)
    log("GPU: bench portable vs plugins", start)
    report = bench.run_benchmark(models, settings, quiet=True)
    report["notes"] = notes
    return report


def cpu_slug(env: dict[str, Any]) -> str:
    """A file name for the CPU model, e.g. ``amd-epyc`` or ``intel-xeon-platinum-8480``."""
    import re

    name = str(env.get("cpu", {}).get("model") or "unknown-cpu").lower()
    name = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", " ", name)
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown-cpu"


# ---------------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------------
def _cpu_rows(arch: str, report: dict[str, Any]) -> list[str]:
    models = {m["index"]: m for m in report["models"]}
    rows = []
    for r in report["results"]:
        m = models[r["model_index"]]
        backend = {"torch": "torch eager", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}.get(
            m["backend"], m["backend"])
        if r["status"] != "ok":
            rows.append(f"| {arch} | {backend} | {m.get('precision', '-')} | {r['batch']} | {r['status']}: "
                        f"{r['reason']} | | | | | |")
            continue
        e2e, ratio = r["e2e"], r["vs_baseline"] or {}
        speed = ratio.get("e2e_speedup_p50")
        if " (auto: " in m.get("label", ""):
            backend = f"default (auto: {backend})"
        precision = m.get("precision")
        if precision == "int8" and m.get("int8_target"):
            precision = f"int8 ({m['int8_target']})"
        gops = report.get("gmacs_per_tile")
        gops = "-" if not gops else f"{2 * gops * e2e['throughput']['tiles_per_s']:.0f}"
        rows.append(f"| {arch} | {backend} | {precision} | {r['batch']} | {e2e['latency_ms']['p50']:.1f} | "
                    f"{e2e['latency_ms']['p90']:.1f} | {e2e['throughput']['tiles_per_s']:.2f} | "
                    f"{'-' if speed is None else f'{speed:.2f}x'} | {gops} | {r['peak_rss_mb']:.0f} |")
    for m in report["models"]:
        if m.get("error"):
            rows.append(f"| {arch} | {m['backend']} | - | - | error: {m['error']} | | | | | |")
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    """The tables the README quotes, with the machine they were measured on."""
    from asanet_rt import bench

    first = next(iter(result["cpu"].values()), None)
    lines = ["# asanet-rt performance", "",
             f"Generated by `make bench` (`benchmarks/run_all.py`) on {result['created_utc']} in "
             f"{result['total_s'] / 60:.1f} min on the CPU described below. Numbers from one run; on a shared or "
             f"busy machine read the ratios, not the absolute figures, and compare p50 with p90.", ""]
    if first is not None:
        lines += [f"- {line}" for line in bench.describe_environment(first)[:-2]]
    lines += ["", f"## CPU: tiles of {result['tile']} x {result['tile']} px, random weights", "",
              "End-to-end latency per batch (numpy in, numpy out), torch eager on the checkpoint as the baseline "
              "(× = torch p50 / model p50); GOP/s = 2 x multiply-accumulates per tile x tiles/s. "
              "`default (auto: X)` is what `classify` runs: the backend the timed probe picked. INT8: "
              "`--int8-target cpu --keep-fp none` (default float layers only), calibrated on two tiles.", "",
              "| arch | backend | precision | batch | p50 ms | p90 ms | tiles/s | × torch eager | GOP/s | "
              "peak RSS MiB |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arch, report in result["cpu"].items():
        lines += _cpu_rows(arch, report)
    guard = result.get("accuracy_guard")
    if guard:
        lines += ["", "Accuracy guard (demo model, INT8 cpu target vs its FP32 ONNX, argmax agreement on real tiles "
                  "never used for calibration): " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in guard.items())]
    lines += ["", f"For context only: the paper reports {PAPER_FPS} FPS for ASANet-tiny at 256 x 256 on a GPU; it is "
              "not comparable with the CPU figures above.", ""]
    scene = result.get("scene")
    if scene and "scenes" in scene:
        mo = scene["model_only"]
        lines += ["## Scenes vs model only", "",
                  f"`{Path(scene['model']).name}` (ONNX Runtime), tile {mo['tile']} px, batch {mo['batch']}: "
                  f"model only {mo['model_mpx_s']:.3f} Mpx/s ({mo['tiles_s']:.2f} tiles/s). The scene rate counts "
                  "reading, blending, writing and the tile overlap.", "",
                  "| scene px | tiles | seconds | scene Mpx/s | scene / model-only | peak RSS MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in scene["scenes"]:
            lines.append(f"| {r['width']} x {r['height']} | {r['tiles']} | {r['seconds']:.1f} | "
                         f"{r['scene_mpx_s']:.3f} | {r['efficiency']:.2f} | {r['rss_peak_mb']:.0f} |")
        lines.append("")
    elif scene:
        lines += ["## Scenes vs model only", "", f"Skipped: {scene['skipped']}", ""]
    gpu = result.get("gpu")
    if gpu and "results" in gpu:
        lines += ["## GPU: portable vs plugin flavour (tiny, FP32)", "", bench.to_markdown(gpu).split("\n", 2)[2]]
    elif gpu:
        lines += ["## GPU", "", f"Skipped: {gpu['skipped']}", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default=",".join(ARCHS), help="comma list of archs (default tiny,atto)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--tile", type=int, default=256, help="tile edge (default 256, the paper's)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: physical cores)")
    p.add_argument("--iterations", type=int, default=20, help="timed calls per figure at most (default 20)")
    p.add_argument("--time-budget", type=float, default=3.0, help="seconds per figure (default 3)")
    p.add_argument("--compute", action="store_true", help="also time compute-only figures (doubles the time)")
    p.add_argument("--openvino", choices=("auto", "yes", "no"), default="auto",
                   help="add OpenVINO peers (auto: when installed)")
    p.add_argument("--scene-sizes", default="512,1024,2048", help="scene edges for the scene section")
    p.add_argument("--no-scene", action="store_true", help="skip the scene section")
    p.add_argument("--models-dir", type=Path, help="keep / reuse the exported models here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="smoke run: budget 0.5 s, batch 1 only, one small scene")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.scene_sizes = [int(s) for s in args.scene_sizes.split(",")]
    if args.quick:
        args.batches, args.time_budget, args.iterations, args.scene_sizes = [1], 0.5, 5, [512]
    import importlib.util

    args.openvino = args.openvino == "yes" or (args.openvino == "auto" and importlib.util.find_spec("openvino")
                                              is not None)
    from asanet_rt import bench
    from asanet_rt.io_utils import atomic_output

    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    gpus = bench._gpus()
    with tempfile.TemporaryDirectory(prefix="asanet-run-all-") as tmp_name:
        tmp = Path(tmp_name)
        folder = args.models_dir or tmp / "models"
        folder.mkdir(parents=True, exist_ok=True)
        calib = calibration_folder(tmp)
        result: dict[str, Any] = {"kind": "asanet-rt.run_all", "schema_version": 1, "tile": args.tile,
                                  "batches": args.batches, "weights": "random (torch.manual_seed(0))",
                                  "paper_context": {"fps": PAPER_FPS, "device": "GPU", "tile": 256,
                                                    "note": "context only, never compared with CPU numbers"},
                                  "environment": bench.environment(), "cpu": {}}
        paths = {}
        for arch in args.archs.split(","):
            paths[arch] = prepare_models(arch, folder, calib, plugins=bool(gpus) and arch == "tiny", start=start)
            result["cpu"][arch] = cpu_section(arch, paths[arch], args, start)
            print(bench.format_table(result["cpu"][arch]).split("\n\n", 1)[1], flush=True)
        scene_model = paths.get("tiny", next(iter(paths.values())))["fp32"]
        result["scene"] = None if args.no_scene else scene_section(scene_model, args, tmp, start)
        result["gpu"] = gpu_section(paths["tiny"], args, tmp, start) if gpus and "tiny" in paths else None
        result["accuracy_guard"] = None if args.quick else accuracy_guard(start)
        result["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result["total_s"] = round(time.perf_counter() - start, 1)
    # the latest run, and the latest run per CPU model (results/cpu/<model>.{json,md}) for the README's table
    keyed = args.out / "cpu" / cpu_slug(result["environment"])
    keyed.parent.mkdir(parents=True, exist_ok=True)
    for base in (args.out / "bench", keyed):
        with atomic_output(base.with_suffix(".json"), overwrite=True) as out:
            out.write_text(json.dumps(result, indent=1) + "\n")
        with atomic_output(base.with_suffix(".md"), overwrite=True) as out:
            out.write_text(to_markdown(result))
    log(f"wrote {args.out / 'bench.json'}, {args.out / 'bench.md'} and {keyed}.{{json,md}}", start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
