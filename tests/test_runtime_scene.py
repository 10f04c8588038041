"""``classify_scene`` on generated GeoTIFFs: tiling vs whole-image inference, nodata, COG outputs, atomic writes."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rio_cogeo.cogeo import cog_validate

from asanet_rt.classifier import Classifier
from asanet_rt.errors import AsanetError
from asanet_rt.tiling import TileGrid

from runtime_helpers import (listing, reference_probabilities, tile_edge_mask, toy_model,  # noqa: F401 - fixture
                             write_pair, write_raster)


@pytest.fixture(scope="module")
def clf(toy_model):
    with Classifier.open(toy_model) as classifier:
        yield classifier


def test_tiled_scene_equals_whole_image_away_from_tile_borders_without_seams(clf, tmp_path):
    opt_path, sar_path, opt, sar = write_pair(tmp_path, 300, 417)
    out, conf = tmp_path / "lc.tif", tmp_path / "conf.tif"
    summary = clf.classify_scene(opt_path, sar_path, out, confidence=conf, tile=64, overlap=16, batch=3)
    grid = TileGrid.plan(300, 417, 64, 16)
    assert summary.tiles == grid.count > 40 and summary.tiles_skipped == 0 and summary.tile == (64, 64)
    with rasterio.open(out) as src:
        classes = src.read(1)
    with rasterio.open(conf) as src:
        confidence = src.read(1)
    ref = reference_probabilities(opt, sar)
    edges = tile_edge_mask(grid)
    # away from tile borders every tile sees the toy's whole 3x3 window: identical to whole-image inference
    np.testing.assert_array_equal(classes[~edges], ref.argmax(0)[~edges])
    np.testing.assert_allclose(confidence[~edges], ref.max(0)[~edges], atol=1e-5)
    # on tile borders the blend keeps the error small (no seams): a border pixel's weight is tiny
    assert np.abs(confidence - ref.max(0))[edges].max() < 0.03
    assert (classes == ref.argmax(0)).mean() > 0.998
    assert sum(summary.class_counts.values()) == 300 * 417 and summary.nodata_pixels == 0
    assert list(summary.class_counts) == list(clf.classes)
    assert summary.megapixels_per_second > 0 and "Mpx/s" in summary.format()


def test_outputs_are_valid_cogs_with_colours_and_class_names(clf, tmp_path):
    opt_path, sar_path, *_ = write_pair(tmp_path, 700, 600, seed=1)  # > 512: internal tiles and overviews
    out = tmp_path / "lc.tif"
    summary = clf.classify_scene(opt_path, sar_path, out, confidence=tmp_path / "c8.tif", confidence_dtype="uint8",
                                 tile=128, overlap=32)
    for path in (out, tmp_path / "c8.tif"):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
    with rasterio.open(out) as src, rasterio.open(opt_path) as ref:
        assert src.crs == ref.crs and src.transform == ref.transform and src.shape == ref.shape
        assert src.dtypes == ("uint8",) and src.nodata == 255 and src.compression.name == "deflate"
        assert src.block_shapes == [(512, 512)] and src.overviews(1) == [2]
        assert src.descriptions == ("land cover class",)
        cmap = src.colormap(1)
        for i, colour in enumerate(clf.palette):
            assert cmap[i] == (*colour, 255)
        assert cmap[255][3] == 0
        assert json.loads(src.tags()["ASANET_CLASSES"]) == list(clf.classes)
        assert src.tags(1)["CLASS_1"] == clf.classes[1]
    with rasterio.open(tmp_path / "c8.tif") as src:
        assert src.dtypes == ("uint8",) and src.nodata == 0 and src.scales == (pytest.approx(1 / 255),)
        assert src.read(1).min() >= 64  # top class of 4 has p >= 1/4
    # QGIS style beside the map
    qml = ET.parse(tmp_path / "lc.qml").getroot()
    labels = [e.get("label") for e in qml.iter("paletteEntry")]
    assert labels == list(clf.classes)
    # the attribute table is GDAL's: a GDAL copy of the map carries it over
    assert summary.sidecars == (str(tmp_path / "lc.qml"), str(tmp_path / "lc.tif.aux.xml"))
    rasterio.shutil.copy(str(out), str(tmp_path / "copy.tif"), driver="GTiff")
    rat = ET.parse(tmp_path / "copy.tif.aux.xml").getroot().find(".//GDALRasterAttributeTable")
    rows = [[f.text for f in row.findall("F")] for row in rat.findall("Row")]
    assert [r[1] for r in rows] == list(clf.classes)
    assert [int(r[2]) for r in rows] == list(summary.class_counts.values())


def test_nodata_from_files_and_flags(clf, tmp_path):
    opt_path, sar_path, opt, sar = write_pair(tmp_path, 120, 150, seed=2)
    opt = np.maximum(opt, 1)
    opt[:, 10:30, 20:60] = 0  # nodata region in the optical file
    write_raster(opt_path, opt, nodata=0)
    sar_f = sar.astype(np.float32)
    sar_f[0, 80:, 100:] = -9999.0  # nodata region in the SAR, given by a flag
    write_raster(sar_path, sar_f)
    out, conf = tmp_path / "lc.tif", tmp_path / "conf.tif"
    summary = clf.classify_scene(opt_path, sar_path, out, confidence=conf, sar_nodata=-9999, sar_scale="none",
                                 tile=64, overlap=16)
    with rasterio.open(out) as src:
        classes = src.read(1)
    with rasterio.open(conf) as src:
        confidence = src.read(1)
    expected = np.zeros((120, 150), bool)
    expected[10:30, 20:60] = True
    expected[80:, 100:] = True
    np.testing.assert_array_equal(classes == 255, expected)
    np.testing.assert_array_equal(np.isnan(confidence), expected)
    assert summary.nodata_pixels == expected.sum()


def test_all_nodata_is_an_error_unless_allowed(clf, tmp_path):
    opt_path, sar_path, opt, _ = write_pair(tmp_path, 100, 90, seed=3)
    write_raster(opt_path, np.zeros_like(opt), nodata=0)
    out = tmp_path / "lc.tif"
    with pytest.raises(AsanetError, match="no pixel has both sensors .*every optical pixel .*--allow-empty"):
        clf.classify_scene(opt_path, sar_path, out, tile=64, overlap=16)
    assert not out.exists()
    summary = clf.classify_scene(opt_path, sar_path, out, tile=64, overlap=16, allow_empty=True)
    with rasterio.open(out) as src:
        assert (src.read(1) == 255).all()
    assert summary.tiles_skipped == summary.tiles and sum(summary.class_counts.values()) == 0


def test_scene_smaller_than_a_tile(clf, tmp_path):
    opt_path, sar_path, opt, sar = write_pair(tmp_path, 20, 27, seed=4)
    out = tmp_path / "lc.tif"
    summary = clf.classify_scene(opt_path, sar_path, out)  # default tile 512 shrinks to what the scene needs
    assert summary.tiles == 1 and summary.tile[0] % 32 == 0
    with rasterio.open(out) as src:
        classes = src.read(1)
    assert classes.shape == (20, 27)
    np.testing.assert_array_equal(classes, reference_probabilities(opt, sar).argmax(0))


class _Boom(RuntimeError):
    pass


def test_failure_mid_run_leaves_nothing_and_keeps_an_existing_output(clf, tmp_path, monkeypatch):
    opt_path, sar_path, *_ = write_pair(tmp_path, 128, 128, seed=5)
    calls = {"n": 0}
    real_infer = clf.runner.infer

    def flaky(feed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Boom("device lost")
        return real_infer(feed)

    monkeypatch.setattr(clf.runner, "infer", flaky)
    before = listing(tmp_path)
    with pytest.raises(_Boom):
        clf.classify_scene(opt_path, sar_path, tmp_path / "lc.tif", confidence=tmp_path / "c.tif",
                           quicklook=tmp_path / "q.png", tile=32, overlap=8, batch=1)
    assert listing(tmp_path) == before  # no output, no sidecar, no temporary file
    old = tmp_path / "old.tif"
    old.write_bytes(b"previous map")
    calls["n"] = 0
    with pytest.raises(_Boom):
        clf.classify_scene(opt_path, sar_path, old, tile=32, overlap=8, batch=1, overwrite=True)
    assert old.read_bytes() == b"previous map"
    assert listing(tmp_path) == sorted(before + ["old.tif"])


def test_existing_output_needs_overwrite(clf, tmp_path):
    opt_path, sar_path, *_ = write_pair(tmp_path, 64, 64, seed=6)
    out = tmp_path / "lc.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(Exception, match=r"lc\.tif: exists; pass --overwrite"):
        clf.classify_scene(opt_path, sar_path, out)
    assert out.read_bytes() == b"keep me"
    clf.classify_scene(opt_path, sar_path, out, overwrite=True)
    with rasterio.open(out) as src:
        assert src.shape == (64, 64)


@pytest.mark.parametrize("use_matplotlib", [True, False])
def test_quicklook_png(clf, tmp_path, monkeypatch, use_matplotlib):
    import asanet_rt.quicklook as quicklook

    if use_matplotlib:
        pytest.importorskip("matplotlib")
    real = quicklook.write_quicklook
    monkeypatch.setattr(quicklook, "write_quicklook",
                        lambda *a, **k: real(*a, **{**k, "use_matplotlib": use_matplotlib}))
    opt_path, sar_path, *_ = write_pair(tmp_path, 90, 200, seed=7)
    png = tmp_path / "lc.png"
    summary = clf.classify_scene(opt_path, sar_path, tmp_path / "lc.tif", quicklook=png, quicklook_size=300,
                                 tile=64, overlap=16)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert max(width, height) == 300  # the promised size, legend and title included
    assert b"Legend" in data and b"Title" in data and b"land cover: " in data
    with rasterio.open(tmp_path / "lc.tif") as src:
        present = set(np.unique(src.read(1)).tolist())
    for index, name in enumerate(clf.classes):  # present classes only
        assert (f"{name} #".encode() in data) == (index in present), name
    assert (b"nodata #" in data) == (255 in present)


def test_band_mapping_from_descriptions_colour_tags_or_refused(clf, tmp_path):
    from toy_models import make_toy_onnx

    opt_path, sar_path, opt, sar = write_pair(tmp_path, 40, 48, seed=8)
    # a Sentinel-2 style stack B02, B03, B04, B08: the toy (red, green, blue) needs bands 3, 2, 1
    stack = tmp_path / "s2.tif"
    write_raster(stack, np.concatenate([opt[::-1], opt[:1]]).astype(np.uint16))  # uint16: GDAL sees no alpha
    with rasterio.open(stack, "r+") as dst:
        for i, name in enumerate(("B02", "B03", "B04", "B08"), start=1):
            dst.set_band_description(i, name)
    clf.classify_scene(stack, sar_path, tmp_path / "lc.tif", optical_scale="linear:0:255")
    with rasterio.open(tmp_path / "lc.tif") as src:
        np.testing.assert_array_equal(src.read(1), reference_probabilities(opt, sar).argmax(0))
    # colour tags red, green, blue (GDAL's for 3-band byte files): a blue, green, red model reads bands 3, 2, 1
    with Classifier.open(make_toy_onnx(tmp_path / "bgr.onnx", optical_bands=("blue", "green", "red"))) as bgr:
        bgr.classify_scene(opt_path, sar_path, tmp_path / "lc2.tif")
        bgr.classify_scene(opt_path, sar_path, tmp_path / "lc3.tif", optical_bands=(3, 2, 1))
        with rasterio.open(tmp_path / "lc2.tif") as a, rasterio.open(tmp_path / "lc3.tif") as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))
    # no descriptions, no colour tags (a 3-band uint16 file): refused, unless --optical-bands says
    plain = tmp_path / "plain.tif"
    write_raster(plain, opt.astype(np.uint16))
    with pytest.raises(AsanetError, match=r"plain\.tif: cannot tell which of its 3 bands hold red, green, blue"):
        clf.classify_scene(plain, sar_path, tmp_path / "lc4.tif", optical_scale="linear:0:255")
    clf.classify_scene(plain, sar_path, tmp_path / "lc4.tif", optical_scale="linear:0:255", optical_bands=(1, 2, 3))


def test_quicklook_legend_lists_present_classes_and_nodata():
    from asanet_rt.quicklook import NODATA_COLOUR, legend_entries

    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    classes = np.array([[0, 2], [255, 2]], np.uint8)
    assert legend_entries(classes, ("a", "b", "c"), palette) == [("a", (255, 0, 0)), ("c", (0, 0, 255)),
                                                                  ("nodata", NODATA_COLOUR)]
    # counts of the whole map win over the preview's pixels (a class too small to survive the downscale)
    assert [n for n, _ in legend_entries(classes[:1, 1:], ("a", "b", "c"), palette, counts=[0, 5, 1])] == ["b", "c"]
