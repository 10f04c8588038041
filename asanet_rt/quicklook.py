"""A PNG quick-look of a land-cover map: colourised classes, optionally blended over the optical image, a legend.

With matplotlib installed the legend names the classes; without it (the runtime needs only numpy + rasterio) a
plain PNG is written with colour swatches beside the map and the class names in the PNG's ``Legend`` text chunk.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling

from .blend import NODATA_CLASS
from .scene import Scene


def _preview_shape(height: int, width: int, max_size: int) -> tuple[int, int]:
    scale = min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def colourise(classes: np.ndarray, palette: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) classes -> (H, W, 3) uint8 RGB and the (H, W) bool mask of pixels with a class."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    return lut[classes], (classes != NODATA_CLASS) & (classes < len(palette))


def optical_rgb(scene: Scene, band_names: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """The optical image at ``shape``, on the model's 0-255 scale, in red, green, blue order where known."""
    order = [band_names.index(n) for n in ("red", "green", "blue")] if {"red", "green", "blue"} <= set(
        band_names) else [0, 1, 2]
    bands = [scene.optical_bands[i] for i in order]
    raw = scene.optical_dataset.read(bands, out_shape=(3, *shape), resampling=Resampling.average, masked=True)
    rgb = scene.optical_scale.apply(np.ma.filled(raw.astype(np.float32), np.nan))
    rgb = np.nan_to_num(rgb, nan=0.0)
    return np.clip(rgb, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def compose(map_path: str | Path, palette: Sequence[Sequence[int]], max_size: int = 1024,
            background: np.ndarray | None = None, alpha: float = 0.6) -> np.ndarray:
    """RGBA preview of the map: classes over ``background`` (RGB at the preview size) with opacity ``alpha``."""
    with rasterio.open(map_path) as src:
        shape = _preview_shape(src.height, src.width, max_size)
        # nearest keeps class values intact; the COG's overviews make this a small read
        classes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    rgb, has_class = colourise(classes, palette)
    out = np.zeros((*shape, 4), np.uint8)
    if background is None:
        out[..., :3] = rgb
        out[..., 3] = np.where(has_class, 255, 0)
        return out
    blended = alpha * rgb.astype(np.float32) + (1.0 - alpha) * background.astype(np.float32)
    out[..., :3] = np.where(has_class[..., None], np.rint(blended), background).astype(np.uint8)
    out[..., 3] = 255
    return out


def png_bytes(rgba: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """Encode an (H, W, 4) uint8 array as PNG with zlib alone (filter 0 on every row)."""
    h, w, _ = rgba.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(rgba).reshape(h, w * 4)], axis=1)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))]
    for key, value in (text or {}).items():
        parts.append(chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1", "replace")))
    parts += [chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), chunk(b"IEND", b"")]
    return b"".join(parts)


def swatch_legend(rgba: np.ndarray, palette: Sequence[Sequence[int]], swatch: int = 16) -> np.ndarray:
    """The image with a white strip of class colour swatches (top to bottom in class order) on its right."""
    h, w, _ = rgba.shape
    k = len(palette)
    height = max(h, k * (swatch + 4) + 4)
    out = np.full((height, w + swatch + 8, 4), 255, np.uint8)
    out[:h, :w] = rgba
    for i, colour in enumerate(palette):
        y = 4 + i * (swatch + 4)
        out[y:y + swatch, w + 4:w + 4 + swatch] = 0  # a black frame
        out[y + 1:y + swatch - 1, w + 5:w + 3 + swatch, :3] = np.asarray(colour, np.uint8)
    return out


def legend_text(classes: Sequence[str], palette: Sequence[Sequence[int]]) -> str:
    return "; ".join(f"{i} {name} #{r:02x}{g:02x}{b:02x}" for i, (name, (r, g, b)) in enumerate(zip(classes, palette)))


def _matplotlib_png(path: Path, rgba: np.ndarray, classes: Sequence[str], palette: Sequence[Sequence[int]],
                    title: str) -> None:
    """Image plus a named legend, drawn with matplotlib's object API (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    dpi = 100
    h, w, _ = rgba.shape
    legend_w = 60 + 7 * max(len(c) for c in classes)
    total_w, total_h = w + legend_w, max(h, 22 * len(classes) + 40)
    fig = Figure(figsize=(total_w / dpi, total_h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 1 - h / total_h, w / total_w, h / total_h))
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(facecolor=np.asarray(c) / 255.0, edgecolor="black", linewidth=0.5, label=name)
               for name, c in zip(classes, palette)]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(w / total_w, 1.0), frameon=False, fontsize=9,
               title=title, title_fontsize=9)
    fig.savefig(path, format="png", dpi=dpi, metadata={"Legend": legend_text(classes, palette)})


def write_quicklook(path: str | Path, map_path: str | Path, classes: Sequence[str],
                    palette: Sequence[Sequence[int]], *, scene: Scene | None = None,
                    band_names: Sequence[str] = ("red", "green", "blue"), max_size: int = 1024, alpha: float = 0.6,
                    use_matplotlib: bool | None = None, title: str = "land cover") -> None:
    """Write the PNG quick-look of ``map_path`` to ``path`` (blended over ``scene``'s optical image if given)."""
    path = Path(path)
    background = None
    if scene is not None and alpha < 1.0:
        with rasterio.open(map_path) as src:
            shape = _preview_shape(src.height, src.width, max_size)
        background = optical_rgb(scene, band_names, shape)
    rgba = compose(map_path, palette, max_size, background, alpha)
    if use_matplotlib is None:
        try:
            import matplotlib  # noqa: F401
            use_matplotlib = True
        except ImportError:
            use_matplotlib = False
    if use_matplotlib:
        _matplotlib_png(path, rgba, classes, palette, title)
    else:
        path.write_bytes(png_bytes(swatch_legend(rgba, palette), {"Legend": legend_text(classes, palette),
                                                                   "Software": "asanet-rt"}))
