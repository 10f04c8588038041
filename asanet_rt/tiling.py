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


def default_overlap(tile: int) -> int:
    """The overlap used unless asked: a quarter tile."""
    return int(tile) // 4


@dataclass(frozen=True)
class TileSettings:
    """The tile, overlap and batch a run uses: decided once, from the model's accepted ranges and the request."""

    tile: int
    overlap: int
    batch: int

    @classmethod
    def choose(cls, inputs: "ModelInputs", *, on_cpu: bool, tile: int | None = None, overlap: int | None = None,
               batch: int | None = None) -> "TileSettings":
        """Checked settings for a model: defaults are the native tile (clipped into the exported range),
        :func:`default_overlap`, and one tile per call on a CPU (batching does not speed up convolutions there but
        multiplies activation memory) or up to 8 on a GPU; a clear error for anything the model cannot take."""
        asked, tile = tile, inputs.check_tile(tile)
        native, (lo, hi) = inputs.native_tile, inputs.tile_range
        if tile != native and asked is None:
            warnings.warn(f"tiling at {tile} px: the model's native tile {native} is outside the tile range "
                          f"{lo}:{hi} it was exported with (re-export with a range that holds {native})",
                          TileSizeWarning, stacklevel=3)
        elif tile != native:
            warnings.warn(f"tiling at {tile} px, not at the model's native tile {native} (what it was trained on)",
                          TileSizeWarning, stacklevel=3)
        overlap = default_overlap(tile) if overlap is None else int(overlap)
        if not 0 <= overlap <= tile // 2:
            raise AsanetError(f"--overlap {overlap}: must be between 0 and half the tile ({tile // 2})")
        batch = cls.default_batch(inputs, on_cpu) if batch is None else inputs.check_batch(batch)
        return cls(tile, overlap, batch)

    @staticmethod
    def default_batch(inputs: "ModelInputs", on_cpu: bool) -> int:
        """One tile per call on a CPU, up to 8 on a GPU, within the model's batch range."""
        lo, hi = inputs.batch_range
        return max(lo, min(hi, 1 if on_cpu else 8))


def axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis of ``length`` px (may be negative: the scene edge is reflect-padded).

    The scene edge sits ``overlap // 2`` px inside the first and last tile, so edge pixels get context from the
    reflected border instead of falling on a tile edge; the last tile is shifted to end exactly there.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise AsanetError(f"overlap {overlap} must be >= 0 and smaller than the tile ({tile})")
    margin = overlap // 2
    span = length + 2 * margin
    if span <= tile:
        return [-((tile - length) // 2)]  # one tile, the scene centred in it
    stride = tile - overlap
    count = math.ceil((span - tile) / stride) + 1
    origins = [-margin + i * stride for i in range(count - 1)]
    origins.append(length + margin - tile)
    return origins


def effective_tile(length: int, tile: int, overlap: int, tile_min: int) -> int:
    """Shrink ``tile`` to what a scene shorter than one tile needs (a multiple of 32, at least ``tile_min``)."""
    needed = round_up(length + 2 * (overlap // 2))
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
        return blend_window(self.tile_h, self.tile_w, min(self.overlap, self.tile_h // 2),
                            min(self.overlap, self.tile_w // 2))


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
