"""What each INT8 graph form costs on the CPU backends, and what it does to accuracy (``--int8-target cpu``).

    python benchmarks/int8_speed.py                     # tiny at 256 px, batch 1, ONNX Runtime and OpenVINO
    python benchmarks/int8_speed.py --arch atto --runs 10 --threads 2

Speed: a random-weight model of ``--arch`` (speed does not depend on the weights) exported as FP32 and as INT8
in each graph form, calibrated on two TerraMesh tiles, default float layers only. Every variant runs in one
process on ONNX Runtime and OpenVINO, interleaved call by call so that load changes on a shared machine hit all
alike; per variant: median and minimum wall ms per call, median process CPU ms per call (less sensitive to
other processes than wall time) and GOP/s at the median (2 ops per multiply-accumulate).

Accuracy: the demo model (``demo/asanet_demo.pth``, or ``--checkpoint``) in the same forms, calibrated on the
Punjab scene as the demo does (``--calib-tiles`` asked, three 128 px tiles there), graded on real tiles never
used for calibration: the four TerraMesh tiles at 224 px (Parana and Jutland are the demo's scenes on one grid;
Tanzania and Hudson Bay), argmax agreement with its FP32 ONNX.

Forms (``export/graph_cpu.py``): ``traced`` (Q/DQ on the graph as exported), ``openvino`` (the openvino target's:
GELU as one op, GRN applied as one per-channel factor, beta folded into the next conv), ``cpu`` (the cpu
target's: also GRN's sum of squares as a channels-last MatMul and the channel softmaxes decomposed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "terramind"
DEMO = REPO / "demo"
FORMS = ("traced", "openvino", "cpu")
#: multiply-accumulates per 256 x 256 tile (``asanet-rt info --tile 256``)
GMACS_256 = {"tiny": 25.85}
TERRAMESH = {"282D_485L_3_3": "parana", "38D_378R_2_3": "tanzania", "609U_541L_3_0": "hudson_bay",
             "637U_59R_1_3": "jutland"}


def int8_forms(fp32, tiles, forms=FORMS):
    """INT8 (uint8 activations, default float layers) of ``fp32`` in each graph form of ``forms``."""
    from asanet_rt.export.int8 import make_int8

    out = {}
    for form in forms:
        out[form] = make_int8(fp32, tiles, "cpu", "percentile", "none", graph_form=form).model
        out[form].ClearField("metadata_props")
        out[form].metadata_props.extend(fp32.metadata_props)
    return out


def speed_models(arch_name: str, tile: int):
    import torch

    from asanet_rt.export.calibration import read_tiles, synthetic_tiles
    from asanet_rt.export.network import build_model
    from asanet_rt.export.onnx_export import ExportOptions
    from asanet_rt.export.pipeline import trace_fp32
    from asanet_rt.metadata import ArchSpec, ModelMetadata

    torch.manual_seed(0)
    arch = ArchSpec.from_name(arch_name, 7)
    model = build_model(arch)
    model.metadata = ModelMetadata.build(arch, preset="whu-opt-sar")
    fp32 = trace_fp32(model, ExportOptions(outputs=("probabilities",), batch=(1, 8), tile=(tile, 512)))
    bands = ["blue", "green", "red"]
    tiles = read_tiles([SHARED], bands, tile, 2) if SHARED.is_dir() else synthetic_tiles(2, tile)
    return {"fp32": fp32, **{f"int8 {k}": v for k, v in int8_forms(fp32, tiles).items()}}


def time_all(models: dict, tile: int, runs: int, threads: int, backends: list[str]) -> dict:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feed = {"optical": rng.uniform(0, 255, (1, 3, tile, tile)).astype(np.float32),
            "sar": rng.uniform(0, 255, (1, 1, tile, tile)).astype(np.float32)}
    calls = {}
    for name, graph in models.items():
        blob = graph.SerializeToString()
        if "onnxruntime" in backends:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
            calls[(name, "onnxruntime")] = lambda s=session: s.run(None, feed)
        if "openvino" in backends:
            import openvino as ov

            core = ov.Core()
            net = core.read_model(blob, b"")
            net.reshape({"optical": [1, 3, tile, tile], "sar": [1, 1, tile, tile]})
            compiled = core.compile_model(net, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                       "PERFORMANCE_HINT": "LATENCY",
                                                       "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            for key, value in feed.items():
                request.get_tensor(key).data[...] = value

            def run(r=request):
                r.start_async()
                r.wait()
            calls[(name, "openvino")] = run
    wall = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    for i in range(runs + 2):
        for key, call in calls.items():  # interleaved: load changes hit every variant alike
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            if i >= 2:
                wall[key].append(1000 * (time.perf_counter() - t0))
                cpu[key].append(1000 * (time.process_time() - c0))
    return {f"{m} @ {b}": {"p50_ms": round(statistics.median(wall[(m, b)]), 2), "min_ms": round(min(wall[(m, b)]), 2),
                           "cpu_ms_p50": round(statistics.median(cpu[(m, b)]), 2)} for (m, b) in calls}


def accuracy(checkpoint: str, calib_tiles: int, forms=FORMS) -> dict:
    """Argmax agreement of each INT8 form with FP32 on real tiles not used for calibration (demo model)."""
    from asanet_rt.export.calibration import read_tiles, split_calibration
    from asanet_rt.export.checkpoint import load_checkpoint
    from asanet_rt.export.onnx_export import ExportOptions
    from asanet_rt.export.pipeline import _onnx_logits, trace_fp32

    model = load_checkpoint(checkpoint)
    options = ExportOptions(optical_bands=("red", "green", "blue"), outputs=("probabilities",), batch=(1, 4),
                            tile=(128, 512))
    fp32 = trace_fp32(model, options)
    bands = options.resolved_bands(model.metadata)
    scene = DEMO / "scene"
    calib = read_tiles([f"{scene / 'punjab_s2_rgb.tif'},{scene / 'punjab_s1_vv_db.tif'}"], bands, 128, calib_tiles)
    calib = split_calibration(calib, calib_tiles).calibration
    # the TerraMesh tiles hold the Parana and Jutland scenes on one grid per tile (the demo's own scenes are not)
    by_tile = {t.source.split("@")[0]: t for t in read_tiles([SHARED], bands, 224, 16)} if SHARED.is_dir() else {}
    held = {TERRAMESH.get(Path(name).stem, name): [tile] for name, tile in sorted(by_tile.items())}
    held = {k: v for k, v in held.items() if v}
    reference = {k: _onnx_logits(fp32, v) for k, v in held.items()}
    result = {}
    for form, graph in int8_forms(fp32, calib, forms).items():
        row, agree_all, pixels_all = {}, 0, 0
        for k, tiles in held.items():
            got = _onnx_logits(graph, tiles)
            agree = sum(int((a.argmax(1) == b.argmax(1)).sum()) for a, b in zip(got, reference[k]))
            pixels = sum(a[:, 0].size for a in got)
            row[k] = round(agree / pixels, 5)
            agree_all, pixels_all = agree_all + agree, pixels_all + pixels
        result[form] = {"all": round(agree_all / max(pixels_all, 1), 5), **row}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--checkpoint", default=str(DEMO / "asanet_demo.pth"))
    parser.add_argument("--calib-tiles", type=int, default=8)
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "int8_speed.json"))
    args = parser.parse_args(argv)
    from asanet_rt.backends.cpu import cpu_model
    from asanet_rt.bench import environment

    timings = time_all(speed_models(args.arch, args.tile), args.tile, args.runs, args.threads,
                       args.backends.split(","))
    gmacs = GMACS_256.get(args.arch)
    scale = (args.tile / 256) ** 2
    print(f"{args.arch} at {args.tile} px, batch 1, {args.threads} threads, {cpu_model()}")
    print(f"{'variant':<34} {'p50 ms':>8} {'min ms':>8} {'cpu ms':>8} {'GOP/s':>7}")
    for name, t in timings.items():
        gops = f"{2 * gmacs * scale / (t['p50_ms'] / 1000):7.0f}" if gmacs else "      -"
        print(f"{name:<34} {t['p50_ms']:8.1f} {t['min_ms']:8.1f} {t['cpu_ms_p50']:8.1f} {gops}")
    acc = None if args.no_accuracy else accuracy(args.checkpoint, args.calib_tiles)
    if acc:
        print("argmax agreement with FP32, demo model, tiles not used for calibration:")
        for form, row in acc.items():
            print(f"  {form:<10} " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in row.items()))
    env = environment()
    result = {"benchmark": "int8_speed", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "cpu": cpu_model(), "isa": env["cpu"].get("isa"),
              "load_average": env.get("load_average"), "arch": args.arch, "tile": args.tile, "batch": 1,
              "threads": args.threads, "gmacs_per_tile": gmacs and gmacs * scale, "timings": timings,
              "accuracy_held_out": acc}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
