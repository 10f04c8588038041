"""Bad input: each a clear error naming the file or flag, and nothing written."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from asanet_rt.classifier import Classifier
from asanet_rt.errors import AsanetError
from asanet_rt.metadata import METADATA_KEY, MetadataError
from asanet_rt.scaling import RangeWarning

from runtime_helpers import listing, toy_model, write_pair, write_raster  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def clf(toy_model):
    with Classifier.open(toy_model) as classifier:
        yield classifier


@pytest.fixture()
def pair(tmp_path):
    opt_path, sar_path, opt, sar = write_pair(tmp_path, 48, 64, seed=21)
    return tmp_path, opt_path, sar_path, opt, sar


def _fails(clf, folder, match, *args, **kwargs):
    before = listing(folder)
    with pytest.raises(AsanetError, match=match):
        clf.classify_scene(*args, **kwargs)
    assert listing(folder) == before


def test_missing_and_unreadable_files(clf, pair):
    folder, opt_path, sar_path, *_ = pair
    out = folder / "lc.tif"
    _fails(clf, folder, r"nothere\.tif: optical file not found", folder / "nothere.tif", sar_path, out)
    _fails(clf, folder, r"gone\.tif: SAR file not found", opt_path, folder / "gone.tif", out)
    text = folder / "notes.tif"
    text.write_text("not a raster")
    _fails(clf, folder, r"notes\.tif: not a readable raster", text, sar_path, out)
    _fails(clf, folder, r"notes\.tif: not a readable raster", opt_path, text, out)
    _fails(clf, folder, r"folder", folder, sar_path, out)


def test_band_count_and_band_numbers(clf, pair):
    folder, opt_path, sar_path, opt, sar = pair
    out = folder / "lc.tif"
    four = write_raster(folder / "four.tif", np.concatenate([opt, sar]))
    _fails(clf, folder, r"four\.tif: has 4 bands; pass --optical-bands .*red, green, blue", four, sar_path, out)
    two = write_raster(folder / "two.tif", opt[:2])
    _fails(clf, folder, r"two\.tif: has 2 bands", two, sar_path, out)
    _fails(clf, folder, r"two\.tif: --optical-bands band 3 is out of range \(the file has 2 bands\)", two,
           sar_path, out, optical_bands="1,2,3")
    _fails(clf, folder, r"--optical-bands 1,2: give 3 bands", four, sar_path, out, optical_bands="1,2")
    _fails(clf, folder, r"--optical-bands 'a,b,c'", four, sar_path, out, optical_bands="a,b,c")
    _fails(clf, folder, r"sar\.tif: --sar-band band 2 is out of range \(the file has 1 band\)", opt_path,
           sar_path, out, sar_band=2)
    # a 4-band file with the bands picked explicitly works
    clf.classify_scene(four, sar_path, out, optical_bands="1,2,3")
    assert out.exists()


def test_scaling_errors_and_warnings(clf, pair):
    folder, opt_path, sar_path, opt, sar = pair
    out = folder / "lc.tif"
    refl = write_raster(folder / "refl.tif", opt.astype(np.uint16) * 20)
    _fails(clf, folder, r"refl\.tif: uint16 data needs an explicit --optical-scale .*reflectance:0:3000", refl,
           sar_path, out, optical_bands=(1, 2, 3))
    db = write_raster(folder / "db.tif", -(sar.astype(np.float32) / 10))
    _fails(clf, folder, r"db\.tif: float32 data needs an explicit --sar-scale .*db:-25:0", opt_path, db, out)
    _fails(clf, folder, r"--sar-scale 'db:0'", opt_path, db, out, sar_scale="db:0")
    _fails(clf, folder, r"--optical-scale 'gamma'", opt_path, db, out, optical_scale="gamma")
    with pytest.warns(RangeWarning, match=r"refl\.tif: .*outside 0-255.*--optical-scale"):
        summary = clf.classify_scene(refl, db, out, optical_scale="none", sar_scale="db:-25:0",
                                     optical_bands=(1, 2, 3))
    assert summary.warnings and out.exists()


def test_bad_options_and_outputs(clf, pair):
    folder, opt_path, sar_path, *_ = pair
    out = folder / "lc.tif"
    _fails(clf, folder, r"--tile 100", opt_path, sar_path, out, tile=100)
    _fails(clf, folder, r"--tile 1024", opt_path, sar_path, out, tile=1024)
    _fails(clf, folder, r"--overlap 40", opt_path, sar_path, out, tile=64, overlap=40)
    _fails(clf, folder, r"--batch 9", opt_path, sar_path, out, batch=9)
    _fails(clf, folder, r"--sar-resampling 'sinc'", opt_path, sar_path, out, sar_resampling="sinc")
    _fails(clf, folder, r"output folder", opt_path, sar_path, folder / "no" / "lc.tif")
    _fails(clf, folder, r"optical\.tif: is an input", opt_path, sar_path, opt_path, overwrite=True)
    _fails(clf, folder, r"output paths must differ", opt_path, sar_path, out, confidence=out)


def _model_with_metadata(src, dst, text):
    model = onnx.load(str(src))
    del model.metadata_props[:]
    if text is not None:
        model.metadata_props.add(key=METADATA_KEY, value=text)
    onnx.save(model, str(dst))
    return dst


def test_model_metadata_missing_or_newer(toy_model, tmp_path):
    with pytest.raises(MetadataError, match=r"plain\.onnx: no asanet-rt metadata"):
        Classifier.open(_model_with_metadata(toy_model, tmp_path / "plain.onnx", None))
    data = json.loads(_meta_text(toy_model))
    data["format_version"] = 7
    with pytest.raises(MetadataError, match=r"new\.onnx: metadata format 7 .* newer"):
        Classifier.open(_model_with_metadata(toy_model, tmp_path / "new.onnx", json.dumps(data)))
    data = json.loads(_meta_text(toy_model))
    data["export"] = None
    with pytest.raises(AsanetError, match=r"noexport\.onnx: the model's metadata has no export section"):
        Classifier.open(_model_with_metadata(toy_model, tmp_path / "noexport.onnx", json.dumps(data)))


def _meta_text(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY]
