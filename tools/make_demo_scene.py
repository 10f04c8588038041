"""Write the demo's sample scenes (demo/scene/): optical and SAR GeoTIFFs on different grids, plus a NOTICE.

    python tools/make_demo_scene.py

- ``punjab_*``: the SSL4EO-S12 pair (Punjab farmland). Optical: S2 L2A B4, B3, B2 -> uint8 R, G, B through the
  fixed window 0..3000 (reflectance x 1e4) -> 0..255, rounded and clipped. SAR: S1 GRD VV in dB, float32,
  unchanged. Both keep their native, different EPSG:4326 grids (offset by a few pixels, pixel sizes 0.4-0.8 %
  apart), so stacking by index would misalign them.
- ``parana_*``: TerraMesh tile 282D_485L_3_3, one of the demo model's training tiles (so its map is in-sample),
  prepared like ``jutland_*``.
- ``jutland_*``: TerraMesh tile 637U_59R_1_3 (the demo model's held-out tile). Optical: S2RGB (uint8 R, G, B, UTM
  32N) unchanged. SAR: S1RTC VV dB reprojected (bilinear) to EPSG:4326, so the runtime has to align it back.
  Labels: LULC remapped to the demo model's class indexes (255 = not a demo class), on the optical grid.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo import DEFAULT_DATA, HELDOUT_TILE, IGNORE, LULC_CLASSES, REPO, remap_lulc  # noqa: E402

#: A training tile (Parana coast: water, trees, bare ground), to show what the model learned; labelled in-sample.
IN_SAMPLE_TILE = "282D_485L_3_3"
SSL4EO_S2 = "ssl4eo_s12/s2_l2a_20200604"
SSL4EO_S1 = "ssl4eo_s12/s1_grd_20200607"
REFLECTANCE_WINDOW = (0.0, 3000.0)
SAR_CRS = "EPSG:4326"
SAR_RESOLUTION = (1.6e-4, 9e-5)  # degrees lon, lat
GTIFF = {"driver": "GTiff", "compress": "deflate", "tiled": False}

NOTICE = f"""\
Sample scenes for the asanet-rt demo. Modified from public data sets; the licences below apply to these files.

punjab_s2_rgb.tif, punjab_s1_vv_db.tif
  Contains modified Copernicus Sentinel data [2020].
  Origin: SSL4EO-S12 (Wang, Y., Ait Ali Braham, N., Xiong, Z., Liu, C., Albrecht, C. M., Zhu, X. X.,
  "SSL4EO-S12: A large-scale multimodal, multitemporal dataset for self-supervised learning in Earth
  observation", IEEE GRSM 2023), patches as published in github.com/kai-tub/rico-hdl,
  integration_tests/tiffs/SSL4EO-S12/ (commit 41505c6c).
  Licence: dataset CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); repository MIT.
  Changes: Sentinel-2 L2A B4, B3, B2 (2020-06-04) combined into one uint8 R, G, B file, scaled linearly from
  reflectance x 10000 {REFLECTANCE_WINDOW[0]:g}..{REFLECTANCE_WINDOW[1]:g} to 0..255 (rounded, clipped);
  Sentinel-1 GRD VV (2020-06-07, dB, float32) values unchanged, re-encoded. Both keep their native grids.

jutland_s2_rgb.tif, jutland_s1_vv_db_epsg4326.tif, jutland_lulc_demo_classes.tif (and the same for parana_*)
  Contains modified Copernicus Sentinel data. Land cover from the Esri / Impact Observatory 10 m land use /
  land cover product (CC BY 4.0).
  Origin: TerraMesh validation tiles {HELDOUT_TILE} (jutland) and {IN_SAMPLE_TILE} (parana), as published in
  github.com/IBM/terramind, examples/ (commit b7c7bd2a).
  Licence: TerraMesh data CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); these modified
  files are shared under the same licence. Repository Apache-2.0.
  Changes: S2RGB unchanged (re-encoded); S1RTC band 1 (VV, dB) reprojected from EPSG:32632 to EPSG:4326
  (bilinear, float32, NaN outside the source); LULC codes remapped to the demo model's class indexes
  ({", ".join(f"{i} {name}" for i, (name, _) in enumerate(LULC_CLASSES.values()))}; {IGNORE} = any other code:
  no data, built area, clouds ...).
