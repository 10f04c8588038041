"""Do tile borders show in the map? Class changes along tile lines vs the median line, and agreement with
whole-image inference, for a sweep of tile sizes and overlaps on real scenes.

    python benchmarks/seams.py                                  # demo checkpoint (torch), demo scenes, 1024 px
    python benchmarks/seams.py --model m.onnx --tiles 256 --overlaps 32,64,96,128 --size 1024

Each scene (a real optical + SAR pair) is upsampled bilinearly to ``--size`` px so that the tiling has many tiles,
classified once as one tile (whole-image inference: the reference) and once per tile/overlap through the scene
pipeline (``classify_scene``). For every column x (and row y) it counts the rows where class(x) != class(x - 1);
an *edge line* is a tile start, a tile end or a blend crossover (the middle of an overlap, where two tiles weigh
the same). ``edge ratio`` = the largest count on an edge line / the median line's count; ``seam ratio`` divides
by max(median, the whole-image count on that line) instead, so a real straight feature that happens to lie on a
tile line does not count as a seam. ~1 means no seam.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from asanet_rt.backends.cpu import cpu_model

REPO = Path(__file__).resolve().parents[1]


TERRAMESH = REPO / "tests" / "data" / "terramind"

#: name -> (optical, SAR, optical bands, optical scale); all in the repository (demo/scene, tests/data).
SCENES = {
    "jutland": (REPO / "demo/scene/jutland_s2_rgb.tif", REPO / "demo/scene/jutland_s1_vv_db_epsg4326.tif",
                "3,2,1", "none"),
    "punjab": (REPO / "demo/scene/punjab_s2_rgb.tif", REPO / "demo/scene/punjab_s1_vv_db.tif", "3,2,1", "none"),
    "parana": (REPO / "demo/scene/parana_s2_rgb.tif", REPO / "demo/scene/parana_s1_vv_db_epsg4326.tif",
               "3,2,1", "none"),
    # the same files with red and blue swapped: a scene unlike the training data, where the model is unsure and a
    # tile's own content (its pyramid pooling sees only the tile) sways it most, as on another sensor or domain
    "jutland-swapped": (REPO / "demo/scene/jutland_s2_rgb.tif", REPO / "demo/scene/jutland_s1_vv_db_epsg4326.tif",
                        "1,2,3", "none"),
    "tanzania": (TERRAMESH / "S2RGB/38D_378R_2_3.tif", TERRAMESH / "S1RTC/38D_378R_2_3.tif",
                 "3,2,1", "none"),
}
#: Lines this close to the scene edge are left out (reflection padding and warped SAR edges live there).
EDGE_SKIP = 8


def upsample(src: Path, dst: Path, width: int, height: int) -> Path:
    """``src`` resampled bilinearly to ``width`` x ``height`` px on the same footprint (band tags kept)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(src) as s:
        profile = s.profile.copy()
        data = s.read(out_shape=(s.count, height, width), resampling=Resampling.bilinear)
        profile.update(width=width, height=height,
                       transform=s.transform * s.transform.scale(s.width / width, s.height / height))
        for key in ("blockxsize", "blockysize", "tiled", "compress"):
            profile.pop(key, None)
        descriptions = s.descriptions
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
        d.descriptions = descriptions
    return dst


def changes(classes: np.ndarray, axis: int) -> np.ndarray:
    """Per line along ``axis`` (1: columns, 0: rows): pixels whose class differs from the previous line's.

    Entry i compares line i with line i - 1 (entry 0 is 0); nodata (255) on either side does not count.
    """
    a = np.moveaxis(classes, axis, 0)
    diff = (a[1:] != a[:-1]) & (a[1:] != 255) & (a[:-1] != 255)
    return np.concatenate([[0], diff.reshape(diff.shape[0], -1).sum(axis=1)])


