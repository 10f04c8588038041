"""Fused plugin kernels (through CuPy) vs the same math as unfused torch ops, on the tiny model's shapes at a
256x256 tile, batch 1 and 8. Each side is captured once into a CUDA graph and the graph replays are timed with
CUDA events, so the figures are GPU time, not Python launch overhead (``--no-graphs`` times eager calls).
Needs a CUDA GPU, CuPy and torch with CUDA."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from asanet_rt.engines.plugins import cupy_ops

WIDTHS = (96, 192, 384, 768)  # tiny; stage i map is tile / 2**(i+2)


def cuda_ms(fn, iterations: int = 50, warmup: int = 10, graphs: bool = True) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if graphs:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(10):
                fn()
        fn = graph.replay
        iterations = max(5, iterations // 10)
    times = []
    for _ in range(iterations):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / (10 if graphs else 1))
    return statistics.median(times)


def on_torch_stream(fn):
    """Run a CuPy call on torch's current stream, so torch's graph capture records its kernels too."""
    import cupy as cp

    def call():
        with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            fn()
    return call


def torch_ops(dtype):
    def grn(x, gamma, beta):
        g = torch.sqrt((x.float() * x.float()).sum((2, 3), keepdim=True))
        s = (g / (g.mean(1, keepdim=True) + 1e-6)).to(x.dtype)
        return x + gamma.view(1, -1, 1, 1) * (x * s) + beta.view(1, -1, 1, 1)

    def sfm(x1, x2, w1, b1, w2, b2):
        d = x1 - x2
        gate = lambda v: 1 + torch.sigmoid(F.linear(F.gelu(F.linear(v, w1, b1)), w2, b2))[:, :, None, None]
        return x1 * gate(d.amax((2, 3))), x2 * gate((-d).amax((2, 3)))

    def cfm_fuse(w, a):
        c = w.shape[1] // 2
        return w[:, :c] * torch.softmax(a[:, :c], 1) + w[:, c:] * torch.softmax(a[:, c:], 1)

    return grn, sfm, cfm_fuse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-graphs", action="store_true", help="time eager calls (includes launch overhead)")
    args = parser.parse_args()
    import cupy as cp

    graphs = not args.no_graphs

    rows = []
    for dtype in (torch.float32, torch.float16):
        grn_t, sfm_t, fuse_t = torch_ops(dtype)
        for batch in (1, 8):
            for i, c in enumerate(WIDTHS):
                hw = args.tile // 2 ** (i + 2)
                x1 = torch.randn(batch, c, hw, hw, device="cuda", dtype=dtype)
                x2 = torch.randn_like(x1)
                x4 = torch.randn(batch, 4 * c, hw, hw, device="cuda", dtype=dtype)
                gamma, beta = torch.randn(4 * c, device="cuda", dtype=dtype), torch.randn(4 * c, device="cuda",
                                                                                          dtype=dtype)
                m = max(32, c // 16)
                w1, b1 = torch.randn(m, c, device="cuda", dtype=dtype) / c ** 0.5, torch.randn(m, device="cuda",
                                                                                                dtype=dtype)
                w2, b2 = torch.randn(c, m, device="cuda", dtype=dtype) / m ** 0.5, torch.randn(c, device="cuda",
                                                                                                dtype=dtype)
                wc, ac = torch.randn(batch, 2 * c, hw, hw, device="cuda", dtype=dtype), torch.randn(
                    batch, 2 * c, hw, hw, device="cuda", dtype=dtype)
                cpx = lambda t: cp.from_dlpack(t)  # zero-copy views of torch's tensors
                cases = {
                    "GRN": (lambda: grn_t(x4, gamma, beta), lambda: cupy_ops.grn(cpx(x4), cpx(gamma), cpx(beta))),
                    "SFM": (lambda: sfm_t(x1, x2, w1, b1, w2, b2),
                            lambda: cupy_ops.sfm(*(cpx(t) for t in (x1, x2, w1, b1, w2, b2)))),
                    "CFMFuse": (lambda: fuse_t(wc, ac), lambda: cupy_ops.cfm_fuse(cpx(wc), cpx(ac))),
                }
                for op, (unfused, fused) in cases.items():
                    try:
                        t_unfused, t_fused = cuda_ms(unfused, graphs=graphs), cuda_ms(on_torch_stream(fused),
                                                                                        graphs=graphs)
                    except RuntimeError as exc:  # a capture failure must not lose the run: time eagerly
                        print(f"graph capture failed ({exc}); eager timing for this row")
                        torch.cuda.synchronize()
                        t_unfused, t_fused = cuda_ms(unfused, graphs=False), cuda_ms(fused, graphs=False)
                    rows.append({"op": op, "dtype": str(dtype).split(".")[-1], "batch": batch, "stage": i,
                                 "shape": [batch, 4 * c if op == "GRN" else c, hw, hw],
                                 "torch_unfused_us": round(1000 * t_unfused, 1), "fused_us": round(1000 * t_fused, 1),
                                 "speedup": round(t_unfused / t_fused, 2)})
                    r = rows[-1]
                    print(f"{op:8s} {r['dtype']:8s} b{batch} stage{i} {str(r['shape']):22s} torch "
                          f"{r['torch_unfused_us']:8.1f} us  fused {r['fused_us']:8.1f} us  x{r['speedup']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "tile": args.tile,
                                               "timing": "cuda graph replay" if graphs else "eager calls",
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
