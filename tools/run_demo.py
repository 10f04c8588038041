"""The README's first command: the whole asanet-rt chain on the bundled demo model and sample scenes, on a CPU.

checkpoint -> info -> ONNX fp32 + int8 (calibrated on the sample scene) -> TensorRT-RTX engine (if the builder is
installed) -> classify two real Sentinel-1/2 scene pairs on different pixel grids -> COG maps, PNG quick-looks,
a latency comparison. Every step is the `asanet-rt` command a user would type, called in-process.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

from asanet_rt.cli import main as asanet_rt

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
SCENES = {
    # name: (optical, sar, why it is here)
    "parana": ("parana_s2_rgb.tif", "parana_s1_vv_db_epsg4326.tif",
               "a TRAINING tile (in-sample): coast, water and forest; S1 reprojected to EPSG:4326"),
    "punjab": ("punjab_s2_rgb.tif", "punjab_s1_vv_db.tif",
               "unseen farmland; S1 and S2 on two EPSG:4326 grids"),
    "jutland": ("jutland_s2_rgb.tif", "jutland_s1_vv_db_epsg4326.tif",
                "the held-out tile; S2 in UTM 32N, S1 reprojected to EPSG:4326"),
}


def run(step: str, *args: str) -> None:
    """Run one asanet-rt command, echoing it like a shell would; stop the demo if it fails."""
    print(f"\n== {step}\n$ asanet-rt {' '.join(shlex.quote(a) for a in args)}", flush=True)
    started = time.perf_counter()
    code = asanet_rt(list(args))
    if code != 0:
        sys.exit(f"demo step failed ({step}): exit code {code}")
    print(f"   ({time.perf_counter() - started:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--checkpoint", default=str(DEMO / "asanet_demo.pth"))
    parser.add_argument("--fast", action="store_true",
                        help="CI mode: minmax calibration without the sensitivity pass, short latency run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint
    fp32, int8 = out / "demo_fp32.onnx", out / "demo_int8_cpu.onnx"
    calib = f"{DEMO / 'scene' / SCENES['punjab'][0]},{DEMO / 'scene' / SCENES['punjab'][1]}"
    # The demo scenes are 8-bit R,G,B files; the model (like official checkpoints) wants B,G,R: the graph reorders.
    common = ["--input-bands", "red,green,blue", "--tile", "128:512", "--batch", "1:4", "--overwrite"]

    run("what the checkpoint is", "info", ckpt, "--tile", "256")
    run("export ONNX, fp32", "export", ckpt, "-o", str(fp32), *common)
    int8_args = ["--precision", "int8", "--int8-target", "cpu", "--calib", calib, "--calib-tiles", "8"]
    int8_args += ["--calib-method", "minmax", "--keep-fp", "none"] if args.fast else ["--keep-fp", "auto"]
    run("export ONNX, int8 for ONNX Runtime on CPU, calibrated on the Punjab scene", "export", ckpt, "-o",
        str(int8), *common, *int8_args)

    engine = None
    if importlib.util.find_spec("tensorrt_rtx") or importlib.util.find_spec("tensorrt"):
        engine = out / "demo_fp32.engine"
        run("build a TensorRT engine (TensorRT-RTX builds without a GPU; running it needs one)", "build",
            str(fp32), "-o", str(engine), "--tile", "128:256:512", "--batch", "1:1:4", "--overwrite")
    else:
        print("\n== TensorRT engine: skipped (pip install -e '.[rtx]' for the TensorRT-RTX builder)")

    maps, fp32_maps = {}, {}
    for name, (optical, sar, why) in SCENES.items():
        landcover = out / f"{name}_landcover.tif"
        scene = [str(DEMO / "scene" / optical), str(DEMO / "scene" / sar)]
        run(f"classify the {name} scene ({why}) with ONNX Runtime, int8", "classify", *scene, "-o",
            str(landcover), "--model", str(int8), "--sar-scale", "db:-25:0", "--tile", "128", "--quicklook",
            str(out / f"{name}_quicklook.png"), "--confidence", str(out / f"{name}_confidence.tif"),
            "--overwrite", "-q")
        maps[name] = landcover
        fp32_maps[name] = out / f"{name}_landcover_fp32.tif"
        run("the same scene with the fp32 model, to measure what int8 changes", "classify", *scene, "-o",
            str(fp32_maps[name]), "--model", str(fp32), "--sar-scale", "db:-25:0", "--tile", "128",
            "--no-sidecars", "--overwrite", "-q")

    bench_json = out / "latency.json"
    iterations = "5" if args.fast else "20"
    run("latency: fp32 vs int8 on this CPU, 256x256 tile, batch 1 (ratios against the first model)", "bench",
        str(fp32), str(int8), "--tile", "256", "--batch", "1", "--iterations", iterations, "--warmup", "2",
        "--json-out", str(bench_json))

    scores = {name: score_against_labels(path, DEMO / "scene" / f"{name}_lulc_demo_classes.tif")
              for name, path in maps.items()}
    fp32_scores = {name: score_against_labels(path, DEMO / "scene" / f"{name}_lulc_demo_classes.tif")
                   for name, path in fp32_maps.items()}
    report = json.loads((out / "demo_int8_cpu.report.json").read_text())
    train_log = json.loads((DEMO / "train_log.json").read_text())
    heldout = train_log["evaluation"]["s2rgb"]["heldout"]
    print("\n== summary")
    print(f"int8 export report: {_agreement(report)}")
    for name in maps:
        calibrated = " (the calibration scene)" if name == "punjab" else ""
        print(f"{name}{calibrated}: int8 map agrees with the fp32 map on {map_agreement(maps[name], fp32_maps[name])}")
    for name, line in scores.items():
        if line:
            print(f"{name} map vs its LULC labels: int8 {line}; fp32 {fp32_scores[name]}")
    print(f"demo model, held-out tile {train_log['heldout_tile']} at training time: mIoU {heldout['mIoU']:.3f} "
          f"(a pipeline demo trained on three tiles, not a land-cover product: bring an official checkpoint)")
    print("outputs:")
    for path in sorted(out.iterdir()):
        if path.is_file():
            print(f"  {path}  ({path.stat().st_size / 1024:.0f} KiB)")
    if engine is None:
        print("  (no engine: TensorRT builder not installed)")
    return 0


def score_against_labels(landcover: Path, labels: Path) -> str:
    """Per-class IoU of a written map against a label raster on the same grid ('' when there are no labels)."""
    if not labels.is_file():
        return ""
    import rasterio

    from asanet_rt.metrics import ConfusionMatrix

    with rasterio.open(landcover) as pred, rasterio.open(labels) as truth:
        tags = pred.tags(1)
        classes = [tags[f"CLASS_{i}"] for i in range(sum(k.startswith("CLASS_") for k in tags))]
        cm = ConfusionMatrix(len(classes))
        cm.update(pred.read(1), truth.read(1))
    scores = cm.result(classes)
    present = ", ".join(f"{n} {100 * v:.0f}" for n, v in zip(scores.class_names, scores.iou) if v == v)
    return f"IoU % {present}; mIoU {100 * scores.miou:.1f} %"


def map_agreement(a: Path, b: Path) -> str:
    """Share of pixels two class maps of one scene agree on (pixels with a class in both)."""
    import numpy as np
    import rasterio

    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        x, y = ra.read(1), rb.read(1)
    valid = (x != 255) & (y != 255)
    return f"{100 * float((x[valid] == y[valid]).mean()):.2f} % of {int(valid.sum())} px"


def _agreement(report: dict) -> str:
    stats, ev = report["vs_reference"], report["evaluation"]
    kind = "held-out" if ev.get("held_out", True) else "in-sample"
    line = (f"argmax agreement {100 * stats['argmax_agreement']:.2f} % on {ev['tiles']} {kind} tile(s), max "
            f"|logit error| {stats['max_abs_logit_error']:.3g}")
    ins = report.get("in_sample")
    if ins:
        line += f" (in-sample on {ins['tiles']} calibration tile(s): {100 * ins['argmax_agreement']:.2f} %)"
    return line


if __name__ == "__main__":
    sys.exit(main())
