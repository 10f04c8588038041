"""Helpers for the runtime tests: the toy ONNX model, small GeoTIFFs, the toy's numpy reference, real fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from asanet_rt.classifier import softmax
from asanet_rt.tiling import TileGrid
from toy_models import make_toy_onnx, toy_reference

DATA = Path(__file__).resolve().parent / "data"
SSL4EO = DATA / "ssl4eo_s12"
TERRAMESH = DATA / "terramind"
TILE_ID = "282D_485L_3_3"
UTM = "EPSG:32632"


def north_up(x0: float, y0: float, pixel: float) -> Affine:
    """A north-up transform with square ``pixel`` size and upper-left corner (``x0``, ``y0``)."""
    return Affine(pixel, 0.0, x0, 0.0, -pixel, y0)


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model with a logits output, tiles 32-512, batches 1-8, bands red, green, blue."""
    return make_toy_onnx(tmp_path_factory.mktemp("models") / "toy.onnx")


def write_raster(path: Path, array: np.ndarray, crs: str | None = UTM, transform=None, nodata=None) -> Path:
    """Write a (C, H, W) array as a GeoTIFF (10 m pixels in UTM unless told otherwise)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    count, height, width = array.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name,
                   transform=transform if transform is not None else north_up(500000, 6000000, 10))
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def random_pair(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 optical (3, H, W) and SAR (1, H, W) with some spatial structure (blocky noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, height // 8 + 1, width // 8 + 1)).astype(np.float32)
    smooth = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :height, :width]
    noisy = np.clip(smooth + rng.normal(0, 30, smooth.shape), 0, 255).astype(np.uint8)
    return noisy[:3], noisy[3:]


def write_pair(folder: Path, height: int, width: int, seed: int = 0, **kwargs) -> tuple[Path, Path, np.ndarray,
                                                                                          np.ndarray]:
    """Write a random pair on one UTM grid; returns the paths and the arrays."""
    opt, sar = random_pair(height, width, seed)
    return (write_raster(folder / "optical.tif", opt, **kwargs), write_raster(folder / "sar.tif", sar, **kwargs),
            opt, sar)


def reference_probabilities(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
    """The toy's whole-image probabilities (K, H, W), the scene edge reflect-padded as the runtime does."""
    opt = np.pad(optical.astype(np.float32), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    sar_ = np.pad(sar.astype(np.float32), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    logits = toy_reference(opt[None], sar_[None])[0][:, 1:-1, 1:-1]
    return softmax(logits[None], axis=1)[0]


def tile_edge_mask(grid: TileGrid) -> np.ndarray:
    """Pixels on the first or last row or column of some tile: where the toy's 3x3 window sees a tile border."""
    mask = np.zeros((grid.height, grid.width), bool)
    for y in grid.ys:
        for row in (y, y + grid.tile_h - 1):
            if 0 <= row < grid.height:
                mask[row] = True
    for x in grid.xs:
        for col in (x, x + grid.tile_w - 1):
            if 0 <= col < grid.width:
                mask[:, col] = True
    return mask


def ssl4eo_optical(folder: Path) -> Path:
    """Stack the SSL4EO-S12 B4, B3, B2 files (red, green, blue; uint16 reflectance x10000) into one GeoTIFF."""
    bands = []
    for name in ("B4", "B3", "B2"):
        with rasterio.open(SSL4EO / "s2_l2a_20200604" / f"{name}.tif") as src:
            bands.append(src.read(1))
            profile = src.profile
    profile.update(count=3, driver="GTiff")
    path = folder / "s2_rgb.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(bands))
    return path


def listing(folder: Path) -> list[str]:
    """Names in ``folder``, sorted (to show that nothing was written)."""
    return sorted(p.name for p in folder.iterdir())
