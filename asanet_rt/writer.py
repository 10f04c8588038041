"""Write the land-cover map: streamed into a staging GeoTIFF block row by block row, then a Cloud-Optimized GeoTIFF
with a colour table, class names (band tags, a raster attribute table in ``.aux.xml``, a QGIS ``.qml`` style)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from ._version import __version__
from .blend import NODATA_CLASS

#: Internal tile edge of the outputs (COG blocks and staging blocks alike).
BLOCK = 512
CLASSES_DESCRIPTION = "land cover class"
CONFIDENCE_DESCRIPTION = "confidence (blended probability of the chosen class)"
CONFIDENCE_DTYPES = ("float32", "uint8")
PROBABILITY_DESCRIPTION = "probability of class"


def colormap(palette: Sequence[Sequence[int]]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: the model palette, nodata (255) transparent."""
    table = {i: (int(r), int(g), int(b), 255) for i, (r, g, b) in enumerate(palette)}
    table[NODATA_CLASS] = (0, 0, 0, 0)
    return table


class StripeWriter:
    """Writes rows in order into a tiled staging GeoTIFF, one full block row (``BLOCK`` rows) at a time.

    Buffering whole block rows means every compressed block is written exactly once.
    """

    def __init__(self, path: Path, profile: Mapping, dtype: str, nodata: float, tags: Mapping[str, str],
                 band_tags: Mapping[str, str], description: str,
                 colormap: Mapping[int, tuple[int, int, int, int]] | None = None, scale: float = 1.0,
                 count: int = 1, band_descriptions: Sequence[str] = ()) -> None:
        prof = dict(driver="GTiff", count=count, dtype=dtype, nodata=nodata, tiled=True, blockxsize=BLOCK,
                    blockysize=BLOCK, compress="deflate", zlevel=1, bigtiff="if_safer", interleave="band")
        prof.update({k: profile[k] for k in ("crs", "transform", "width", "height")})
        self.path = path
        self.count = count
        self.width, self.height = prof["width"], prof["height"]
        self.ds = rasterio.open(path, "w", **prof)
        for band in range(1, count + 1):
            name = band_descriptions[band - 1] if len(band_descriptions) >= band else ""
            self.ds.set_band_description(band, f"{description}: {name}" if name else description)
        self.ds.update_tags(**tags)
        self.ds.update_tags(1, **band_tags)
        if colormap is not None:
            self.ds.write_colormap(1, colormap)
        if scale != 1.0:
            self.ds.scales = (scale,) * count
        self.buffer = np.full((count, BLOCK, self.width), nodata, dtype=dtype)
        self.y0 = 0  # scene row of buffer row 0
        self.filled = 0

    def write(self, rows: np.ndarray) -> None:
        """Append the next ``len(rows)`` scene rows: (h, W) for one band, (count, h, W) for several."""
        rows = rows[None] if rows.ndim == 2 else rows
        start, n = 0, rows.shape[1]
        while start < n:
            take = min(BLOCK - self.filled, n - start)
            self.buffer[:, self.filled:self.filled + take] = rows[:, start:start + take]
            self.filled += take
            start += take
            if self.filled == BLOCK:
                self._flush()

    def _flush(self) -> None:
        if self.filled:
            self.ds.write(self.buffer[:, :self.filled], window=Window(0, self.y0, self.width, self.filled))
            self.y0 += self.filled
            self.filled = 0

    def close(self) -> None:
        """Write what is buffered and close; check that every row arrived."""
        if self.ds.closed:
            return
        self._flush()
        self.ds.close()
        if self.y0 != self.height:
            raise RuntimeError(f"{self.path}: {self.y0} of {self.height} rows written")

    def abort(self) -> None:
        if not self.ds.closed:
            self.ds.close()


