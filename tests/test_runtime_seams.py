"""Tile borders leave no seams: class changes along tile lines vs the median line, on a real scene and model.

The demo checkpoint classifies the real Jutland sample (demo/scene) upsampled to 768 x 448 px, red and blue swapped:
a scene unlike its training data, where the model is unsure and each tile's own content sways it most (as with
another sensor). That is where seams show first: with the former defaults for this model (128 px tiles, 32 px
overlap) a blend crossover changes class in ~29x the rows of the median column (or of whole-image inference there).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from seams import SCENES, seam_report, upsample  # noqa: E402

pytest.importorskip("torch", reason="the demo checkpoint runs on the torch backend (pip install 'asanet-rt[export]')")

WIDTH, HEIGHT = 768, 448
#: A tile line counts as a seam above this; clean maps stay below ~2.5 (straight features and noise).
SEAM_LIMIT = 4.0


@pytest.fixture(scope="module")
def demo():
    from asanet_rt.classifier import Classifier

    with Classifier.open(ROOT / "demo" / "asanet_demo.pth", backend="torch", threads=2) as clf:
        yield clf


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seams")
    optical, sar, bands, scale = SCENES["jutland-swapped"]
    return (upsample(optical, folder / "opt.tif", WIDTH, HEIGHT), upsample(sar, folder / "sar.tif", WIDTH, HEIGHT),
            bands, scale, folder)


def _classify(demo, scene, name, **tiling):
    from asanet_rt.tiling import TileGrid

    optical, sar, bands, scale, folder = scene
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = demo.classify_scene(optical, sar, folder / f"{name}.tif", optical_bands=bands,
                                      optical_scale=scale, sar_scale="db:-25:0", overwrite=True, sidecars=False,
                                      **tiling)
    with rasterio.open(folder / f"{name}.tif") as src:
        classes = src.read(1)
    return classes, TileGrid.plan(summary.height, summary.width, summary.tile[0], summary.overlap,
                                  demo.tile_range[0])


def test_default_tiling_leaves_no_seams_and_matches_whole_image(demo, scene):
    whole, _ = _classify(demo, scene, "whole", tile=WIDTH, overlap=0)
    tiled, grid = _classify(demo, scene, "default")
    assert grid.count > 1
    report = seam_report(tiled, whole, grid)
    assert report["seam_ratio_max"] < SEAM_LIMIT, report["seam_ratio"]
    assert report["agreement_pct"] > 95.0
    # the check itself sees seams: small tiles with a small overlap show straight class edges
    small, small_grid = _classify(demo, scene, "small", tile=128, overlap=32, batch=16)
    bad = seam_report(small, whole, small_grid)
    assert bad["seam_ratio_max"] > 2 * SEAM_LIMIT, bad["seam_ratio"]
    assert bad["agreement_pct"] < report["agreement_pct"]


def test_seam_report_counts_changes_on_tile_lines():
    from asanet_rt.tiling import TileGrid

    grid = TileGrid.plan(256, 256, 128, 64, 32)
    classes = np.zeros((256, 256), np.uint8)
    classes[:, 128:] = 1  # a straight class edge on a blend crossover
    classes[::7, ::5] = 2  # some texture, so the median line has changes
    report = seam_report(classes, np.zeros_like(classes), grid)
    assert report["seam_ratio"]["crossover"][2] == 128 and report["seam_ratio_max"] > 2 * SEAM_LIMIT
    assert seam_report(classes, classes, grid)["seam_ratio_max"] <= 1.0
