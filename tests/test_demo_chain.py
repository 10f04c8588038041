"""The README's first command, in its fast CI form: checkpoint -> ONNX fp32/int8 -> engine -> maps -> latency."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import run_demo  # noqa: E402


def test_demo_chain_fast(tmp_path, capsys):
    assert run_demo.main(["--out", str(tmp_path), "--fast"]) == 0
    out = capsys.readouterr().out
    assert "parana map vs its LULC labels: int8 IoU % water 9" in out  # in-sample tile: water where water is
    for name in ("parana", "punjab (the calibration scene)", "jutland"):  # per-scene int8 vs fp32 agreement
        assert f"{name}: int8 map agrees with the fp32 map on " in out
    assert "fp32 IoU % water 9" in out
    for name in ("demo_fp32.onnx", "demo_int8_cpu.onnx", "demo_int8_cpu.report.json", "punjab_landcover.tif",
                 "parana_landcover.tif", "parana_quicklook.png",
                 "punjab_quicklook.png", "jutland_landcover.tif", "latency.json"):
        assert (tmp_path / name).is_file(), name
        assert str(tmp_path / name) in out
    if importlib.util.find_spec("tensorrt_rtx"):
        assert (tmp_path / "demo_fp32.engine").stat().st_size > 100_000
    report = json.loads((tmp_path / "demo_int8_cpu.report.json").read_text())
    assert report["vs_reference"]["argmax_agreement"] > 0.9
    # the Punjab scene gives 4 tiles at 128 px; --calib-tiles 8 asked: 3 calibrate, 1 is held out for the headline
    assert report["evaluation"]["held_out"] and report["int8"]["calibration"]["tiles"] == 3
    assert report["in_sample"]["tiles"] == 3 and "calibrating on 3" in report["warnings"][0]
    with rasterio.open(tmp_path / "punjab_landcover.tif") as src, \
            rasterio.open(ROOT / "demo" / "scene" / "punjab_s2_rgb.tif") as optical:
        assert src.crs == optical.crs and src.transform == optical.transform
        classes = src.read(1)
        assert len(src.colormap(1)) >= 6
    valid = classes[classes != 255]
    assert valid.size > 0.9 * classes.size and valid.max() < 6
    latency = json.loads((tmp_path / "latency.json").read_text())
    assert [m["path"] for m in latency["models"]][:2] == [str(tmp_path / "demo_fp32.onnx"),
                                                          str(tmp_path / "demo_int8_cpu.onnx")]
