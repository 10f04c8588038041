"""GPU reference numbers where TensorRT is absent: the tiny ASANet at 256x256 in torch (FP32, FP16) and in ONNX
Runtime's CUDA provider, timed with CUDA events around the forward pass (compute only, inputs on the device).

Random weights: speed does not depend on them. Prints a table, saves JSON (``--json``). Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from model_utils import randomise  # noqa: E402

from asanet_rt.export.network import build_model  # noqa: E402
from asanet_rt.metadata import ArchSpec, ModelMetadata  # noqa: E402

PAPER_FPS = 48.7  # the paper's ASANet FPS at 256x256 (its GPU, its setup): context, not a like-for-like baseline


def time_cuda(fn, iterations: int, warmup: int) -> list[float]:
    """Milliseconds per call, from CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def torch_rows(model, batches, tile, iterations, warmup) -> list[dict]:
    """Eager calls (what most tools run), then the same forward captured once in a CUDA graph and replayed: the
    graph removes Python and launch overhead, which dominates a 256x256 tile on a large GPU."""
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, tile, tile, device="cuda")
        for label, dtype in (("fp32", None), ("fp16 (autocast)", torch.float16)):
            def run():
                with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    model(x, x)
            rows.append(summarise(f"torch eager {label}", batch, tile, time_cuda(run, iterations, warmup)))
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        model(x, x)
                torch.cuda.current_stream().wait_stream(side)
                with torch.cuda.graph(graph):
                    model(x, x)
            rows.append(summarise(f"torch CUDA graph {label}", batch, tile, time_cuda(graph.replay, iterations,
                                                                                     warmup)))
    return rows


def ort_rows(model, batches, tile, iterations, warmup) -> list[dict]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"onnxruntime {ort.__version__}: no CUDAExecutionProvider; skipping ORT rows")
        return []
    from asanet_rt.export.onnx_export import ExportOptions, export_onnx

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.onnx"
        export_onnx(model.cpu(), path, ExportOptions(outputs=("classes",), tile=(256, 512), batch=(1, 8)))
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        for batch in batches:
            feed = {"optical": np.random.rand(batch, 3, tile, tile).astype(np.float32) * 255,
                    "sar": np.random.rand(batch, 1, tile, tile).astype(np.float32) * 255}
            binding = session.io_binding()
            for name, value in feed.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
            binding.bind_output("classes", "cuda")
            rows.append(summarise("onnxruntime CUDA fp32 (raw input, argmax in graph)", batch, tile,
                                  time_cuda(lambda: session.run_with_iobinding(binding), iterations, warmup)))
    return rows


def summarise(label: str, batch: int, tile: int, times: list[float]) -> dict:
    p50 = statistics.median(times)
    return {"runner": label, "batch": batch, "tile": tile, "p50_ms": round(p50, 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3), "tiles_per_s": round(1000 * batch / p50, 1),
            "x_paper_fps": round(1000 * batch / p50 / PAPER_FPS, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    arch = ArchSpec.from_name("tiny", 7)
    model = randomise(build_model(arch))
    model.metadata = ModelMetadata.build(arch)
    batches = [int(b) for b in args.batch.split(",")]
    torch.backends.cudnn.benchmark = True
    rows = ort_rows(model, batches, args.tile, args.iterations, args.warmup)
    rows += torch_rows(model.cuda(), batches, args.tile, args.iterations, args.warmup)
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "paper_fps": PAPER_FPS}
    print(f"{env['gpu']}, torch {env['torch']}, CUDA {env['cuda']}; compute only (inputs on the device)")
    print(f"{'runner':52s} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} {'tiles/s':>8} {'x 48.7 FPS':>10}")
    for r in rows:
        print(f"{r['runner']:52s} {r['batch']:5d} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['tiles_per_s']:8.1f} "
              f"{r['x_paper_fps']:10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
