"""Two sensors, one grid: real Sentinel-1/2 pairs on different grids, partial and missing overlap, no CRS."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from asanet_rt.classifier import Classifier
from asanet_rt.errors import AsanetError
from asanet_rt.scaling import Scale
from asanet_rt.scene import AlignmentWarning

from runtime_helpers import (SSL4EO, TERRAMESH, TILE_ID, listing, north_up, reference_probabilities,
                             ssl4eo_optical, toy_model, write_pair, write_raster)  # noqa: F401 - fixture

S2_SCALE, S1_SCALE = "reflectance:0:3000", "db:-25:0"


@pytest.fixture(scope="module")
def clf(toy_model):
    with Classifier.open(toy_model) as classifier:
        yield classifier


def test_ssl4eo_pair_on_two_grids_is_aligned_by_georeference(clf, tmp_path):
    optical = ssl4eo_optical(tmp_path)
    vv = SSL4EO / "s1_grd_20200607" / "VV.tif"
    out = tmp_path / "lc.tif"
    # the stack holds B4, B3, B2 without descriptions: the bands are named explicitly
    summary = clf.classify_scene(optical, vv, out, optical_scale=S2_SCALE, sar_scale=S1_SCALE,
                                 optical_bands=(1, 2, 3))
    assert summary.alignment == "warped"
    with rasterio.open(out) as src, rasterio.open(optical) as o, rasterio.open(vv) as v:
        classes = src.read(1)
        assert src.crs == o.crs and src.transform == o.transform and src.shape == o.shape
        opt = o.read()
        sar = np.full((1, o.height, o.width), np.nan, np.float32)
        reproject(v.read(1), sar[0], src_transform=v.transform, src_crs=v.crs, dst_transform=o.transform,
                  dst_crs=o.crs, resampling=Resampling.bilinear, dst_nodata=np.nan)
        sar_by_index = v.read()
    # the SAR stops ~2 px short of the optical's east and south edges: nodata there, classes everywhere else
    has_sar = ~np.isnan(sar[0])
    assert not has_sar[-2:].any() and not has_sar[:, -2:].any() and has_sar[:-2, :-2].all()
    np.testing.assert_array_equal(classes == 255, ~has_sar)
    o8 = Scale.parse(S2_SCALE).apply(opt)
    aligned = reference_probabilities(o8, Scale.parse(S1_SCALE).apply(np.nan_to_num(sar))).argmax(0)
    stacked = reference_probabilities(o8, Scale.parse(S1_SCALE).apply(sar_by_index)).argmax(0)
    agree_aligned = (classes == aligned)[has_sar].mean()
    assert agree_aligned > 0.995  # same as resampling the SAR beforehand
    assert (classes == stacked)[has_sar].mean() < agree_aligned - 0.03  # stacking by index is visibly different


def _reprojected_sar(folder, crs="EPSG:4326", resolution=(1.5e-4, 1.5e-4)):
    """The TerraMesh tile's VV band warped to another CRS and a ~15 m pixel."""
    with rasterio.open(TERRAMESH / "S1RTC" / f"{TILE_ID}.tif") as src:
        transform, width, height = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds,
                                                               resolution=resolution)
        vv = np.full((height, width), np.nan, np.float32)
        reproject(src.read(1), vv, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs=crs, resampling=Resampling.bilinear, dst_nodata=np.nan)
    return write_raster(folder / "s1_4326.tif", vv, crs=crs, transform=transform, nodata=float("nan"))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # rasterio's own use of Affine * in warp helpers
def test_terramesh_sar_in_another_crs_and_resolution(clf, tmp_path):
    rgb = TERRAMESH / "S2RGB" / f"{TILE_ID}.tif"
    s1 = TERRAMESH / "S1RTC" / f"{TILE_ID}.tif"
    same = clf.classify_scene(rgb, s1, tmp_path / "same.tif", sar_scale=S1_SCALE)
    assert same.alignment == "same grid" and same.nodata_pixels == 0
    warped = clf.classify_scene(rgb, _reprojected_sar(tmp_path), tmp_path / "warped.tif", sar_scale=S1_SCALE,
                                sar_resampling="cubic")
    assert warped.alignment == "warped"
    with rasterio.open(tmp_path / "same.tif") as a, rasterio.open(tmp_path / "warped.tif") as b:
        assert a.crs == b.crs and a.transform == b.transform
        ref, got = a.read(1), b.read(1)
    valid = got != 255
    assert valid.mean() > 0.99  # only slivers at the rotated footprint's edge lack SAR
    assert (ref == got)[valid].mean() > 0.97  # resampled twice, yet the same map


def test_partial_and_no_overlap(clf, tmp_path):
    opt_path, _, _, sar = write_pair(tmp_path, 100, 120, seed=11)
    # SAR covering only the western half, at 20 m pixels
    half = sar[:, ::2, :30]
    write_raster(tmp_path / "west.tif", half, transform=north_up(500000, 6000000, 20))
    summary = clf.classify_scene(opt_path, tmp_path / "west.tif", tmp_path / "lc.tif", tile=64, overlap=16)
    with rasterio.open(tmp_path / "lc.tif") as src:
        classes = src.read(1)
    assert (classes[:, :59] != 255).all() and (classes[:, 61:] == 255).all()
    assert summary.alignment == "warped" and summary.tiles_skipped > 0
    write_raster(tmp_path / "far.tif", sar, transform=north_up(900000, 6000000, 10))
    before = listing(tmp_path)
    with pytest.raises(AsanetError, match=r"far\.tif and .*optical\.tif do not overlap"):
        clf.classify_scene(opt_path, tmp_path / "far.tif", tmp_path / "lc2.tif")
    assert listing(tmp_path) == before


def test_missing_crs(clf, tmp_path):
    opt_path, sar_path, opt, sar = write_pair(tmp_path, 64, 80, seed=12)
    write_raster(tmp_path / "sar_nocrs.tif", sar, crs=None)
    with pytest.raises(AsanetError, match=r"sar_nocrs\.tif: has no CRS but .*optical\.tif has one"):
        clf.classify_scene(opt_path, tmp_path / "sar_nocrs.tif", tmp_path / "lc.tif")
    write_raster(tmp_path / "opt_nocrs.tif", opt, crs=None)
    with pytest.warns(AlignmentWarning, match="no CRS; stacking them by pixel index"):
        summary = clf.classify_scene(tmp_path / "opt_nocrs.tif", tmp_path / "sar_nocrs.tif", tmp_path / "lc.tif")
    assert summary.alignment == "pixel index" and summary.nodata_pixels == 0
    with rasterio.open(tmp_path / "lc.tif") as src:
        np.testing.assert_array_equal(src.read(1), reference_probabilities(opt, sar).argmax(0))
    write_raster(tmp_path / "sar_small.tif", sar[:, :32], crs=None)
    with pytest.raises(AsanetError, match="no CRS and different sizes"):
        clf.classify_scene(tmp_path / "opt_nocrs.tif", tmp_path / "sar_small.tif", tmp_path / "lc3.tif")
