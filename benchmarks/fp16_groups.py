"""Which parts of ASANet need FP32 in an FP16 export: the measurement behind ``fp16.DEFAULT_FP32_GROUPS``.

    python benchmarks/fp16_groups.py                     # the parity-fixture checkpoint, TerraMesh tiles

Logit error and argmax agreement against the FP32 ONNX (ONNX Runtime CPU) for FP16 conversions that keep no
group, each group, the default, and all groups in FP32; on the four real 224 px tiles and on one 1024 px mosaic of
them. ONNX Runtime's CPU provider runs ops without FP16 kernels in FP32, so it cannot show an FP16 overflow; the
peak GRN sum of squares (FP16 overflows past 65504) is measured on the FP32 graph instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def mosaic(tiles, size: int = 1024):
    """The tiles as a 2x2 mosaic, upsampled x2 and reflect-padded to ``size``."""
    from asanet_rt.export.calibration import Tile

    def block(arrays):
        grid = np.block([[arrays[0], arrays[1]], [arrays[2], arrays[3]]]).repeat(2, 2).repeat(2, 3)
        grid = grid[:, :, :size, :size]
        pad = ((0, 0), (0, 0), (0, size - grid.shape[2]), (0, size - grid.shape[3]))
        return np.ascontiguousarray(np.pad(grid, pad, mode="reflect"))

    return [Tile(block([t.optical for t in tiles]), block([t.sar for t in tiles]), f"mosaic{size}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(SHARED / "reference" / "parity_fixture" / "checkpoint.pth"))
    parser.add_argument("--data", default=str(SHARED / "data" / "terramind"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fp16_groups.json"))
    args = parser.parse_args(argv)
    from asanet_rt.export.calibration import read_tiles
    from asanet_rt.export.checkpoint import load_checkpoint
    from asanet_rt.export.fp16 import grn_peak_sum_of_squares, measure_groups
    from asanet_rt.export.onnx_export import ExportOptions, export_metadata
    from asanet_rt.export.pipeline import trace_fp32

    model = load_checkpoint(args.checkpoint)
    options = ExportOptions(outputs=("logits",), tile=(64, 1024))
    fp32 = trace_fp32(model, options)
    meta = export_metadata(model.metadata, options)
    real = read_tiles([args.data], options.resolved_bands(model.metadata), 256, 4)
    sets = {"4 tiles 224 px": real, "1 mosaic 1024 px": mosaic(real)}
    result = {"checkpoint": Path(args.checkpoint).name, "sets": {}}
    for label, tiles in sets.items():
        rows = measure_groups(fp32, meta, tiles)
        peak = grn_peak_sum_of_squares(fp32, tiles)
        result["sets"][label] = {"grn_peak_sum_of_squares": round(peak, 1), "trials": rows}
        print(f"{label}: GRN peak sum of squares {peak:.4g} (FP16 max 65504)")
        print(f"  {'FP32 groups':<34} {'mean abs':>9} {'max abs':>9} {'agreement':>10}")
        for r in rows:
            groups = ",".join(r["fp32_groups"]) or "(none)"
            print(f"  {groups:<34} {r['mean_abs']:>9.5f} {r['max_abs']:>9.5f} {100 * r['agreement']:>9.3f}%")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
