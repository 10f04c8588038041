"""The committed demo model (demo/asanet_demo.pth, made by tools/train_demo.py) and its sample scenes.

Checks that the checkpoint is a loadable official-format mmengine file, that the loader derives the right
metadata from it, and that the model still scores what train_log.json says on the held-out tile.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from asanet_rt.export import load_checkpoint, read_checkpoint
from asanet_rt.export.official_config import parse_official_config
from asanet_rt.metrics import ConfusionMatrix
from asanet_rt.scaling import Scale
from asanet_rt.scene import Scene

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo"
CHECKPOINT = DEMO / "asanet_demo.pth"
SCENE = DEMO / "scene"
#: Esri / Impact Observatory LULC legend colours of the demo classes.
PALETTE = {"water": (65, 155, 223), "trees": (57, 125, 73), "crops": (228, 150, 53),
           "bare_ground": (165, 155, 143), "snow_ice": (168, 235, 255), "rangeland": (227, 226, 195)}
#: Band number of each colour in an S2RGB file (stored R, G, B).
RGB_FILE_BANDS = {"red": 1, "green": 2, "blue": 3}


@pytest.fixture(scope="module")
def log() -> dict:
    return json.loads((DEMO / "train_log.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(CHECKPOINT)


@pytest.fixture
def one_thread():
    # The IoU in the log was computed with one thread; the same thread count gives the same float rounding.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_checkpoint_is_official_mmengine_format(log):
    assert CHECKPOINT.stat().st_size < 8_000_000
    assert hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest() == log["checkpoint"]["sha256"]
    # Only plain types inside: even torch's strictest loader accepts it.
    raw = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(raw) == {"meta", "state_dict", "message_hub"}
    assert raw["meta"]["mmengine_version"] == "0.9.0"
    keys = list(raw["state_dict"])
    for prefix in ("backbone.backbone.", "backbone.backbone2.", "backbone.FRMs.", "backbone.FFMs.",
                   "decode_head.", "auxiliary_head.convs.0.conv.", "auxiliary_head.convs.0.bn.",
                   "auxiliary_head.conv_seg."):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert all(v.dtype in (torch.float32, torch.int64) for v in raw["state_dict"].values())


def test_config_text_gives_preprocessing(log):
    cfg = parse_official_config(read_checkpoint(CHECKPOINT).meta["cfg"])
    pre = log["preprocessing"]
    assert cfg.mean == pytest.approx(pre["mean"]) and cfg.std == pytest.approx(pre["std"])
    assert len(cfg.mean) == len(cfg.std) == 6
    assert cfg.mean[3] == cfg.mean[4] == cfg.mean[5]  # SAR: one band replicated to 3 channels
    assert cfg.bgr_to_rgb is False
    assert cfg.crop_size == (log["training"]["crop"],) * 2
    assert cfg.pool_scales == (1, 2, 3, 6)


def test_loader_metadata(model, log):
    meta = model.metadata
    arch = log["arch"]
    assert meta.arch.depths == tuple(arch["depths"]) and meta.arch.channels == tuple(arch["channels"])
    assert meta.arch.decoder_channels == arch["decoder_channels"]
    assert meta.classes == tuple(log["classes"]) == tuple(PALETTE)
    assert meta.palette == tuple(PALETTE.values())
    assert meta.optical_channels == ("blue", "green", "red")
    pre = log["preprocessing"]
    assert meta.optical_mean + meta.sar_mean == pytest.approx(pre["mean"])
    assert meta.optical_std + meta.sar_std == pytest.approx(pre["std"])
    assert meta.native_tile == log["training"]["crop"]
    assert sum(p.numel() for p in model.parameters()) == arch["parameters"] < 1_500_000
    assert model.aux_params == arch["auxiliary_head_parameters"] > 0  # present in the file, ignored


def test_heldout_iou_matches_log(model, log, one_thread):
    from runtime_helpers import TERRAMESH

    tile, data = log["heldout_tile"], TERRAMESH
    meta = model.metadata
    with rasterio.open(data / "S2RGB" / f"{tile}.tif") as ds:
        # Channel order from the metadata, not hard-coded: this checks that it names the training order.
        optical = ds.read([RGB_FILE_BANDS[c] for c in meta.optical_channels]).astype(np.float32)
    with rasterio.open(data / "S1RTC" / f"{tile}.tif") as ds:
        low, high = log["preprocessing"]["sar_db_window"]
        sar = Scale.parse(f"db:{low:g}:{high:g}").apply(ds.read(1))
    with rasterio.open(data / "LULC" / f"{tile}.tif") as ds:
        lulc = ds.read(1)
    label = np.full(lulc.shape, 255, np.uint8)
    for index, code in enumerate(log["lulc_codes"]):
        label[lulc == code] = index

    mean, std = np.array(meta.optical_mean + meta.sar_mean), np.array(meta.optical_std + meta.sar_std)
    opt_t = torch.from_numpy((optical - mean[:3, None, None]) / std[:3, None, None]).float()[None]
    sar_t = torch.from_numpy((np.stack([sar] * 3) - mean[3:, None, None]) / std[3:, None, None]).float()[None]
    with torch.no_grad():
        pred = model(opt_t, sar_t)[0].argmax(0).numpy()
    cm = ConfusionMatrix(meta.num_classes)
    cm.update(pred, label)
    got = cm.result(meta.classes).to_dict()["per_class"]
    expected = log["evaluation"]["s2rgb"]["heldout"]["per_class_IoU"]
    for name, iou in expected.items():
        if iou is None:
            assert got[name]["IoU"] is None, name
        else:
            assert got[name]["IoU"] == pytest.approx(iou, abs=1e-3), name


@pytest.mark.parametrize("prefix, sar_name", [("punjab", "punjab_s1_vv_db.tif"),
                                              ("jutland", "jutland_s1_vv_db_epsg4326.tif")])
def test_sample_scene_needs_alignment(prefix, sar_name):
    optical, sar = SCENE / f"{prefix}_s2_rgb.tif", SCENE / sar_name
    with rasterio.open(optical) as o, rasterio.open(sar) as s:
        assert o.count == 3 and o.dtypes[0] == "uint8" and s.dtypes[0] == "float32"
        assert (o.crs, o.transform, o.shape) != (s.crs, s.transform, s.shape)
    with Scene.open(optical, sar, optical_scale="none", sar_scale="db:-25:0") as scene:
        assert scene.alignment == "warped"
        block = scene.read_rows(0, scene.height)
    assert block.valid.mean() > 0.97  # the SAR covers the optical footprint


def test_sample_scene_notice_and_size():
    notice = (SCENE / "NOTICE").read_text()
    for phrase in ("Contains modified Copernicus Sentinel data", "CC BY 4.0", "CC BY-SA 4.0", "Apache-2.0",
                   "SSL4EO-S12", "TerraMesh"):
        assert phrase in notice
    assert sum(p.stat().st_size for p in SCENE.iterdir()) < 2_000_000