def to_cog(staging: Path, dst: Path, resampling: str) -> None:
    """Copy a staging GeoTIFF into a Cloud-Optimized GeoTIFF (DEFLATE, 512 blocks, overviews by ``resampling``)."""
    rasterio.shutil.copy(str(staging), str(dst), driver="COG", COMPRESS="DEFLATE", PREDICTOR="NO",
                         BLOCKSIZE=BLOCK, OVERVIEW_RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER",
                         NUM_THREADS="ALL_CPUS")


def class_tags(classes: Sequence[str], palette: Sequence[Sequence[int]], model: str) -> tuple[dict, dict]:
    """Dataset and band tags naming the classes (read by any GDAL tool, no sidecar needed)."""
    tags = {"ASANET_CLASSES": json.dumps(list(classes)),
            "ASANET_PALETTE": json.dumps([list(map(int, c)) for c in palette]),
            "ASANET_MODEL": os.path.basename(model), "ASANET_RT_VERSION": __version__}
    band = {f"CLASS_{i}": name for i, name in enumerate(classes)}
    band["NODATA_CLASS"] = str(NODATA_CLASS)
    return tags, band


def write_qml(path: Path, classes: Sequence[str], palette: Sequence[Sequence[int]]) -> None:
    """A QGIS paletted style: QGIS applies ``map.qml`` to ``map.tif`` automatically when it opens the map."""
    entries = "\n".join(
        f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" label={quoteattr(name)}/>'
        for i, (name, (r, g, b)) in enumerate(zip(classes, palette)))
    path.write_text(
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="AllStyleCategories">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        "  </pipe>\n"
        "</qgis>\n", encoding="utf-8")


def write_aux_xml(path: Path, classes: Sequence[str], palette: Sequence[Sequence[int]],
                  counts: Sequence[int] | None = None) -> None:
    """GDAL PAM sidecar with category names and a thematic raster attribute table (value, class, count, RGB)."""
    # Field types: 0 integer, 2 string; usages: 5 min-max (the pixel value), 2 name, 1 pixel count, 6-8 RGB.
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Count", 0, 1), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    counts = list(counts) if counts is not None else [0] * len(classes)
    defs = "\n".join(f'      <FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
                     for i, (n, t, u) in enumerate(fields))
    rows = "\n".join(
        f'      <Row index="{i}"><F>{i}</F><F>{escape(name)}</F><F>{int(counts[i])}</F>'
        f"<F>{r}</F><F>{g}</F><F>{b}</F></Row>"
        for i, (name, (r, g, b)) in enumerate(zip(classes, palette)))
    categories = "".join(f"<Category>{escape(name)}</Category>" for name in classes)
    path.write_text(
        "<PAMDataset>\n"
        '  <PAMRasterBand band="1">\n'
        f"    <Description>{CLASSES_DESCRIPTION}</Description>\n"
        f"    <CategoryNames>{categories}</CategoryNames>\n"
        '    <GDALRasterAttributeTable tableType="thematic">\n'
        f"{defs}\n{rows}\n"
        "    </GDALRasterAttributeTable>\n"
        "  </PAMRasterBand>\n"
        "</PAMDataset>\n", encoding="utf-8")


def sidecar_paths(output: Path) -> tuple[Path, Path]:
    """Where the style and the attribute table of ``output`` go: ``map.qml`` and ``map.tif.aux.xml``."""
    return output.with_suffix(".qml"), output.with_name(output.name + ".aux.xml")


def confidence_values(confidence: np.ndarray, dtype: str) -> np.ndarray:
    """Confidence rows as stored: float32 with NaN nodata, or uint8 round(255 p) with 0 as nodata."""
    if dtype == "float32":
        return confidence.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        # the top class of K has p >= 1/K > 0, so 1..255 holds every valid value and 0 is free for nodata
        scaled = np.clip(np.rint(np.nan_to_num(confidence, nan=0.0) * 255.0), 1, 255).astype(np.uint8)
    scaled[np.isnan(confidence)] = 0
    return scaled
