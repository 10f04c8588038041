"""Open an optical + SAR raster pair, check it, and read it on one pixel grid (the optical one), row band by band."""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from .errors import AsanetError
from .scaling import RangeMonitor, Scale
from .tiling import pad_reflect

log = logging.getLogger(__name__)

RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max", "med")


class AlignmentWarning(UserWarning):
    """The two rasters are stacked by pixel index because neither has a georeference."""


class BandOrderWarning(UserWarning):
    """The optical file's band tags suggest another band order than the one used."""


@dataclass
class SceneBlock:
    """Rows ``y0:y1`` of the scene on the optical grid: model-scale inputs and where both sensors have data."""

    y0: int
    y1: int
    optical: np.ndarray  # (3, h + pads, W + pads) float32 0-255, invalid pixels filled
    sar: np.ndarray  # (1, h + pads, W + pads) float32 0-255, invalid pixels filled
    valid: np.ndarray  # (h, W) bool, scene pixels only


def parse_bands(text: str | Sequence[int] | None, option: str) -> tuple[int, ...] | None:
    """``"3,2,1"`` -> (3, 2, 1); a clear error for anything but positive integers."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            bands = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
        except ValueError:
            raise AsanetError(f"{option} {text!r}: expected comma-separated 1-based band numbers, e.g. 3,2,1") from None
    else:
        bands = tuple(int(v) for v in text)
    if not bands or min(bands) < 1:
        raise AsanetError(f"{option} {text!r}: band numbers start at 1")
    return bands


#: Band descriptions accepted for each model band name (lower case; Sentinel-2 band codes included).
BAND_ALIASES = {"red": ("red", "r", "b4", "b04"), "green": ("green", "g", "b3", "b03"),
                "blue": ("blue", "b", "b2", "b02"), "nir": ("nir", "b8", "b08")}


def _bands_by_description(descriptions: Sequence[str | None], band_names: Sequence[str]) -> tuple[int, ...] | None:
    """1-based bands whose descriptions name each of ``band_names`` exactly once, or None."""
    found = []
    for name in band_names:
        accepted = BAND_ALIASES.get(name.lower(), (name.lower(),))
        hits = [i + 1 for i, d in enumerate(descriptions) if d and d.strip().lower() in accepted]
        if len(hits) != 1:
            return None
        found.append(hits[0])
    return tuple(found) if len(set(found)) == len(found) else None


def _open(path: str | os.PathLike, role: str) -> rasterio.io.DatasetReader:
    path = Path(path)
    if not path.exists():
        raise AsanetError(f"{path}: {role} file not found")
    if path.is_dir():
        raise AsanetError(f"{path}: {role} path is a folder, not a raster file")
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise AsanetError(f"{path}: not a readable raster ({exc})") from exc


def _check_bands(path: str, bands: Sequence[int], count: int, option: str) -> None:
    for b in bands:
        if b > count:
            raise AsanetError(f"{path}: {option} band {b} is out of range (the file has {count} "
                              f"band{'s' if count != 1 else ''})")


def _same_grid(a: rasterio.io.DatasetReader, b: rasterio.io.DatasetReader) -> bool:
    """Same CRS, shape and (to a thousandth of a pixel) transform."""
    if (a.width, a.height) != (b.width, b.height) or a.crs != b.crs:
        return False
    tol = 1e-3 * min(abs(a.transform.a), abs(a.transform.e))
    return all(math.isclose(x, y, rel_tol=0, abs_tol=tol) for x, y in zip(a.transform[:6], b.transform[:6]))


@dataclass
class Scene:
    """An optical + SAR pair read on the optical grid. Not thread-safe: read from one thread at a time."""

    optical_path: str
    sar_path: str
    optical_bands: tuple[int, ...]
    sar_band: int
    optical_scale: Scale
    sar_scale: Scale
    alignment: str  # "same grid", "warped" or "pixel index"
    optical_fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sar_fill: float = 0.0
    optical_nodata: float | None = None
    sar_nodata: float | None = None
    _optical: rasterio.io.DatasetReader | None = field(default=None, repr=False)
    _sar_src: rasterio.io.DatasetReader | None = field(default=None, repr=False)
    _sar: rasterio.io.DatasetReader | WarpedVRT | None = field(default=None, repr=False)
    monitors: tuple[RangeMonitor, RangeMonitor] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, optical: str | os.PathLike, sar: str | os.PathLike, *,
             optical_bands: str | Sequence[int] | None = None, sar_band: int = 1,
             optical_scale: str | Scale = "auto", sar_scale: str | Scale = "auto",
             optical_nodata: float | None = None, sar_nodata: float | None = None,
             sar_resampling: str = "bilinear", band_names: Sequence[str] = ("red", "green", "blue"),
             optical_fill: Sequence[float] = (0.0, 0.0, 0.0), sar_fill: float = 0.0) -> "Scene":
        """Open and check both rasters; SAR on another grid is warped onto the optical grid on the fly."""
        o_scale = optical_scale if isinstance(optical_scale, Scale) else Scale.parse(optical_scale, "--optical-scale")
        s_scale = sar_scale if isinstance(sar_scale, Scale) else Scale.parse(sar_scale, "--sar-scale")
        if sar_resampling not in RESAMPLING:
            raise AsanetError(f"--sar-resampling {sar_resampling!r}: choose one of {', '.join(RESAMPLING)}")
        opt = _open(optical, "optical")
        try:
            sar_src = _open(sar, "SAR")
        except BaseException:
            opt.close()
            raise
        scene = cls(str(optical), str(sar), (), int(sar_band), o_scale, s_scale, "same grid",
                    tuple(float(v) for v in optical_fill), float(sar_fill), optical_nodata, sar_nodata,
                    _optical=opt, _sar_src=sar_src)
        try:
            scene._check(optical_bands, band_names, sar_resampling)
        except BaseException:
            scene.close()
            raise
        return scene

    def _check(self, optical_bands: str | Sequence[int] | None, band_names: Sequence[str],
               sar_resampling: str) -> None:
        opt, sar_src = self._optical, self._sar_src
        bands = parse_bands(optical_bands, "--optical-bands")
        names = ", ".join(band_names)
        if bands is None:
            bands = self._default_bands(band_names)
        if len(bands) != 3:
            raise AsanetError(f"--optical-bands {','.join(map(str, bands))}: give 3 bands, in the model's order "
                              f"({names})")
        _check_bands(self.optical_path, bands, opt.count, "--optical-bands")
        _check_bands(self.sar_path, (self.sar_band,), sar_src.count, "--sar-band")
        self.optical_bands = bands
        self.optical_scale = self.optical_scale.resolve(opt.dtypes[bands[0] - 1], self.optical_path,
                                                        "--optical-scale")
        self.sar_scale = self.sar_scale.resolve(sar_src.dtypes[self.sar_band - 1], self.sar_path, "--sar-scale")
        if self.optical_nodata is None:
            self.optical_nodata = opt.nodata
        if self.sar_nodata is None:
            self.sar_nodata = sar_src.nodata
        self.monitors = (RangeMonitor(self.optical_path, "--optical-scale", self.optical_scale),
                         RangeMonitor(self.sar_path, "--sar-scale", self.sar_scale))
        self._sar = self._align(sar_resampling)

    def _default_bands(self, band_names: Sequence[str]) -> tuple[int, ...]:
        """Bands named like the model's in the file's band descriptions; else 1, 2, 3 of a 3-band file."""
        opt, names = self._optical, ", ".join(band_names)
        described = _bands_by_description(opt.descriptions, band_names)
        if described is not None:
            log.info("optical bands %s of %s used as %s (from the band descriptions)",
                     ",".join(map(str, described)), self.optical_path, names)
            return described
        if opt.count != 3:
            raise AsanetError(f"{self.optical_path}: has {opt.count} band{'s' if opt.count != 1 else ''}; pass "
                              f"--optical-bands with the 3 band numbers that hold {names} (the model's order), "
                              f"e.g. 4,3,2 for a Sentinel-2 L2A stack B1..B12")
        # Colour tags: GDAL tags 3-band byte GeoTIFFs red, green, blue unless told otherwise, which is right for
        # nearly every RGB file; a file stored blue, green, red needs --optical-bands (the README says so).
        interp = [c.name for c in opt.colorinterp]
        if all(interp.count(n) == 1 for n in band_names):
            tagged = tuple(interp.index(n) + 1 for n in band_names)
            log.info("optical bands %s of %s used as %s (from the file's colour tags %s; pass --optical-bands if "
                     "the file stores another order)", ",".join(map(str, tagged)), self.optical_path, names,
                     ", ".join(interp))
            return tagged
        raise AsanetError(f"{self.optical_path}: cannot tell which of its 3 bands hold {names} (no band "
                          f"descriptions, colour tags {', '.join(interp)}); pass --optical-bands with their band "
                          f"numbers in the model's order, e.g. 1,2,3 if the file stores {names}")

    def _align(self, resampling: str) -> rasterio.io.DatasetReader | WarpedVRT:
        """The SAR dataset on the optical grid: itself when the grids match, else a WarpedVRT."""
        opt, sar = self._optical, self._sar_src
        if opt.crs is None and sar.crs is None:
            if (opt.width, opt.height) != (sar.width, sar.height):
                raise AsanetError(f"{self.optical_path} ({opt.width} x {opt.height}) and {self.sar_path} "
                                  f"({sar.width} x {sar.height}) have no CRS and different sizes; georeference "
                                  f"them so the SAR can be aligned")
            warnings.warn(f"{self.optical_path} and {self.sar_path} have no CRS; stacking them by pixel index "
                          f"(make sure they cover the same ground)", AlignmentWarning, stacklevel=4)
            self.alignment = "pixel index"
            return sar
        for ds, path in ((opt, self.optical_path), (sar, self.sar_path)):
            if ds.crs is None:
                other = self.sar_path if path == self.optical_path else self.optical_path
                raise AsanetError(f"{path}: has no CRS but {other} has one; cannot align them (assign the CRS, "
                                  f"e.g. with `rio edit-info --crs`)")
        if _same_grid(opt, sar):
            return sar
        try:
            left, bottom, right, top = transform_bounds(sar.crs, opt.crs, *sar.bounds, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - PROJ raises several types
            raise AsanetError(f"{self.sar_path}: cannot transform its bounds to the CRS of {self.optical_path} "
                              f"({exc})") from exc
        o = opt.bounds
        if min(right, o.right) <= max(left, o.left) or min(top, o.top) <= max(bottom, o.bottom):
            raise AsanetError(f"{self.sar_path} and {self.optical_path} do not overlap (SAR bounds "
                              f"{left:.6g}, {bottom:.6g}, {right:.6g}, {top:.6g} vs optical {o.left:.6g}, "
                              f"{o.bottom:.6g}, {o.right:.6g}, {o.top:.6g} in {opt.crs})")
        self.alignment = "warped"
        log.info("resampling %s onto the grid of %s (%s)", self.sar_path, self.optical_path, resampling)
        # Float32 with NaN as nodata: the warp marks pixels outside the SAR footprint, whatever the SAR's dtype.
        return WarpedVRT(sar, crs=opt.crs, transform=opt.transform, width=opt.width, height=opt.height,
                         resampling=Resampling[resampling], src_nodata=self.sar_nodata, nodata=float("nan"),
                         dtype="float32")

    @property
    def width(self) -> int:
        return self._optical.width

    @property
    def height(self) -> int:
        return self._optical.height

    @property
    def profile(self) -> dict:
        """The optical raster's georeferencing (CRS, transform, size) for the outputs."""
        return {"crs": self._optical.crs, "transform": self._optical.transform, "width": self.width,
                "height": self.height}

    @property
    def optical_dataset(self) -> rasterio.io.DatasetReader:
        return self._optical

    def _valid(self, ds: rasterio.io.DatasetReader | WarpedVRT, raw: np.ndarray, bands: Sequence[int],
               nodata: float | None, window: Window) -> np.ndarray:
        """Pixels with data: no band NaN, not every band ``nodata``, not masked by the file's own mask."""
        valid = np.ones(raw.shape[1:], bool)
        if raw.dtype.kind == "f":
            valid &= ~np.isnan(raw).any(axis=0)
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            # GDAL's rule for a nodata value: a pixel is empty when all its bands hold it (a dark band is data)
            valid &= ~(raw == float(nodata)).all(axis=0)
        if isinstance(ds, rasterio.io.DatasetReader):
            flags = [ds.mask_flag_enums[b - 1] for b in bands]
            if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
                valid &= (ds.read_masks(list(bands), window=window) > 0).all(axis=0)
        return valid

    def read_rows(self, y0: int, y1: int, pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> SceneBlock:
        """Rows ``y0:y1`` (within the scene) scaled to 0-255, pixels without both sensors filled and flagged.

        ``pad`` (top, bottom, left, right) extends the inputs by reflection beyond the scene edge; ``valid``
        covers the scene rows only.
        """
        window = Window(0, y0, self.width, y1 - y0)
        try:
            raw_o = self._optical.read(list(self.optical_bands), window=window)
            raw_s = self._sar.read([self.sar_band], window=window)
        except RasterioError as exc:
            raise AsanetError(f"{self.optical_path} / {self.sar_path}: read failed at rows {y0}-{y1} ({exc})") from exc
        valid = self._valid(self._optical, raw_o, self.optical_bands, self.optical_nodata, window)
        # a WarpedVRT already turned the SAR nodata into NaN
        s_nodata = None if isinstance(self._sar, WarpedVRT) else self.sar_nodata
        valid &= self._valid(self._sar, raw_s, (self.sar_band,), s_nodata, window)
        # a subsample is plenty to spot data on the wrong scale
        self.monitors[0].update(raw_o[:, ::4, ::4], valid[::4, ::4])
        self.monitors[1].update(raw_s[:, ::4, ::4], valid[::4, ::4])
        # pad the raw values (often uint8), so that only one float32 copy of the band exists
        optical = self.optical_scale.apply(pad_reflect(raw_o, *pad))
        sar = self.sar_scale.apply(pad_reflect(raw_s, *pad))
        del raw_o, raw_s
        invalid = ~pad_reflect(valid, *pad)
        if invalid.any():
            # the model's mean: invalid pixels then disturb their valid neighbours as little as possible
            for c in range(3):
                optical[c][invalid] = self.optical_fill[c]
            sar[0][invalid] = self.sar_fill
        return SceneBlock(y0, y1, optical, sar, valid)

    def warnings(self) -> list[str]:
        """Range warnings gathered while reading (values outside the model's 0-255 scale)."""
        return [m for m in (mon.warning() for mon in self.monitors or ()) if m]

    def close(self) -> None:
        """Close the datasets (and the warped view). Safe to call twice."""
        for ds in (self._sar if self._sar is not self._sar_src else None, self._sar_src, self._optical):
            if ds is not None and not ds.closed:
                ds.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
