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


#: Colour of pixels without a class (nodata) in the quick-look and its legend.
NODATA_COLOUR = (200, 200, 200)
TITLE_PX = 28  # height of the title band (matplotlib)
SWATCH_PX = 16  # plain-PNG legend swatches


def _preview_shape(height: int, width: int, max_size: int) -> tuple[int, int]:
    """The map scaled so that its longest side is ``max_size`` (up or down)."""
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _fit(height: int, width: int, size: int, extra_w: int, extra_h: int) -> tuple[int, int]:
    """Map shape so that the map plus ``extra_w`` px of legend and ``extra_h`` px of title has longest side
    ``size`` (the map keeps its aspect ratio)."""
    aspect = width / height
    map_w = size - extra_w
    map_h = map_w / aspect
    if map_h + extra_h > size:
        map_h = size - extra_h
        map_w = map_h * aspect
    return max(1, round(map_h)), max(1, round(map_w))


def colourise(classes: np.ndarray, palette: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) classes -> (H, W, 3) uint8 RGB and the (H, W) bool mask of pixels with a class."""
    lut = np.zeros((256, 3), np.uint8)
    lut[len(palette):] = NODATA_COLOUR
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


def read_classes(map_path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """The map's classes at ``shape`` (nearest keeps class values intact; the COG's overviews keep it small)."""
    with rasterio.open(map_path) as src:
        return src.read(1, out_shape=shape, resampling=Resampling.nearest)


def compose(classes: np.ndarray, palette: Sequence[Sequence[int]], background: np.ndarray | None = None,
            alpha: float = 0.6) -> np.ndarray:
    """Opaque RGBA preview: class colours (nodata grey) over ``background`` (RGB, same shape) with opacity ``alpha``."""
    rgb, _ = colourise(classes, palette)
    out = np.full((*classes.shape, 4), 255, np.uint8)
    if background is None:
        out[..., :3] = rgb
        return out
    blended = alpha * rgb.astype(np.float32) + (1.0 - alpha) * background.astype(np.float32)
    out[..., :3] = np.rint(blended).astype(np.uint8)
    return out


def legend_entries(classes: np.ndarray, names: Sequence[str], palette: Sequence[Sequence[int]],
                   counts: Sequence[int] | None = None) -> list[tuple[str, tuple[int, int, int]]]:
    """(label, colour) of the classes present (``counts`` of the full map, else the preview's pixels), then
    nodata when the preview has any."""
    present = (np.asarray(counts) > 0) if counts is not None else np.bincount(
        classes[classes < len(palette)].ravel(), minlength=len(palette)) > 0
    entries = [(name, tuple(int(v) for v in colour)) for name, colour, here in zip(names, palette, present) if here]
    if (classes >= len(palette)).any():
        entries.append(("nodata", NODATA_COLOUR))
    return entries


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


def swatch_legend(rgba: np.ndarray, entries: Sequence[tuple[str, Sequence[int]]],
                  swatch: int = SWATCH_PX) -> np.ndarray:
    """The image with a white strip of colour swatches (top to bottom in legend order) on its right."""
    h, w, _ = rgba.shape
    height = max(h, len(entries) * (swatch + 4) + 4)
    out = np.full((height, w + swatch + 8, 4), 255, np.uint8)
    out[:h, :w] = rgba
    for i, (_, colour) in enumerate(entries):
        y = 4 + i * (swatch + 4)
        out[y:y + swatch, w + 4:w + 4 + swatch, :3] = 0  # a black frame
        out[y + 1:y + swatch - 1, w + 5:w + 3 + swatch, :3] = np.asarray(colour, np.uint8)
    return out


def legend_text(entries: Sequence[tuple[str, Sequence[int]]]) -> str:
    return "; ".join(f"{name} #{r:02x}{g:02x}{b:02x}" for name, (r, g, b) in entries)


def _legend_width(entries: Sequence[tuple[str, Sequence[int]]]) -> int:
    return 64 + 7 * max((len(name) for name, _ in entries), default=6)


def _matplotlib_png(path: Path, rgba: np.ndarray, entries: Sequence[tuple[str, Sequence[int]]], title: str,
                    size: tuple[int, int]) -> None:
    """Title, image and a named legend on a canvas of exactly ``size`` (h, w) px, drawn with matplotlib's object
    API (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    dpi = 100
    h, w, _ = rgba.shape
    total_h, total_w = size
    fig = Figure(figsize=(total_w / dpi, total_h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.text(4 / total_w, 1 - 6 / total_h, title, ha="left", va="top", fontsize=11)
    ax = fig.add_axes((0, 1 - (TITLE_PX + h) / total_h, w / total_w, h / total_h))
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(facecolor=np.asarray(c) / 255.0, edgecolor="black", linewidth=0.5, label=name)
               for name, c in entries]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(w / total_w, 1 - TITLE_PX / total_h),
               frameon=False, fontsize=9)
    fig.savefig(path, format="png", dpi=dpi, metadata={"Title": title, "Legend": legend_text(entries)})


def write_quicklook(path: str | Path, map_path: str | Path, classes: Sequence[str],
                    palette: Sequence[Sequence[int]], *, scene: Scene | None = None,
                    band_names: Sequence[str] = ("red", "green", "blue"), max_size: int = 1024, alpha: float = 0.6,
                    use_matplotlib: bool | None = None, title: str | None = None,
                    counts: Sequence[int] | None = None) -> None:
    """Write the PNG quick-look of ``map_path`` to ``path``: longest side ``max_size`` px (title and legend
    included), blended over ``scene``'s optical image if given; the legend names the classes present (``counts``
    of the whole map when given, else those in the preview) and nodata."""
    path = Path(path)
    if use_matplotlib is None:
        try:
            import matplotlib  # noqa: F401
            use_matplotlib = True
        except ImportError:
            use_matplotlib = False
    if title is None:
        title = f"land cover: {Path(scene.optical_path).name}" if scene is not None else "land cover"
    with rasterio.open(map_path) as src:
        full = (src.height, src.width)
    # a first read at the final scale's order of size gives the legend entries, which set the legend width
    probe = read_classes(map_path, _preview_shape(*full, max_size))
    entries = legend_entries(probe, classes, palette, counts)
    if use_matplotlib:
        legend_w = _legend_width(entries)
        shape = _fit(*full, max_size, legend_w, TITLE_PX)
    else:
        shape = _fit(*full, max_size, SWATCH_PX + 8, 0)
    map_classes = probe if shape == probe.shape else read_classes(map_path, shape)
    background = optical_rgb(scene, band_names, shape) if scene is not None and alpha < 1.0 else None
    rgba = compose(map_classes, palette, background, alpha)
    if use_matplotlib:
        legend_h = 22 * len(entries) + 10
        height = max(TITLE_PX + shape[0], TITLE_PX + legend_h)
        _matplotlib_png(path, rgba, entries, title, (height, shape[1] + legend_w))
    else:
        path.write_bytes(png_bytes(swatch_legend(rgba, entries), {"Title": title, "Legend": legend_text(entries),
                                                                   "Software": "asanet-rt"}))
