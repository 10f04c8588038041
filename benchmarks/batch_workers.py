"""Batch throughput (scenes/s) in-process vs Ray with 1 and 2 workers, on generated scene pairs.

    python benchmarks/batch_workers.py                          # toy model, 6 scenes of 2048 x 2048
    python benchmarks/batch_workers.py --model m.onnx --scenes 8 --size 1024 --workers 1,2,4

Each configuration writes into a fresh folder (nothing is skipped). Ray runs share one local cluster started
with as many CPUs as the largest worker count; each actor gets 1 CPU and 1 ONNX Runtime thread, while the
in-process run uses ONNX Runtime's default threads (all cores). Actor start-up (model load) is included in the
Ray timings, as a user would see it. Results are printed and saved to benchmarks/results/batch_workers.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the toy model and GeoTIFF helpers


def main() -> int:
    """Run the benchmark; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model (default: the tests' toy ONNX model)")
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--size", type=int, default=2048, help="scene edge in px")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to compare")
    ap.add_argument("--no-sequential", action="store_true", help="skip the in-process run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "batch_workers.json"))
    args = ap.parse_args()

    from asanet_rt.batch import BatchConfig, run_batch
    from runtime_helpers import random_pair, write_raster
    from toy_models import make_toy_onnx

    counts = [int(v) for v in args.workers.split(",") if v]
    rows = []
    with tempfile.TemporaryDirectory(prefix="batch_bench_") as tmp:
        tmp = Path(tmp)
        model = args.model or str(make_toy_onnx(tmp / "toy.onnx"))
        lines = ["optical,sar"]
        for i in range(args.scenes):
            opt, sar = random_pair(args.size, args.size, seed=i)
            write_raster(tmp / f"s2_{i}.tif", opt)
            write_raster(tmp / f"s1_{i}.tif", sar)
            lines.append(f"s2_{i}.tif,s1_{i}.tif")
        (tmp / "m.csv").write_text("\n".join(lines) + "\n")

        def run(label: str, config: BatchConfig) -> None:
            t0 = time.perf_counter()
            summary = run_batch(tmp / "m.csv", tmp / label, config)
            wall = time.perf_counter() - t0
            assert summary["done"] == args.scenes, summary["failures"]
            row = {"config": label, "workers": summary["workers"], "seconds": round(wall, 3),
                   "scenes_per_second": round(args.scenes / wall, 4), "per_worker": summary["per_worker"]}
            rows.append(row)
            print(f"{label:>12}: {row['scenes_per_second']:.3f} scenes/s ({wall:.2f} s)", flush=True)

        if not args.no_sequential:
            run("sequential", BatchConfig(model=model, progress=False))
        if counts:
            import ray

            ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
            try:
                for n in counts:
                    run(f"ray-{n}", BatchConfig(model=model, ray="local", workers=n, progress=False))
            finally:
                ray.shutdown()
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "model": args.model or "toy", "scenes": args.scenes, "size": args.size, "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
