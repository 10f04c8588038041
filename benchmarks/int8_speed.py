"""ONNX Runtime CPU latency of one model at FP32, INT8 (``--int8-target cpu``) and FP16, tile 256, batch 1.

    python benchmarks/int8_speed.py                       # tiny and atto, 20 timed runs each
    python benchmarks/int8_speed.py --archs atto --runs 10 --threads 2

Random weights (speed does not depend on them). INT8 is calibrated on the shared TerraMesh tiles when present
(synthetic tiles otherwise) with the default layers kept in float (gates, pooling products) and no sensitivity
pass. Every variant runs in one process, interleaved run by run so that a busy machine slows them alike; the
ratios are medians of one run's variants against each other. FP16 on ONNX Runtime's CPU provider mostly casts
back to FP32 (few FP16 CPU kernels): it is listed to show that, not as a target.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "terramind"


def build(arch_name: str, tile: int, calib_tiles: int):
    """FP32, INT8 (cpu) and FP16 graphs of a random-weight model of ``arch_name``."""
    import torch

    from asanet_rt.export.calibration import read_tiles, synthetic_tiles
    from asanet_rt.export.fp16 import convert_fp16
    from asanet_rt.export.int8 import make_int8
    from asanet_rt.export.network import build_model
    from asanet_rt.export.onnx_export import ExportOptions, finalize
    from asanet_rt.export.pipeline import trace_fp32
    from asanet_rt.metadata import ArchSpec, ModelMetadata

    torch.manual_seed(0)
    arch = ArchSpec.from_name(arch_name, 7)
    model = build_model(arch)
    model.metadata = ModelMetadata.build(arch, preset="whu-opt-sar")
    options = ExportOptions(outputs=("probabilities",), batch=(1, 1), tile=(tile, tile))
    fp32 = trace_fp32(model, options)
    if SHARED.is_dir():
        tiles, source = read_tiles([SHARED], options.resolved_bands(model.metadata), tile, calib_tiles), "TerraMesh"
    else:
        tiles, source = synthetic_tiles(calib_tiles, tile), "synthetic"
    int8 = make_int8(fp32, tiles, "cpu", "minmax", "none").model
    fp16 = finalize(convert_fp16(fp32), model.metadata)
    return {"fp32": fp32, "int8": int8, "fp16": fp16}, source


def time_variants(graphs: dict, tile: int, runs: int, warmup: int, threads: int) -> dict[str, list[float]]:
    import onnxruntime as ort

    sessions = {}
    for name, graph in graphs.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sessions[name] = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"optical": rng.uniform(0, 255, (1, 3, tile, tile)).astype(np.float32),
            "sar": rng.uniform(0, 255, (1, 1, tile, tile)).astype(np.float32)}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for i in range(warmup + runs):
        for name, session in sessions.items():  # interleaved: load changes hit every variant alike
            start = time.perf_counter()
            session.run(None, feed)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="tiny,atto")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    parser.add_argument("--calib-tiles", type=int, default=4)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "int8_speed.json"))
    args = parser.parse_args(argv)
    import onnxruntime as ort

    rows = []
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        graphs, source = build(arch, args.tile, args.calib_tiles)
        times = time_variants(graphs, args.tile, args.runs, args.warmup, args.threads)
        med = {name: statistics.median(t) for name, t in times.items()}
        rows.append({"arch": arch, "tile": args.tile, "batch": 1, "runs": args.runs, "calibration": source,
                     "median_ms": {k: round(v, 2) for k, v in med.items()},
                     "min_ms": {k: round(min(t), 2) for k, t in times.items()},
                     "speedup_int8_vs_fp32": round(med["fp32"] / med["int8"], 3),
                     "speedup_fp16_vs_fp32": round(med["fp32"] / med["fp16"], 3)})
    print(f"{'arch':<6} {'tile':>5} {'fp32 ms':>9} {'int8 ms':>9} {'fp16 ms':>9} {'int8 x':>7} {'fp16 x':>7}")
    for r in rows:
        m = r["median_ms"]
        print(f"{r['arch']:<6} {r['tile']:>5} {m['fp32']:>9.1f} {m['int8']:>9.1f} {m['fp16']:>9.1f} "
              f"{r['speedup_int8_vs_fp32']:>7.2f} {r['speedup_fp16_vs_fp32']:>7.2f}")
    result = {"benchmark": "int8_speed", "onnxruntime": ort.__version__, "python": sys.version.split()[0],
              "machine": platform.processor() or platform.machine(), "threads": args.threads or "default",
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
