"""Open an optical + SAR raster pair, check it, and read it on one pixel grid (the optical one), row band by band."""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from .errors import AsanetError
from .io_utils import is_gdal_path
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


def split_optical(optical: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The optical input as a list of paths: one raster, or one single-band raster per band.

    A string is split on commas unless it names an existing file (``B04.tif,B03.tif,B02.tif``).
    """
    if isinstance(optical, (list, tuple)):
        parts = [os.fspath(p) for p in optical]
    else:
        text = os.fspath(optical)
        parts = [text] if "," not in text or os.path.exists(text) else [p.strip() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise AsanetError(f"optical input {optical!r}: empty path in the list of per-band files")
    return parts


def _open(path: str | os.PathLike, role: str) -> rasterio.io.DatasetReader:
    text = os.fspath(path)
    if not is_gdal_path(text):
        if not Path(text).exists():
            raise AsanetError(f"{text}: {role} file not found")
        if Path(text).is_dir():
            raise AsanetError(f"{text}: {role} path is a folder, not a raster file")
    try:
        return rasterio.open(text)
    except RasterioError as exc:
        what = "not found or not a readable raster" if is_gdal_path(text) else "not a readable raster"
        raise AsanetError(f"{text}: {what} ({exc})") from exc


class BandStack:
    """Single-band rasters, one per optical band, read as one multi-band raster on the first file's grid.

    Files on another grid are resampled onto it on the fly, as the SAR is. Offers the part of rasterio's
    dataset interface the scene and the quick-look use.
    """

    def __init__(self, paths: Sequence[str], datasets: Sequence[rasterio.io.DatasetReader],
                 resampling: str) -> None:
        for path, ds in zip(paths, datasets):
            if ds.count != 1:
                raise AsanetError(f"{path}: has {ds.count} bands; in a list of per-band optical files each file "
                                  f"holds one band (give a multi-band file alone and pick bands with "
                                  f"--optical-bands)")
        self.paths, self.sources = list(paths), list(datasets)
        ref = datasets[0]
        self.views = [ds if i == 0 else _align(ref, paths[0], ds, path, resampling, ds.nodata, "optical band")[0]
                      for i, (path, ds) in enumerate(zip(paths, datasets))]
        self.crs, self.transform, self.width, self.height = ref.crs, ref.transform, ref.width, ref.height
        self.bounds, self.count, self.nodata = ref.bounds, len(datasets), None
        self.dtypes = tuple(ds.dtypes[0] for ds in datasets)
        self.colorinterp = tuple(ds.colorinterp[0] for ds in datasets)
        # a file's own band description, else its name (Sentinel-2 files are named after their band: B04.tif)
        self.descriptions = tuple(ds.descriptions[0] or Path(p.split("?", 1)[0]).stem
                                  for p, ds in zip(paths, datasets))

    @property
    def closed(self) -> bool:
        return self.sources[0].closed

    def read(self, indexes: Sequence[int], **kwargs: Any) -> np.ndarray:
        """Bands ``indexes`` (1-based, one per file) stacked like ``DatasetReader.read``."""
        out_shape = kwargs.pop("out_shape", None)
        if out_shape is not None:
            kwargs["out_shape"] = tuple(out_shape)[-2:]
        bands = [self.views[b - 1].read(1, **kwargs) for b in indexes]
        return np.ma.stack(bands) if kwargs.get("masked") else np.stack(bands)

    def valid(self, indexes: Sequence[int], raw: np.ndarray, nodata: float | None, window: Window) -> np.ndarray:
        """Pixels where every one of the files has data (each file judged by its own nodata and mask)."""
        valid = np.ones(raw.shape[1:], bool)
        for i, b in enumerate(indexes):
            view = self.views[b - 1]
            own = nodata if nodata is not None else (float("nan") if view is not self.sources[b - 1]
                                                     else view.nodata)
            valid &= _valid_pixels(view, raw[i:i + 1], (1,), own, window)
        return valid

    def close(self) -> None:
        for view, ds in zip(self.views, self.sources):
            for d in ((view, ds) if view is not ds else (ds,)):
                if not d.closed:
                    d.close()


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


def _align(ref: Any, ref_path: str, ds: rasterio.io.DatasetReader, path: str, resampling: str,
           src_nodata: float | None, role: str) -> tuple[rasterio.io.DatasetReader | WarpedVRT, str]:
    """``ds`` on the grid of ``ref``: itself when the grids match, else a WarpedVRT; and how it was aligned."""
    if ref.crs is None and ds.crs is None:
        if (ref.width, ref.height) != (ds.width, ds.height):
            raise AsanetError(f"{ref_path} ({ref.width} x {ref.height}) and {path} ({ds.width} x {ds.height}) "
                              f"have no CRS and different sizes; georeference them so the {role} can be aligned")
        warnings.warn(f"{ref_path} and {path} have no CRS; stacking them by pixel index (make sure they cover "
                      f"the same ground)", AlignmentWarning, stacklevel=5)
        return ds, "pixel index"
    for d, p in ((ref, ref_path), (ds, path)):
        if d.crs is None:
            other = path if p == ref_path else ref_path
            raise AsanetError(f"{p}: has no CRS but {other} has one; cannot align them (assign the CRS, "
                              f"e.g. with `rio edit-info --crs`)")
    if _same_grid(ref, ds):
        return ds, "same grid"
    try:
        left, bottom, right, top = transform_bounds(ds.crs, ref.crs, *ds.bounds, densify_pts=21)
    except Exception as exc:  # noqa: BLE001 - PROJ raises several types
        raise AsanetError(f"{path}: cannot transform its bounds to the CRS of {ref_path} ({exc})") from exc
    o = ref.bounds
    if min(right, o.right) <= max(left, o.left) or min(top, o.top) <= max(bottom, o.bottom):
        raise AsanetError(f"{path} and {ref_path} do not overlap ({role} bounds {left:.6g}, {bottom:.6g}, "
                          f"{right:.6g}, {top:.6g} vs {o.left:.6g}, {o.bottom:.6g}, {o.right:.6g}, {o.top:.6g} "
                          f"in {ref.crs})")
    log.info("resampling %s onto the grid of %s (%s)", path, ref_path, resampling)
    # Float32 with NaN as nodata: the warp marks pixels outside the footprint, whatever the source's dtype.
    return WarpedVRT(ds, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
                     resampling=Resampling[resampling], src_nodata=src_nodata, nodata=float("nan"),
                     dtype="float32"), "warped"


def _valid_pixels(ds: Any, raw: np.ndarray, bands: Sequence[int], nodata: float | None,
                  window: Window) -> np.ndarray:
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
    _optical: rasterio.io.DatasetReader | BandStack | None = field(default=None, repr=False)
    _sar_src: rasterio.io.DatasetReader | None = field(default=None, repr=False)
    _sar: rasterio.io.DatasetReader | WarpedVRT | None = field(default=None, repr=False)
    monitors: tuple[RangeMonitor, RangeMonitor] | None = field(default=None, repr=False)
    #: pixels read so far, and of those with optical data, SAR data, and both
    coverage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("read", "optical", "sar", "both"), 0))
    #: sums over a subsample of valid pixels, on the model's 0-255 scale: optical bands, SAR, and their count
    _sums: np.ndarray = field(default_factory=lambda: np.zeros(5), repr=False)

    @classmethod
    def open(cls, optical: str | os.PathLike | Sequence[str | os.PathLike], sar: str | os.PathLike, *,
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
        if isinstance(sar_band, bool) or not isinstance(sar_band, (int, np.integer)) or sar_band < 1:
            raise AsanetError(f"--sar-band {sar_band!r}: band numbers start at 1")
        optical_paths = split_optical(optical)
        opened: list[rasterio.io.DatasetReader] = []
        try:
            for path in optical_paths:
                opened.append(_open(path, "optical"))
            opt = opened[0] if len(opened) == 1 else BandStack(optical_paths, opened, sar_resampling)
            sar_src = _open(sar, "SAR")
        except BaseException:
            for ds in opened:
                ds.close()
            raise
        scene = cls(",".join(optical_paths), os.fspath(sar), (), int(sar_band), o_scale, s_scale, "same grid",
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
        view, self.alignment = _align(self._optical, self.optical_path, self._sar_src, self.sar_path, resampling,
                                      self.sar_nodata, "SAR")
        return view

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

    def _valid(self, ds: Any, raw: np.ndarray, bands: Sequence[int], nodata: float | None,
               window: Window) -> np.ndarray:
        if isinstance(ds, BandStack):
            return ds.valid(bands, raw, nodata, window)
        return _valid_pixels(ds, raw, bands, nodata, window)

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
        valid_o = self._valid(self._optical, raw_o, self.optical_bands, self.optical_nodata, window)
        # a WarpedVRT already turned the SAR nodata into NaN
        s_nodata = None if isinstance(self._sar, WarpedVRT) else self.sar_nodata
        valid_s = self._valid(self._sar, raw_s, (self.sar_band,), s_nodata, window)
        valid = valid_o & valid_s
        self._count(valid_o, valid_s, valid, raw_o, raw_s)
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

    def _count(self, valid_o: np.ndarray, valid_s: np.ndarray, valid: np.ndarray, raw_o: np.ndarray,
               raw_s: np.ndarray) -> None:
        """Coverage counts, and value sums over every 4th pixel for the comparison with the training data."""
        for key, mask in (("optical", valid_o), ("sar", valid_s), ("both", valid)):
            self.coverage[key] += int(mask.sum())
        self.coverage["read"] += valid.size
        sub = valid[::4, ::4]
        if sub.any():
            o = self.optical_scale.apply(raw_o[:, ::4, ::4][:, sub])
            s = self.sar_scale.apply(raw_s[:, ::4, ::4][:, sub])
            self._sums += np.concatenate([np.nansum(o, axis=1), np.nansum(s, axis=1), [sub.sum()]])

    def input_means(self) -> tuple[tuple[float, ...], float] | None:
        """Mean optical (per band, model order) and SAR values seen so far on the 0-255 scale; None before data."""
        n = self._sums[4]
        if not n:
            return None
        return tuple(float(v) for v in self._sums[:3] / n), float(self._sums[3] / n)

    def check_coverage(self, allow_empty: bool = False) -> None:
        """After reading the scene: an error when no pixel has both sensors, unless ``allow_empty``."""
        if self.coverage["both"] or not self.coverage["read"] or allow_empty:
            return
        if not self.coverage["optical"]:
            nodata = f"nodata {self.optical_nodata:g}" if self.optical_nodata is not None else "no data"
            why = f"every optical pixel is NaN, masked or {nodata}"
        elif not self.coverage["sar"]:
            nodata = f"nodata {self.sar_nodata:g}" if self.sar_nodata is not None else "no data"
            why = f"every SAR pixel on the optical grid is NaN, masked, outside its footprint or {nodata}"
        else:
            why = "the pixels with optical data and those with SAR data do not overlap"
        raise AsanetError(f"{self.optical_path} + {self.sar_path}: no pixel has both sensors ({why}); check "
                          f"--optical-nodata / --sar-nodata and the footprints, or pass --allow-empty to write an "
                          f"all-nodata map")

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
