"""Tile windows, blending weights and the row-band blender, without a model."""
from __future__ import annotations

import numpy as np
import pytest

from asanet_rt.blend import NODATA_CLASS, RowBlender
from asanet_rt.errors import AsanetError
from asanet_rt.tiling import (WEIGHT_FLOOR, TileGrid, aligned_overlap, axis_origins, blend_window, default_overlap,
                               edge_margin, grid_stride, pad_reflect)


@pytest.mark.parametrize("length,tile,overlap", [(1000, 256, 64), (257, 256, 64), (100, 256, 64), (80, 128, 64),
                                                 (31, 32, 0), (5000, 512, 128), (96, 32, 16), (1000, 256, 48),
                                                 (999, 512, 96), (1001, 256, 16)])
def test_origins_cover_the_scene_with_margin_on_the_32px_phase(length, tile, overlap):
    ys = axis_origins(length, tile, overlap)
    assert ys == sorted(set(ys))
    # every tile on the same 32 px phase as whole-image inference, including the last one
    assert all(y % 32 == 0 for y in ys)
    margin = edge_margin(aligned_overlap(tile, overlap))
    assert margin <= 32
    assert ys[0] <= -margin or len(ys) == 1 and ys[0] <= 0
    assert ys[-1] + tile >= length + margin
    assert all(y + tile > 0 and y < length for y in ys)  # no tile of padding only
    for a, b in zip(ys, ys[1:]):
        assert b - a == grid_stride(tile, overlap) and (tile - (b - a) >= overlap or tile == 32)  # 32: no room


def test_overlap_is_rounded_up_to_a_32px_stride_and_defaults_to_192px():
    assert grid_stride(256, 48) == 192 and aligned_overlap(256, 48) == 64
    assert aligned_overlap(512, 64) == 64 and aligned_overlap(256, 0) == 0
    assert default_overlap(512) == 192 and default_overlap(1024) == 192 and default_overlap(96) == 48


def test_a_large_overlap_does_not_push_the_scene_edge_deeper():
    # 1024 px with 512 px tiles and 192 px overlap: three tiles per axis, not four (a 96 px edge margin needs four)
    assert len(axis_origins(1024, 512, 192)) == 3 and edge_margin(192) == 32 and edge_margin(16) == 16


def test_small_scene_shrinks_the_tile():
    grid = TileGrid.plan(40, 1000, 512, 128, 32)
    assert grid.tile_h == 128 and grid.tile_w == 512 and grid.rows == 1  # 40 px + 2 x 32 px margin, rounded up
    with pytest.raises(AsanetError, match="overlap"):
        axis_origins(100, 64, 64)


def test_blend_window_is_smooth_floored_and_a_partition_of_unity():
    w = blend_window(64, 64, 16, 16)
    assert w.dtype == np.float32 and not w.flags.writeable
    assert w.min() >= WEIGHT_FLOOR ** 2 - 1e-7 and w.max() == pytest.approx(1.0)
    row = w[32]
    # two tiles 48 px apart: their 1-D tapers over the 16 px overlap sum to a constant
    pair = (row[48:] - WEIGHT_FLOOR) + (row[:16] - WEIGHT_FLOOR)
    np.testing.assert_allclose(pair, pair[0], atol=1e-6)
    assert np.abs(np.diff(row)).max() < 0.2  # no jumps


def test_pad_reflect_handles_large_pads_and_single_pixels():
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    p = pad_reflect(a, 5, 5, 1, 1)
    assert p.shape == (1, 13, 6) and p[0, 5, 1] == 0 and p[0, 4, 1] == 4
    assert pad_reflect(np.ones((1, 1, 1)), 2, 2, 2, 2).shape == (1, 5, 5)


def test_row_blender_reproduces_constant_scores_and_marks_nodata():
    grid = TileGrid.plan(70, 90, 32, 8, 32)
    blender = RowBlender(grid, num_classes=3)
    scores = np.zeros((3, 32, 32), np.float32)
    scores[2] = 0.7
    scores[0] = 0.3
    out = []
    valid_rows = np.ones((70, 90), bool)
    valid_rows[:, :5] = False
    for r, y in enumerate(grid.ys):
        y0, y1 = max(0, y), min(70, y + 32)
        out += blender.start_band(r, y0, valid_rows[y0:y1], grid.cols)
        for c in range(grid.cols):
            out += blender.add(r, c, scores)
    assert blender.current == grid.rows
    assert [o.y0 for o in out] == sorted(o.y0 for o in out)
    classes = np.concatenate([o.classes for o in out])
    conf = np.concatenate([o.confidence for o in out])
    assert classes.shape == (70, 90) and blender.acc.shape == (3, 32, 90)  # one band in memory
    assert (classes[:, 5:] == 2).all() and (classes[:, :5] == NODATA_CLASS).all()
    np.testing.assert_allclose(conf[:, 5:], 0.7, atol=1e-6)
    assert np.isnan(conf[:, :5]).all()


@pytest.mark.parametrize("h,w,tile,overlap", [(1000, 777, 256, 64), (300, 1300, 512, 128), (300, 300, 128, 48)])
def test_row_blender_equals_a_whole_scene_weighted_mean(h, w, tile, overlap):
    # band-by-band accumulation, buffer shifts included, gives the plain weighted mean of every tile
    rng = np.random.default_rng(0)
    grid, k = TileGrid.plan(h, w, tile, overlap, 32), 4
    scores = {(r, c): rng.random((k, grid.tile_h, grid.tile_w)).astype(np.float32)
              for r in range(grid.rows) for c in range(grid.cols)}
    wt = grid.weights()
    acc, wsum = np.zeros((k, h, w)), np.zeros((h, w))
    for (r, c), s in scores.items():
        y, x = grid.ys[r], grid.xs[c]
        y0, y1, x0, x1 = max(y, 0), min(y + grid.tile_h, h), max(x, 0), min(x + grid.tile_w, w)
        acc[:, y0:y1, x0:x1] += s[:, y0 - y:y1 - y, x0 - x:x1 - x] * wt[y0 - y:y1 - y, x0 - x:x1 - x]
        wsum[y0:y1, x0:x1] += wt[y0 - y:y1 - y, x0 - x:x1 - x]
    blender, out = RowBlender(grid, k, keep_scores=True), []
    for r, y in enumerate(grid.ys):
        y0, y1 = max(0, y), min(h, y + grid.tile_h)
        out += blender.start_band(r, y0, np.ones((y1 - y0, w), bool), grid.cols)
        for c in range(grid.cols):
            out += blender.add(r, c, scores[(r, c)])
    np.testing.assert_array_equal(np.concatenate([o.classes for o in out]), acc.argmax(0))
    np.testing.assert_allclose(np.concatenate([o.scores for o in out], axis=1), acc / wsum, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([o.confidence for o in out]), (acc / wsum).max(0), atol=1e-6)
