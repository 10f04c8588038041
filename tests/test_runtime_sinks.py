"""Output sinks: ``classify_scene(..., outputs=[...])``, one blender for scenes and arrays, all-or-nothing writes."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from asanet_rt.classifier import Classifier
from asanet_rt.errors import AsanetError
from asanet_rt.sinks import (AttributeTableSink, ConfidenceSink, MapSink, ProbabilitySink, QuicklookSink, Sink,
                             StyleSink, default_outputs)

from runtime_helpers import listing, toy_model, write_pair  # noqa: F401 - fixture
from toy_models import make_toy_onnx


@pytest.fixture(scope="module")
def clf(toy_model):
    with Classifier.open(toy_model) as classifier:
        yield classifier


class Recorder(Sink):
    """A sink that keeps what it is fed (a new output kind is one subclass)."""

    kind = "recorder"

    def __init__(self, path, fail: bool = False) -> None:
        super().__init__(path)
        self.rows: list[tuple[int, int]] = []
        self.fail = fail

    def write(self, rows):
        self.rows.append((rows.y0, rows.classes.shape[0]))

    def finish(self, ctx):
        if self.fail:
            raise RuntimeError("disk on fire")
        self.tmp.write_text(f"{len(self.rows)} parts, {int(ctx.counts.sum())} px")


def test_probability_sink_agrees_with_the_map_and_the_confidence(clf, tmp_path):
    opt_path, sar_path, *_ = write_pair(tmp_path, 150, 230, seed=2)
    paths = {k: tmp_path / f"{k}.tif" for k in ("map", "conf", "prob")}
    summary = clf.classify_scene(opt_path, sar_path, outputs=[
        ProbabilitySink(paths["prob"]), ConfidenceSink(paths["conf"]), MapSink(paths["map"])], tile=64, overlap=16)
    assert summary.outputs == {"map": str(paths["map"]), "confidence": str(paths["conf"]),
                               "probabilities": str(paths["prob"])}
    assert summary.sidecars == () and summary.backend == "onnxruntime"
    assert cog_validate(str(paths["prob"]))[0]
    with rasterio.open(paths["prob"]) as src:
        prob = src.read()
        assert src.count == clf.num_classes and src.descriptions[1].endswith(clf.classes[1])
    with rasterio.open(paths["map"]) as src:
        classes = src.read(1)
    with rasterio.open(paths["conf"]) as src:
        conf = src.read(1)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prob.argmax(axis=0), classes)
    np.testing.assert_allclose(prob.max(axis=0), conf, atol=1e-6)


def test_scene_and_array_prediction_share_one_blender(tmp_path):
    model = make_toy_onnx(tmp_path / "small.onnx", tile=(32, 64), batch=(1, 2))  # arrays > 64 px get tiled
    opt_path, sar_path, opt, sar = write_pair(tmp_path, 150, 170, seed=5)
    with Classifier.open(model) as small:
        small.classify_scene(opt_path, sar_path, outputs=[ProbabilitySink(tmp_path / "p.tif")], tile=64,
                             overlap=16, sar_scale="none")
        in_memory = small.predict_proba(opt, sar, tile=64, overlap=16)
    with rasterio.open(tmp_path / "p.tif") as src:
        np.testing.assert_allclose(src.read(), in_memory, atol=1e-6)


def test_a_custom_sink_gets_every_row_once_in_order(clf, tmp_path):
    opt_path, sar_path, *_ = write_pair(tmp_path, 130, 90, seed=3)
    rec = Recorder(tmp_path / "rows.txt")
    clf.classify_scene(opt_path, sar_path, outputs=[MapSink(tmp_path / "lc.tif"), rec], tile=64, overlap=16)
    starts = [y0 for y0, _ in rec.rows]
    assert starts == sorted(starts) and starts[0] == 0
    assert sum(n for _, n in rec.rows) == 130
    assert all(a + n == b for (a, n), (b, _) in zip(rec.rows, rec.rows[1:]))
    assert (tmp_path / "rows.txt").read_text() == f"{len(rec.rows)} parts, {130 * 90} px"


def test_one_failing_sink_leaves_no_output_at_all(clf, tmp_path):
    opt_path, sar_path, *_ = write_pair(tmp_path, 100, 100, seed=4)
    old_map = tmp_path / "lc.tif"
    old_map.write_bytes(b"previous map")
    before = listing(tmp_path)
    with pytest.raises(RuntimeError, match="disk on fire"):
        clf.classify_scene(opt_path, sar_path, outputs=[
            *default_outputs(old_map, confidence=tmp_path / "c.tif"), Recorder(tmp_path / "r.txt", fail=True)],
            tile=64, overlap=16, overwrite=True)
    assert listing(tmp_path) == before and old_map.read_bytes() == b"previous map"


def test_sidecars_follow_the_overwrite_rule_of_the_map(clf, tmp_path):
    opt_path, sar_path, *_ = write_pair(tmp_path, 64, 64, seed=6)
    (tmp_path / "lc.qml").write_text("my own style")
    with pytest.raises(AsanetError, match=r"lc\.qml: exists; pass --overwrite"):
        clf.classify_scene(opt_path, sar_path, tmp_path / "lc.tif")
    assert not (tmp_path / "lc.tif").exists() and (tmp_path / "lc.qml").read_text() == "my own style"
    clf.classify_scene(opt_path, sar_path, tmp_path / "lc.tif", overwrite=True)
    assert "paletteEntry" in (tmp_path / "lc.qml").read_text()


def test_outputs_are_checked_before_any_work(clf, tmp_path):
    opt_path, sar_path, *_ = write_pair(tmp_path, 64, 64, seed=7)
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(AsanetError, match=r"folder\.tif: is a folder"):
        clf.classify_scene(opt_path, sar_path, outputs=[MapSink(tmp_path / "folder.tif")], overwrite=True)
    with pytest.raises(AsanetError, match="one output of each kind"):
        clf.classify_scene(opt_path, sar_path, outputs=[MapSink(tmp_path / "a.tif"), MapSink(tmp_path / "b.tif")])
    with pytest.raises(AsanetError, match="not both"):
        clf.classify_scene(opt_path, sar_path, tmp_path / "a.tif", outputs=[MapSink(tmp_path / "b.tif")])
    with pytest.raises(AsanetError, match="quick-look is drawn from the map"):
        clf.classify_scene(opt_path, sar_path, outputs=[QuicklookSink(tmp_path / "q.png")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.tif", "optical.tif", "sar.tif"]
    with pytest.raises(AsanetError, match="--quicklook-size 0"):
        QuicklookSink(tmp_path / "q.png", size=0)


def test_default_outputs_and_the_deprecated_keywords(clf, tmp_path):
    kinds = [type(s) for s in default_outputs(tmp_path / "lc.tif", confidence=tmp_path / "c.tif")]
    assert kinds == [MapSink, StyleSink, AttributeTableSink, ConfidenceSink]
    opt_path, sar_path, *_ = write_pair(tmp_path, 64, 64, seed=8)
    with pytest.warns(DeprecationWarning, match="outputs="):
        summary = clf.classify_scene(opt_path, sar_path, tmp_path / "lc.tif", confidence=tmp_path / "c.tif")
    assert summary.confidence == str(tmp_path / "c.tif") and len(summary.sidecars) == 2


def test_summary_reports_ground_area_and_overlap_factor(clf, tmp_path):
    from affine import Affine
    from rasterio.crs import CRS

    from asanet_rt.scene_pipeline import ground_area_km2

    opt_path, sar_path, *_ = write_pair(tmp_path, 100, 120, seed=9)  # 10 m pixels in UTM
    summary = clf.classify_scene(opt_path, sar_path, tmp_path / "lc.tif", tile=64, overlap=16)
    assert summary.area_km2 == pytest.approx(100 * 120 * 100 / 1e6)
    assert summary.km2_per_second == pytest.approx(summary.area_km2 / summary.seconds)
    assert summary.overlap_factor == pytest.approx(summary.tiles * 64 * 64 / (100 * 120))
    assert "km2/s" in summary.format() and "onnxruntime" in summary.format()
    # a degree is 110.574 km (latitude) x 111.320 km (longitude) at the equator, 111.412 x 55.800 km at 60 N
    second = 1 / 3600
    equator = dict(crs=CRS.from_epsg(4326), width=1, height=1, transform=Affine(second, 0, 0, 0, -second, 0))
    north = dict(equator, transform=Affine(second, 0, 0, 0, -second, 60 + second / 2))
    assert ground_area_km2(equator) == pytest.approx(110.574 * 111.320 / 3600 ** 2, rel=1e-4)
    assert ground_area_km2(north) == pytest.approx(111.412 * 55.800 / 3600 ** 2, rel=1e-4)
    assert ground_area_km2(dict(equator, crs=None)) is None
