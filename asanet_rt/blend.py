"""Accumulate weighted tile scores one row band at a time and hand back finished rows (memory ~ one band)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tiling import TileGrid

#: Class value of pixels without data in both sensors.
NODATA_CLASS = 255


@dataclass
class FinishedRows:
    """Scene rows ``y0:y0+len(classes)`` whose every overlapping tile has been blended."""

    y0: int
    classes: np.ndarray  # (h, W) uint8, NODATA_CLASS where invalid
    confidence: np.ndarray  # (h, W) float32, NaN where invalid
    valid: np.ndarray  # (h, W) bool
    scores: np.ndarray | None = None  # (K, h, W) float32 blended per-class scores, NaN where invalid (if kept)


class RowBlender:
    """Blends the tiles of a :class:`TileGrid` band by band.

    Feed it ``start_band`` (rows' validity and how many tiles to expect) and ``add`` (tile scores) in grid order;
    each call returns the rows it finished. Tiles skipped for lack of data are simply never added. The buffers
    hold one tile height of full-width rows: memory grows with the scene width, never its height.
    ``keep_scores`` also hands back the blended per-class scores (for probability outputs and in-memory
    prediction); otherwise only classes and confidence.
    """

    def __init__(self, grid: TileGrid, num_classes: int, keep_scores: bool = False) -> None:
        self.grid = grid
        self.keep_scores = keep_scores
        self.weights = grid.weights()
        self.acc = np.zeros((num_classes, grid.tile_h, grid.width), np.float32)
        self.wsum = np.zeros((grid.tile_h, grid.width), np.float32)
        self.top = 0  # scene row held in buffer row 0
        self.current = 0  # lowest band not finished
        self._valid: dict[int, tuple[int, np.ndarray]] = {}
        self._expected: dict[int, int] = {}
        self._received: dict[int, int] = {}

    def start_band(self, row: int, y0: int, valid: np.ndarray, expected: int) -> list[FinishedRows]:
        """Band ``row`` covers scene rows ``y0:y0+len(valid)``; ``expected`` of its tiles will be added."""
        self._valid[row] = (y0, valid)
        self._expected[row] = expected
        self._received.setdefault(row, 0)
        return self._drain()

    def add(self, row: int, col: int, scores: np.ndarray) -> list[FinishedRows]:
        """Blend tile (``row``, ``col``)'s (K, tile_h, tile_w) scores."""
        if row != self.current:
            raise RuntimeError(f"tile ({row}, {col}) arrived while band {self.current} is open")
        g = self.grid
        y, x = g.ys[row], g.xs[col]
        y0, y1 = max(y, 0), min(y + g.tile_h, g.height)
        x0, x1 = max(x, 0), min(x + g.tile_w, g.width)
        wt = self.weights[y0 - y:y1 - y, x0 - x:x1 - x]
        b0, b1 = y0 - self.top, y1 - self.top
        self.acc[:, b0:b1, x0:x1] += scores[:, y0 - y:y1 - y, x0 - x:x1 - x] * wt
        self.wsum[b0:b1, x0:x1] += wt
        self._received[row] += 1
        return self._drain()

    def _drain(self) -> list[FinishedRows]:
        done = []
        while (self.current in self._expected
               and self._received.get(self.current, 0) >= self._expected[self.current]):
            rows = self._finish(self.current)
            if rows is not None:
                done.append(rows)
            self.current += 1
        return done

    def _finish(self, row: int) -> FinishedRows | None:
        g = self.grid
        end = max(self.top, min(g.ys[row + 1], g.height)) if row + 1 < g.rows else g.height
        n = end - self.top
        y_band, valid_band = self._valid.pop(row)
        del self._expected[row], self._received[row]
        if n == 0:  # every row of this band is shared with the next one
            return None
        valid = valid_band[self.top - y_band:end - y_band].copy()
        wsum = self.wsum[:n]
        valid &= wsum > 0
        classes = self.acc[:, :n].argmax(axis=0).astype(np.uint8)
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = self.acc[:, :n].max(axis=0) / wsum
        classes[~valid] = NODATA_CLASS
        confidence[~valid] = np.nan
        scores = None
        if self.keep_scores:
            with np.errstate(invalid="ignore", divide="ignore"):
                scores = self.acc[:, :n] / wsum
            scores[:, ~valid] = np.nan
        out = FinishedRows(self.top, classes, confidence.astype(np.float32, copy=False), valid, scores)
        # rows still shared with the next band move to the top of the buffers
        keep = self.grid.tile_h - n
        self.acc[:, :keep] = self.acc[:, n:n + keep]
        self.acc[:, keep:] = 0
        self.wsum[:keep] = self.wsum[n:n + keep]
        self.wsum[keep:] = 0
        self.top = end
        return out
