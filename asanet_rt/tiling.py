"""Tile windows over a scene and the smooth weights that blend overlapping tiles without seams."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import AsanetError
from .metadata import TILE_MULTIPLE as MULTIPLE
from .metadata import ModelInputs, round_up
#: Smallest blending weight: keeps a pixel seen only by one tile's border well defined.
WEIGHT_FLOOR = 0.02


class TileSizeWarning(UserWarning):
    """A scene is tiled at another size than the model's native tile (what it was trained on)."""


#: Smallest default tile, px: each tile's pyramid pooling sees only that tile, so small tiles disagree where they
#: meet (on the demo model, 128 px tiles leave seams at any overlap; 512 px tiles none; benchmarks/seams.py).
MIN_DEFAULT_TILE = 512
#: Default overlap, px: puts the blend crossover 96 px (three cells of ASANet's coarsest level) inside either tile,
#: past the border effect: the smallest overlap that left no seams on every test scene and agreed with whole-image
#: inference as well as 256 px did (benchmarks/seams.py; 128 px: a seam on one held-out scene, 0.9 point less
#: agreement on the tuning scenes).
DEFAULT_OVERLAP = 192
#: Largest distance of the scene edge inside the outer tiles, px (see :func:`edge_margin`).
EDGE_MARGIN = 32