"""


def write(path: Path, array: np.ndarray, profile: dict, descriptions: tuple[str, ...], tags: dict) -> None:
    """Write a (C, H, W) array as a compressed GeoTIFF with band descriptions and tags."""
    profile = {**profile, **GTIFF, "count": array.shape[0], "dtype": array.dtype.name,
               "height": array.shape[1], "width": array.shape[2]}
    if array.dtype == np.float32:
        profile["predictor"] = 3  # floating-point predictor: the float rasters compress to about half
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        for i, text in enumerate(descriptions, start=1):
            dst.set_band_description(i, text)
        dst.update_tags(**tags)


def base_profile(ds: rasterio.io.DatasetReader) -> dict:
    return {"crs": ds.crs, "transform": ds.transform, "nodata": ds.nodata}


def punjab(data: Path, out: Path) -> None:
    bands = []
    for name in ("B4", "B3", "B2"):
        with rasterio.open(data / SSL4EO_S2 / f"{name}.tif") as ds:
            bands.append(ds.read(1).astype(np.float32))
            profile = base_profile(ds)
    low, high = REFLECTANCE_WINDOW
    rgb = np.rint(np.clip((np.stack(bands) - low) * (255.0 / (high - low)), 0, 255)).astype(np.uint8)
    write(out / "punjab_s2_rgb.tif", rgb, profile, ("red", "green", "blue"),
          {"source": "SSL4EO-S12 S2 L2A 2020-06-04 B4,B3,B2", "scaling": f"reflectance x1e4 {low:g}..{high:g} -> 0..255"})
    with rasterio.open(data / SSL4EO_S1 / "VV.tif") as ds:
        vv = ds.read(1).astype(np.float32)
        profile = base_profile(ds)
    write(out / "punjab_s1_vv_db.tif", vv[None], profile, ("VV dB",),
          {"source": "SSL4EO-S12 S1 GRD 2020-06-07 VV", "units": "dB"})


def terramesh(data: Path, out: Path, tile: str, name: str) -> None:
    """One TerraMesh tile: optical as is, labels remapped, SAR reprojected to EPSG:4326."""
    with rasterio.open(data / "S2RGB" / f"{tile}.tif") as ds:
        write(out / f"{name}_s2_rgb.tif", ds.read(), base_profile(ds), ("red", "green", "blue"),
              {"source": f"TerraMesh {tile} S2RGB"})
    with rasterio.open(data / "LULC" / f"{tile}.tif") as ds:
        labels = remap_lulc(ds.read(1))
        profile = {**base_profile(ds), "nodata": IGNORE}
    classes = ",".join(name for name, _ in LULC_CLASSES.values())
    write(out / f"{name}_lulc_demo_classes.tif", labels[None], profile, ("class index",),
          {"source": f"TerraMesh {tile} LULC", "classes": classes, "ignore_index": str(IGNORE)})
    with rasterio.open(data / "S1RTC" / f"{tile}.tif") as ds:
        vv = ds.read(1).astype(np.float32)
        # About 10 m in both directions at 57 N; the default (square degrees) would coarsen it to 15 m N-S.
        transform, width, height = calculate_default_transform(ds.crs, SAR_CRS, ds.width, ds.height, *ds.bounds,
                                                               resolution=SAR_RESOLUTION)
        warped = np.full((height, width), np.nan, dtype=np.float32)
        reproject(vv, warped, src_transform=ds.transform, src_crs=ds.crs, dst_transform=transform,
                  dst_crs=SAR_CRS, resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan)
    write(out / f"{name}_s1_vv_db_epsg4326.tif", warped[None],
          {"crs": SAR_CRS, "transform": transform, "nodata": float("nan")}, ("VV dB",),
          {"source": f"TerraMesh {tile} S1RTC band 1 (VV)", "units": "dB",
           "resampling": "bilinear from EPSG:32632"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA.parent, help="folder with terramind/ and ssl4eo_s12/ (default tests/data)")
    parser.add_argument("--out", type=Path, default=REPO / "demo" / "scene")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    punjab(args.data, args.out)
    terramesh(args.data / "terramind", args.out, HELDOUT_TILE, "jutland")
    terramesh(args.data / "terramind", args.out, IN_SAMPLE_TILE, "parana")
    (args.out / "NOTICE").write_text(NOTICE)
    for path in sorted(args.out.iterdir()):
        print(f"{path.name:36s} {path.stat().st_size:9,d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