def edge_lines(origins: tuple[int, ...], tile: int, length: int) -> dict[str, list[int]]:
    """Tile starts, tile ends and blend crossovers (overlap middles) strictly inside ``length``."""
    inside = lambda v: EDGE_SKIP <= v < length - EDGE_SKIP  # noqa: E731
    starts = [o for o in origins[1:] if inside(o)]
    ends = [o + tile for o in origins[:-1] if inside(o + tile)]
    cross = [(b + a + tile) // 2 for a, b in zip(origins, origins[1:]) if inside((b + a + tile) // 2)]
    return {"start": starts, "end": ends, "crossover": cross}


def seam_report(classes: np.ndarray, reference: np.ndarray | None, grid) -> dict:
    """Edge and seam ratios of a tiled map (``grid``: its ``TileGrid``), and its agreement with ``reference``."""
    out: dict = {"edge_ratio": {}, "seam_ratio": {}, "reference_edge_ratio": {}}
    for axis, origins, tile, name in ((1, grid.xs, grid.tile_w, "x"), (0, grid.ys, grid.tile_h, "y")):
        c = changes(classes, axis)
        r = changes(reference, axis) if reference is not None else None
        inner = slice(EDGE_SKIP, len(c) - EDGE_SKIP)
        median = max(float(np.median(c[inner])), 1.0)
        ref_median = max(float(np.median(r[inner])), 1.0) if r is not None else 1.0
        for kind, lines in edge_lines(origins, tile, len(c)).items():
            for line in lines:
                worst = out["edge_ratio"].get(kind, (0.0,))[0]
                ratio = c[line] / median
                if ratio > worst:
                    out["edge_ratio"][kind] = (round(ratio, 2), name, line, int(c[line]), median)
                if r is not None:
                    seam = c[line] / max(median, float(r[line]))
                    if seam > out["seam_ratio"].get(kind, (0.0,))[0]:
                        out["seam_ratio"][kind] = (round(seam, 2), name, line, int(c[line]), int(r[line]))
                    ref_ratio = r[line] / ref_median
                    out["reference_edge_ratio"][kind] = round(max(out["reference_edge_ratio"].get(kind, 0.0),
                                                                  ref_ratio), 2)
    out["edge_ratio_max"] = max((v[0] for v in out["edge_ratio"].values()), default=0.0)
    out["seam_ratio_max"] = max((v[0] for v in out["seam_ratio"].values()), default=0.0)
    if reference is not None:
        valid = (classes != 255) & (reference != 255)
        out["agreement_pct"] = round(100.0 * float((classes[valid] == reference[valid]).mean()), 3)
    return out


def classify(clf, optical: Path, sar: Path, out: Path, tile: int, overlap: int, bands: str, scale: str):
    """Run the scene pipeline; the map and its TileGrid."""
    import rasterio

    from asanet_rt.scene_pipeline import classify_scene
    from asanet_rt.tiling import TileGrid

    summary = classify_scene(clf, optical, sar, out, tile=tile, overlap=overlap, optical_bands=bands,
                             optical_scale=scale, sar_scale="db:-25:0", overwrite=True, sidecars=False)
    with rasterio.open(out) as src:
        classes = src.read(1)
    grid = TileGrid.plan(summary.height, summary.width, tile, overlap, clf.tile_range[0])
    return classes, grid, summary


BINS = (0, 8, 16, 32, 48, 64, 96, 128, 256)


def border_profile(clf, optical: Path, sar: Path, whole: np.ndarray, tile: int, bands: str, scale: str) -> dict:
    """Agreement of single tiles with whole-image inference by distance to the tile's nearest edge (px).

    Tiles lie inside the scene on a 96 px step (a multiple of 32: the same phase as the whole image), so every
    disagreement comes from the tile's own borders and its pyramid pooling seeing only the tile.
    """
    from asanet_rt.scene import Scene

    with Scene.open(optical, sar, optical_bands=bands, optical_scale=scale, sar_scale="db:-25:0",
                    band_names=clf.optical_bands, optical_fill=clf.optical_fill(), sar_fill=clf.sar_fill()) as sc:
        block = sc.read_rows(0, sc.height)
    h, w = whole.shape
    yy, xx = np.mgrid[0:tile, 0:tile]
    dist = np.minimum.reduce([yy, xx, tile - 1 - yy, tile - 1 - xx])
    hits, totals = np.zeros(len(BINS) - 1), np.zeros(len(BINS) - 1)
    for y in range(0, h - tile + 1, 96):
        for x in range(0, w - tile + 1, 96):
            pred = clf.scores(block.optical[None, :, y:y + tile, x:x + tile],
                              block.sar[None, :, y:y + tile, x:x + tile])[0].argmax(0)
            ok = pred == whole[y:y + tile, x:x + tile]
            for i in range(len(BINS) - 1):
                m = (dist >= BINS[i]) & (dist < BINS[i + 1])
                hits[i] += ok[m].sum()
                totals[i] += m.sum()
    return {f"{BINS[i]}-{BINS[i + 1]}": round(100.0 * hits[i] / totals[i], 2)
            for i in range(len(BINS) - 1) if totals[i]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "demo/asanet_demo.pth")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--scenes", default="jutland,tanzania,punjab,parana",
                   help=f"comma list of {', '.join(SCENES)}")
    p.add_argument("--size", type=int, default=1024, help="scene edge after upsampling, px")
    p.add_argument("--tiles", default="128,256")
    p.add_argument("--overlaps", default=None,
                   help="comma list of overlaps in px, or of fractions of the tile such as 0.25 (default: 16 px "
                        "steps from 16 px to half the tile)")
    p.add_argument("--border-profile", action="store_true",
                   help="also: agreement of single tiles with whole-image inference by distance to the tile edge")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/seams.json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import warnings

    from asanet_rt.classifier import Classifier

    warnings.simplefilter("ignore")  # band-order and range notes on the upsampled copies
    options = {"threads": args.threads} if args.threads else {}
    rows: list[dict] = []
    profiles: list[dict] = []
    with Classifier.open(args.model, backend=args.backend, **options) as clf, \
            tempfile.TemporaryDirectory(prefix="asanet-seams-") as tmp:
        folder = Path(tmp)
        for name in args.scenes.split(","):
            optical, sar, bands, scale = SCENES[name]
            if not optical.is_file():
                print(f"skip {name}: {optical} is absent")
                continue
            opt = upsample(optical, folder / f"{name}_opt.tif", args.size, args.size)
            sar_ = upsample(sar, folder / f"{name}_sar.tif", args.size, args.size)
            t0 = time.perf_counter()
            whole, _, _ = classify(clf, opt, sar_, folder / "whole.tif", -(-args.size // 32) * 32, 0, bands, scale)
            print(f"{name}: whole image ({args.size} px) in {time.perf_counter() - t0:.1f} s", flush=True)
            if args.border_profile:
                for tile in (int(t) for t in args.tiles.split(",")):
                    prof = border_profile(clf, opt, sar_, whole, tile, bands, scale)
                    profiles.append({"scene": name, "tile": tile, "agreement_pct_by_edge_distance": prof})
                    print(f"  tile {tile:4d} agreement with whole image by px from the tile edge: "
                          + "  ".join(f"{k}: {v:.1f}" for k, v in prof.items()), flush=True)
            for tile in (int(t) for t in args.tiles.split(",")):
                if args.overlaps:
                    overlaps = [int(float(v) * tile) if "." in v else int(v) for v in args.overlaps.split(",")]
                else:
                    overlaps = list(range(16, tile // 2 + 1, 16))
                for overlap in [o for o in overlaps if o <= tile // 2]:
                    t0 = time.perf_counter()
                    classes, grid, summary = classify(clf, opt, sar_, folder / "tiled.tif", tile, overlap, bands,
                                                      scale)
                    row = {"scene": name, "tile": tile, "overlap": overlap, "tiles": grid.count,
                           "overlap_factor": round(grid.count * grid.tile_h * grid.tile_w
                                                   / (grid.width * grid.height), 3),
                           "seconds": round(time.perf_counter() - t0, 2), **seam_report(classes, whole, grid)}
                    rows.append(row)
                    print(f"  tile {tile:4d} overlap {overlap:4d}  x{row['overlap_factor']:.2f}  edge ratio "
                          f"{row['edge_ratio_max']:6.2f}  seam ratio {row['seam_ratio_max']:6.2f}  agreement "
                          f"{row['agreement_pct']:6.2f} %  {row['seconds']:.1f} s", flush=True)
    print(f"\n{'tile':>5} {'overlap':>8} {'x model':>8} {'edge ratio max':>15} {'seam ratio max':>15} "
          f"{'agreement % (mean)':>19}   scenes")
    keys = sorted({(r["tile"], r["overlap"]) for r in rows})
    summary_rows = []
    for tile, overlap in keys:
        sel = [r for r in rows if (r["tile"], r["overlap"]) == (tile, overlap)]
        s = {"tile": tile, "overlap": overlap, "overlap_factor": sel[0]["overlap_factor"],
             "edge_ratio_max": max(r["edge_ratio_max"] for r in sel),
             "seam_ratio_max": max(r["seam_ratio_max"] for r in sel),
             "agreement_pct_mean": round(float(np.mean([r["agreement_pct"] for r in sel])), 2),
             "scenes": [r["scene"] for r in sel]}
        summary_rows.append(s)
        print(f"{tile:>5} {overlap:>8} {s['overlap_factor']:>8.2f} {s['edge_ratio_max']:>15.2f} "
              f"{s['seam_ratio_max']:>15.2f} {s['agreement_pct_mean']:>19.2f}   {','.join(s['scenes'])}")
    report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "model": str(args.model), "backend": clf.runner.backend, "size": args.size,
              "cpu": cpu_model(), "cpus": os.cpu_count(),
              "summary": summary_rows, "runs": rows, "border_profiles": profiles}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