def default_overlap(tile: int) -> int:
    """The overlap used unless asked: 192 px (at most half the tile)."""
    return min(DEFAULT_OVERLAP, int(tile) // 2)


def default_tile(inputs: "ModelInputs") -> int:
    """The tile used unless asked: the model's native tile, at least :data:`MIN_DEFAULT_TILE` where the export
    allows it."""
    return min(max(inputs.native_in_range, MIN_DEFAULT_TILE), inputs.tile_range[1])


@dataclass(frozen=True)
class TileSettings:
    """The tile, overlap and batch a run uses: decided once, from the model's accepted ranges and the request."""

    tile: int
    overlap: int
    batch: int

    @classmethod
    def choose(cls, inputs: "ModelInputs", *, on_cpu: bool, tile: int | None = None, overlap: int | None = None,
               batch: int | None = None) -> "TileSettings":
        """Checked settings for a model: defaults are :func:`default_tile`, :func:`default_overlap` (overlaps are
        rounded up so that tiles step by multiples of 32, :func:`grid_stride`) and :meth:`default_batch`; a
        warning when asked for another tile than the native one; a clear error for anything the model cannot take.
        """
        asked = tile
        tile = inputs.check_tile(default_tile(inputs) if tile is None else tile)
        native, (lo, hi) = inputs.native_tile, inputs.tile_range
        if asked is None and not lo <= native <= hi:
            warnings.warn(f"tiling at {tile} px: the model's native tile {native} is outside the tile range "
                          f"{lo}:{hi} it was exported with (re-export with a range that holds {native})",
                          TileSizeWarning, stacklevel=3)
        elif asked is not None and tile != native:
            warnings.warn(f"tiling at {tile} px, not at the model's native tile {native} (what it was trained on)",
                          TileSizeWarning, stacklevel=3)
        overlap = default_overlap(tile) if overlap is None else int(overlap)
        if not 0 <= overlap <= tile // 2:
            raise AsanetError(f"--overlap {overlap}: must be between 0 and half the tile ({tile // 2})")
        batch = cls.default_batch(inputs, on_cpu) if batch is None else inputs.check_batch(batch)
        return cls(tile, aligned_overlap(tile, overlap) if overlap else 0, batch)

    @staticmethod
    def default_batch(inputs: "ModelInputs", on_cpu: bool) -> int:
        """One tile per call on a CPU, up to 8 on a GPU, within the model's batch range."""
        lo, hi = inputs.batch_range
        return max(lo, min(hi, 1 if on_cpu else 8))


def grid_stride(tile: int, overlap: int) -> int:
    """Step between tile origins: ``tile - overlap`` rounded down to a multiple of 32 (at least 32).

    Every tile then sees the scene on the same 32 px phase as its neighbours and as whole-image inference: ASANet
    downsamples by 32, and a tile shifted by a non-multiple of 32 (even 8 px) predicts measurably differently, so
    its overlap with a neighbour would disagree. The overlap actually used is ``tile - stride`` (>= ``overlap``).
    """
    return max(MULTIPLE, (int(tile) - int(overlap)) // MULTIPLE * MULTIPLE)


def aligned_overlap(tile: int, overlap: int) -> int:
    """The overlap a ``tile`` px grid uses when asked for ``overlap`` px (see :func:`grid_stride`)."""
    return max(0, int(tile) - grid_stride(tile, overlap))


def axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis of ``length`` px, all multiples of 32 (negative ones: the scene edge is
    reflect-padded).

    The scene edge sits :func:`edge_margin` px inside the first and last tile, so edge pixels get context from
    the reflected border instead of falling on a tile edge. Origins step by :func:`grid_stride`; the last tile
    may reach further into the reflected border rather than break the phase.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise AsanetError(f"overlap {overlap} must be >= 0 and smaller than the tile ({tile})")
    stride = grid_stride(tile, overlap)
    margin = edge_margin(tile - stride)
    if length + 2 * margin <= tile:  # one tile, the scene about centred in it
        return [-((tile - length) // 2 // MULTIPLE * MULTIPLE)]
    count = math.ceil((length + 2 * margin - tile) / stride) + 1
    return [-margin + i * stride for i in range(count)]


def edge_margin(overlap: int) -> int:
    """How far inside the outer tiles the scene edge sits: half the overlap, rounded up to 32 px, at most
    :data:`EDGE_MARGIN`. Seams come from where tiles meet, not from the scene edge, so a large overlap need not
    push the edge deeper into reflected padding (which costs a whole extra row and column of tiles)."""
    return min(round_up(overlap // 2), EDGE_MARGIN, overlap) if overlap > 0 else 0


def effective_tile(length: int, tile: int, overlap: int, tile_min: int) -> int:
    """Shrink ``tile`` to what a scene shorter than one tile needs (a multiple of 32, at least ``tile_min``)."""
    needed = round_up(length + 2 * edge_margin(overlap))
    return max(tile_min, min(tile, needed))


@dataclass(frozen=True)
class TileGrid:
    """Tile windows over a ``height`` x ``width`` scene, in rows ("bands") of tiles."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def plan(cls, height: int, width: int, tile: int, overlap: int, tile_min: int = MULTIPLE) -> "TileGrid":
        """Windows of ``tile`` px (smaller for a small scene) overlapping by ``overlap`` px."""
        if height < 1 or width < 1:
            raise AsanetError(f"empty scene ({width} x {height} px)")
        tile_h = effective_tile(height, tile, overlap, tile_min)
        tile_w = effective_tile(width, tile, overlap, tile_min)
        # A shrunk tile keeps the requested overlap, unless the tile became too small for it.
        ov_h, ov_w = min(overlap, tile_h // 2), min(overlap, tile_w // 2)
        return cls(height, width, tile_h, tile_w, overlap, tuple(axis_origins(height, tile_h, ov_h)),
                   tuple(axis_origins(width, tile_w, ov_w)))

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def cols(self) -> int:
        return len(self.xs)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def weights(self) -> np.ndarray:
        """The (tile_h, tile_w) float32 blending window of every tile."""
        return blend_window(self.tile_h, self.tile_w, aligned_overlap(self.tile_h, min(self.overlap, self.tile_h // 2)),
                            aligned_overlap(self.tile_w, min(self.overlap, self.tile_w // 2)))


def _ramp(size: int, overlap: int, floor: float) -> np.ndarray:
    """1-D weights: 1 in the middle, a raised-cosine taper over ``overlap`` px at both ends, never below ``floor``."""
    w = np.ones(size, np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        taper = 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / overlap)  # two facing tapers sum to 1 in the overlap
        w[:overlap] = taper
        w[size - overlap:] = np.minimum(w[size - overlap:], taper[::-1])
    return floor + (1.0 - floor) * w


@lru_cache(maxsize=16)
def blend_window(tile_h: int, tile_w: int, overlap_h: int, overlap_w: int,
                 floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """2-D blending weights (outer product of 1-D raised-cosine tapers), read-only float32."""
    w = np.outer(_ramp(tile_h, overlap_h, floor), _ramp(tile_w, overlap_w, floor)).astype(np.float32)
    w.setflags(write=False)
    return w


def pad_reflect(array: np.ndarray, before_y: int, after_y: int, before_x: int, after_x: int) -> np.ndarray:
    """Pad the last two axes by reflection (edge replication for a 1-px axis, which cannot be reflected)."""
    if not (before_y or after_y or before_x or after_x):
        return array
    pads = [(0, 0)] * (array.ndim - 2) + [(before_y, after_y), (before_x, after_x)]
    mode = "reflect" if min(array.shape[-2:]) > 1 else "edge"
    return np.pad(array, pads, mode=mode)
