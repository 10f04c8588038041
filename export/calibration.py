"""Calibration and evaluation tiles from real optical + SAR rasters, and activation ranges with checked statistics.

Sources (``--calib`` / ``--labels``) are folders or explicit pairs:

- a folder with an optical and a SAR subfolder holding files of the same name (``optical/`` + ``sar/``, or the
  TerraMesh names ``S2RGB/`` + ``S1RTC/``), and for labelled tiles a label subfolder (``labels/``, ``LULC/``);
- ``OPTICAL.tif,SAR.tif`` (``,LABEL.tif`` for labelled tiles): one co-registered scene pair.

Pixels are brought to the model's raw 0-255 input scale with the runtime's scaling (``asanet_rt.scaling``, see
``Scaling``): 8-bit data as is, Sentinel-2 reflectance x10000 from 0..3000, Sentinel-1 dB from -25..0. Optical
bands are read in the file's colour order (``colorinterp`` red/green/blue, else R, G, B) and reordered to the
exported ``optical`` input's band order. Scenes are cut into non-overlapping square tiles.

Activation ranges are collected one tile at a time with ONNX Runtime's own histogram collector, and every
tensor's statistics are checked against an independent running min/max and element count, so a collector that
drops data (as ``CalibMaxIntermediateOutputs`` was seen to in ONNX Runtime 1.32) cannot go unnoticed.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx

from asanet_rt.errors import AsanetError

log = logging.getLogger(__name__)

# our folder layout, TerraMesh's, and the official datasets' (WHU-OPT-SAR, PIE-RGB-SAR, DDHR-SK)
OPTICAL_DIRS = ("optical", "opt", "rgb", "s2rgb", "s2", "opt_dir", "gf2")
SAR_DIRS = ("sar", "s1", "s1rtc", "s1grd", "sar_dir", "gf3")
LABEL_DIRS = ("labels", "label", "lulc", "mask", "masks", "gt")
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jp2", ".vrt", ".img")
CALIB_METHODS = ("minmax", "percentile", "entropy")
IGNORE_INDEX = 255


@dataclass(frozen=True)
class Scaling:
    """How raw file values become the model's 0-255 scale: ``asanet_rt.scaling`` specs (the runtime's own).

    ``auto`` here picks per file what the shared imagery needs: 8-bit data as is; other optical data
    ``reflectance:0:3000`` (Sentinel-2 L2A x10000); float SAR with negative values ``db:-25:0``, other float SAR
    ``linear-power:-25:0``. Give explicit specs (e.g. ``db:-30:5``) for anything else.
    """

    optical: str = "auto"
    sar: str = "auto"

    def optical_scale(self, data: np.ndarray):
        from asanet_rt.scaling import Scale

        if self.optical != "auto":
            return Scale.parse(self.optical, "optical scaling")
        return Scale("none") if data.dtype == np.uint8 else Scale("reflectance", 0.0, 3000.0)

    def sar_scale(self, data: np.ndarray):
        from asanet_rt.scaling import Scale

        if self.sar != "auto":
            return Scale.parse(self.sar, "SAR scaling")
        if data.dtype == np.uint8:
            return Scale("none")
        finite = data[np.isfinite(data)]
        if finite.size and finite.min() < 0:
            return Scale("db", -25.0, 0.0)
        return Scale("linear-power", -25.0, 0.0)


@dataclass(frozen=True)
class ScenePair:
    """One co-registered optical + SAR scene (and an optional label raster)."""

    optical: Path
    sar: Path
    label: Path | None = None
    label_map: str = "identity"  # identity, whu, reduce-zero (asanet_rt.evaluate's dataset encodings)

    @property
    def name(self) -> str:
        return self.optical.name


@dataclass
class Tile:
    """One model input tile on the raw 0-255 scale, in the exported ``optical`` band order."""

    optical: np.ndarray  # (1, 3, H, W) float32
    sar: np.ndarray  # (1, 1, H, W) float32
    source: str
    label: np.ndarray | None = None  # (1, H, W) uint8 class indices, 255 = ignore
    #: where the tile was cut: (resolved optical path, row, column, height, width); empty for synthetic tiles
    origin: tuple = ()

    def feed(self) -> dict[str, np.ndarray]:
        return {"optical": self.optical, "sar": self.sar}

    def overlaps(self, other: "Tile") -> bool:
        """True when both tiles were cut from the same optical file and share pixels."""
        if not self.origin or not other.origin or self.origin[0] != other.origin[0]:
            return False
        _, y, x, h, w = self.origin
        _, oy, ox, oh, ow = other.origin
        return y < oy + oh and oy < y + h and x < ox + ow and ox < x + w


def _subdir(folder: Path, names: Sequence[str]) -> Path | None:
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() in names:
            return child
    return None


def _rasters(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES}


def find_scene_pairs(sources: Sequence[str | os.PathLike], labels: bool = False) -> list[ScenePair]:
    """Resolve ``--calib`` / ``--labels`` arguments into scene pairs; a clear error for anything unusable."""
    flag = "--labels" if labels else "--calib"
    if not sources:
        raise AsanetError(f"{flag}: no calibration data given; pass a folder of tiles or OPTICAL.tif,SAR.tif pairs")
    pairs: list[ScenePair] = []
    for source in sources:
        text = str(source)
        if "," in text:
            parts = [Path(p.strip()) for p in text.split(",")]
            need = 3 if labels else 2
            if len(parts) != need:
                form = "OPTICAL.tif,SAR.tif,LABEL.tif" if labels else "OPTICAL.tif,SAR.tif"
                raise AsanetError(f"{flag} {text}: expected {form}")
            for part in parts:
                if not part.is_file():
                    raise AsanetError(f"{flag} {text}: {part} does not exist")
            pairs.append(ScenePair(parts[0], parts[1], parts[2] if labels else None))
            continue
        folder = Path(text)
        if not folder.exists():
            raise AsanetError(f"{flag} {folder}: does not exist")
        if labels and folder.is_dir():
            # labelled data: the runtime evaluator's layouts (folder, WHU-OPT-SAR, PIE-RGB-SAR, DDHR-SK)
            from asanet_rt.evaluate import DATASETS, find_samples

            layout, samples = find_samples(folder)
            pairs += [ScenePair(x.optical, x.sar, x.label, DATASETS[layout].label_map) for x in samples]
            continue
        if not folder.is_dir():
            raise AsanetError(f"{flag} {folder}: a single raster is not enough; give a folder with optical/ and "
                              f"sar/ subfolders or an OPTICAL.tif,SAR.tif pair")
        opt_dir, sar_dir = _subdir(folder, OPTICAL_DIRS), _subdir(folder, SAR_DIRS)
        lab_dir = _subdir(folder, LABEL_DIRS) if labels else None
        if opt_dir is None or sar_dir is None or (labels and lab_dir is None):
            want = "optical/, sar/" + (" and labels/" if labels else "")
            raise AsanetError(f"{flag} {folder}: no tiles found; expected subfolders {want} (or S2RGB/, S1RTC/"
                              f"{', LULC/' if labels else ''}) holding rasters of the same names")
        optical, sar = _rasters(opt_dir), _rasters(sar_dir)
        label_files = _rasters(lab_dir) if lab_dir is not None else {}
        names = sorted(set(optical) & set(sar) & (set(label_files) if labels else set(optical)))
        if not names:
            raise AsanetError(f"{flag} {folder}: no raster in {opt_dir.name}/ has a namesake in {sar_dir.name}/"
                              f"{' and ' + lab_dir.name + '/' if lab_dir else ''}; the calibration set is empty")
        pairs += [ScenePair(optical[n], sar[n], label_files.get(n)) for n in names]
    return pairs


def _read(path: Path) -> tuple[np.ndarray, tuple]:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain tiles (PNG, JPEG) carry no CRS
            with rasterio.open(path) as src:
                return src.read(), tuple(src.colorinterp)
    except rasterio.errors.RasterioIOError as exc:
        raise AsanetError(f"{path}: not a readable raster ({exc})") from exc


def read_optical(path: Path, bands: Sequence[str], scaling: Scaling) -> np.ndarray:
    """(3, H, W) float32 on the 0-255 scale in the order ``bands`` names."""
    from rasterio.enums import ColorInterp

    data, interp = _read(path)
    if data.shape[0] != 3:
        raise AsanetError(f"{path}: optical raster has {data.shape[0]} band(s); expected 3 (red, green, blue)")
    colours = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}
    file_order = [colours.get(c) for c in interp]
    if sorted(filter(None, file_order)) != ["blue", "green", "red"]:
        file_order = ["red", "green", "blue"]  # GeoTIFF convention when the file does not say
    data = data[[file_order.index(b) for b in bands]]
    return np.nan_to_num(scaling.optical_scale(data).apply(data), nan=0.0)


def read_sar(path: Path, scaling: Scaling) -> np.ndarray:
    """(1, H, W) float32 on the 0-255 scale from the first band (VV)."""
    data, _ = _read(path)
    if data.shape[0] not in (1, 2, 3):
        raise AsanetError(f"{path}: SAR raster has {data.shape[0]} bands; expected 1 (VV), 2 (VV, VH) or 3 "
                          f"(one band replicated)")
    band = data[:1]
    return np.nan_to_num(scaling.sar_scale(band).apply(band), nan=0.0)


def read_label(path: Path, num_classes: int, label_map: str = "identity") -> np.ndarray:
    """(H, W) uint8 class indices; values outside 0..K-1 become the ignore index."""
    from asanet_rt.evaluate import reduce_zero_label, whu_label_map

    data, _ = _read(path)
    if data.shape[0] != 1:
        raise AsanetError(f"{path}: label raster has {data.shape[0]} bands; expected 1 (class indices)")
    label = data[0]
    if label_map == "whu":
        label = whu_label_map(label)
    elif label_map == "reduce-zero":
        label = reduce_zero_label(label)
    label = np.asarray(label).astype(np.int64)
    return np.where((label >= 0) & (label < num_classes), label, IGNORE_INDEX).astype(np.uint8)


def tile_edge(height: int, width: int, wanted: int) -> int:
    """The largest multiple of 32 not above ``wanted`` that fits the scene (at least 32)."""
    edge = min(wanted, height, width) // 32 * 32
    if edge < 32:
        raise AsanetError(f"scene of {height}x{width} px is smaller than the network's 32 px minimum")
    return edge


def read_tiles(sources: Sequence[str | os.PathLike], bands: Sequence[str], tile: int, max_tiles: int,
               scaling: Scaling = Scaling(), num_classes: int | None = None) -> list[Tile]:
    """Up to ``max_tiles`` tiles of edge ``tile`` (smaller scenes give one tile of their own size), spread over
    the scenes round-robin; with ``num_classes`` the sources are labelled and every tile carries its label."""
    if max_tiles < 1:
        raise AsanetError(f"--calib-tiles {max_tiles}: need at least one tile")
    labelled = num_classes is not None
    pairs = find_scene_pairs(sources, labels=labelled)
    per_scene: list[list[Tile]] = []
    for pair in pairs:
        optical = read_optical(pair.optical, bands, scaling)
        sar = read_sar(pair.sar, scaling)
        if optical.shape[1:] != sar.shape[1:]:
            raise AsanetError(f"{pair.sar}: {sar.shape[1]}x{sar.shape[2]} px but {pair.optical} is "
                              f"{optical.shape[1]}x{optical.shape[2]}; resample SAR onto the optical grid first")
        label = read_label(pair.label, num_classes, pair.label_map) if labelled and pair.label else None
        if label is not None and label.shape != optical.shape[1:]:
            raise AsanetError(f"{pair.label}: {label.shape[0]}x{label.shape[1]} px but {pair.optical} is "
                              f"{optical.shape[1]}x{optical.shape[2]}")
        h, w = optical.shape[1:]
        edge = tile_edge(h, w, tile)
        tiles = []
        for y in range(0, h - edge + 1, edge):
            for x in range(0, w - edge + 1, edge):
                win = (slice(y, y + edge), slice(x, x + edge))
                tiles.append(Tile(np.ascontiguousarray(optical[(slice(None), *win)][None]),
                                  np.ascontiguousarray(sar[(slice(None), *win)][None]),
                                  f"{pair.name}@{y},{x}",
                                  None if label is None else np.ascontiguousarray(label[win][None]),
                                  (str(pair.optical.resolve()), y, x, edge, edge)))
        per_scene.append(tiles)
    chosen: list[Tile] = []
    for i in range(max(map(len, per_scene), default=0)):
        chosen += [tiles[i] for tiles in per_scene if i < len(tiles)]
    if not chosen:
        raise AsanetError(f"{', '.join(map(str, sources))}: the calibration set is empty")
    return chosen[:max_tiles]


#: At most this many tiles beyond ``--calib-tiles`` are read and held out for the accuracy report.
HELD_OUT_MAX = 16


@dataclass
class CalibrationSplit:
    """Tiles for calibration and tiles held out of it (for an honest accuracy figure), and what was said."""

    calibration: list[Tile]
    held_out: list[Tile]
    available: int
    asked: int
    warnings: list[str] = field(default_factory=list)


def split_calibration(tiles: Sequence[Tile], asked: int, hold_out: bool = True,
                      held_out_max: int = HELD_OUT_MAX) -> CalibrationSplit:
    """Split ``tiles`` (``read_tiles`` order) into ``asked`` calibration tiles and held-out evaluation tiles.

    With more tiles than asked, the extra ones (up to ``held_out_max``) are held out. With ``asked`` or fewer, a
    quarter of them (at least one) is held out and the rest calibrate, so the report never grades the INT8
    model on the tiles that set its ranges; a single tile can only be both. A warning says when fewer tiles
    calibrate than ``--calib-tiles`` asked.
    """
    tiles = list(tiles)
    n = len(tiles)
    if not hold_out:
        calib, held = tiles[:asked], []
    elif n > asked:
        calib, held = tiles[:asked], tiles[asked:asked + held_out_max]
    elif n >= 2:
        spare = max(1, n // 4)
        calib, held = tiles[:n - spare], tiles[n - spare:]
    else:
        calib, held = tiles, []
    warnings = []
    if len(calib) < asked:
        why = f"only {n} tile(s) found" if n <= asked else f"{n} tile(s) found"
        kept = f", {len(held)} held out to measure accuracy" if held else ""
        warnings.append(f"--calib-tiles {asked}: {why}; calibrating on {len(calib)}{kept}. Give more or larger "
                        f"scenes for a sturdier calibration")
    if hold_out and not held:
        warnings.append("--calib: a single calibration tile, none left to hold out: the accuracy report is "
                        "in-sample (pass --labels with other scenes for a held-out figure)")
    return CalibrationSplit(calib, held, n, asked, warnings)


def synthetic_tiles(count: int, size: int, seed: int = 0) -> list[Tile]:
    """Smooth random images (coarse and fine blobs plus noise) for when no real imagery is given."""
    rng = np.random.default_rng(seed)
    tiles = []
    for i in range(count):
        planes = []
        for channels in (3, 1):
            coarse = rng.uniform(0, 255, (channels, size // 32 + 2, size // 32 + 2))
            fine = rng.uniform(-40, 40, (channels, size // 8 + 2, size // 8 + 2))
            img = _upsample(coarse, size) + _upsample(fine, size) + rng.normal(0, 4, (channels, size, size))
            planes.append(np.clip(img, 0, 255).astype(np.float32)[None])
        tiles.append(Tile(planes[0], planes[1], f"synthetic#{i}"))
    return tiles


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (C, h, w) to (C, size, size)."""
    h, w = grid.shape[1:]
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.floor(ys).astype(int).clip(0, h - 2), np.floor(xs).astype(int).clip(0, w - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g = grid
    top = g[:, y0][:, :, x0] * (1 - fx) + g[:, y0][:, :, x0 + 1] * fx
    bottom = g[:, y0 + 1][:, :, x0] * (1 - fx) + g[:, y0 + 1][:, :, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


class TileReader:
    """An ONNX Runtime ``CalibrationDataReader`` over tiles, one tile per batch (the graph has dynamic shapes)."""

    def __init__(self, tiles: Sequence[Tile]) -> None:
        self.tiles = list(tiles)
        self._it: Iterator[Tile] = iter(self.tiles)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tile = next(self._it, None)
        return None if tile is None else tile.feed()

    def rewind(self) -> None:
        self._it = iter(self.tiles)

    def __len__(self) -> int:
        return len(self.tiles)


# ---------------------------------------------------------------------------------------------------- ranges
@dataclass
class CalibrationResult:
    """Per-tensor quantisation ranges (``lo``, ``hi``) plus what was observed, for the report and the checks."""

    method: str
    symmetric: bool
    ranges: dict[str, tuple[float, float]]
    observed: dict[str, tuple[float, float]]
    counts: dict[str, int]
    tiles: int
    sources: list[str] = field(default_factory=list)

    def tensors_data(self):
        """The ranges as ONNX Runtime's ``TensorsData`` (what ``quantize_static`` reads from a cache file)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[self.method]
        return TensorsData(method, {name: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
                                    for name, (lo, hi) in self.ranges.items()})

    def renamed(self, mapping: dict[str, str]) -> "CalibrationResult":
        """The same statistics under other tensor names (``mapping``: new name -> name here)."""
        pick = {new: old for new, old in mapping.items() if old in self.ranges}
        return CalibrationResult(self.method, self.symmetric, {n: self.ranges[o] for n, o in pick.items()},
                                 {n: self.observed[o] for n, o in pick.items()},
                                 {n: self.counts[o] for n, o in pick.items()}, self.tiles, list(self.sources))


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the float tensors ``names`` (intermediate activations)."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    for name in names:
        if name not in existing:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return augmented


def make_session(model: onnx.ModelProto | str | os.PathLike, optimize: bool = True, threads: int = 0):
    """A CPU ONNX Runtime session (``optimize=False`` keeps every intermediate tensor as the graph names it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def collect_ranges(model: onnx.ModelProto, tiles: Sequence[Tile], tensors: Sequence[str], method: str,
                   symmetric: bool, percentile: float = 99.999, num_bins: int | None = None) -> CalibrationResult:
    """Quantisation ranges of ``tensors`` over ``tiles`` with ``method`` (minmax, percentile or entropy).

    One tile at a time: the activations of a tile are folded into running statistics and dropped, so memory
    does not grow with the calibration set. Histograms come from ONNX Runtime's ``HistogramCollector``
    (percentile and entropy thresholds are its algorithms); each histogram's total count and min/max must match
    an independent tally, otherwise collected data was lost and this raises.
    """
    from onnxruntime.quantization.calibrate import HistogramCollector

    if method not in CALIB_METHODS:
        raise AsanetError(f"--calib-method {method!r}: choose one of {', '.join(CALIB_METHODS)}")
    if not tiles:
        raise AsanetError("calibration set is empty: no tiles to collect activation ranges from")
    tensors = list(dict.fromkeys(tensors))
    session = make_session(with_outputs(model, tensors), optimize=False)
    lo = {n: np.inf for n in tensors}
    hi = {n: -np.inf for n in tensors}
    count = {n: 0 for n in tensors}
    collector = None
    if method != "minmax":
        bins = num_bins or (2048 if method == "percentile" else 512)
        # Always the signed-value histogram: ORT's absolute-value path (symmetric percentile) rounds its bin edges
        # to float32 on merge and silently drops the largest values (caught by the check below). A symmetric
        # target symmetrises the two-sided result instead. Entropy: 128 quantised bins over a finer histogram.
        collector = HistogramCollector(method=method, symmetric=False, num_bins=bins, num_quantized_bins=128,
                                       percentile=percentile, scenario="same")
    quiet = io.StringIO()  # the collector prints progress lines for every call
    for tile in tiles:
        values = dict(zip(tensors, session.run(tensors, tile.feed())))
        for name, arr in values.items():
            if not np.isfinite(arr).all():
                raise AsanetError(f"calibration tile {tile.source}: tensor {name} has NaN or inf values")
            lo[name] = min(lo[name], float(arr.min()))
            hi[name] = max(hi[name], float(arr.max()))
            count[name] += arr.size
        if collector is not None:
            with contextlib.redirect_stdout(quiet):
                collector.collect({name: [arr.astype(np.float32, copy=False)] for name, arr in values.items()})
    observed = {n: (lo[n], hi[n]) for n in tensors}
    if collector is None:
        ranges = dict(observed)
    else:
        _check_histograms(collector.get_histogram_dict(), observed, count)
        with contextlib.redirect_stdout(quiet):
            thresholds = collector.compute_collection_result()
        ranges = {n: (float(thresholds[n][0]), float(thresholds[n][1])) for n in tensors}
    if symmetric:
        ranges = {n: (-max(abs(a), abs(b)), max(abs(a), abs(b))) for n, (a, b) in ranges.items()}
    return CalibrationResult(method, symmetric, ranges, observed, count, len(tiles), [t.source for t in tiles])


def _check_histograms(hists: dict, observed: dict[str, tuple[float, float]], count: dict[str, int]) -> None:
    """Every value seen must be in its histogram, with the same extremes: no collected data was dropped."""
    for name, (lo, hi) in observed.items():
        if name not in hists:
            raise AsanetError(f"calibration lost tensor {name}: no histogram was collected for it")
        hist = hists[name]
        total = int(np.asarray(hist[0]).sum())
        h_lo, h_hi = float(hist[2]), float(hist[3])
        if total != count[name] or not np.isclose(h_lo, lo) or not np.isclose(h_hi, hi):
            raise AsanetError(f"calibration statistics of {name} are inconsistent: histogram holds {total} values in "
                              f"[{h_lo:g}, {h_hi:g}], {count[name]} values in [{lo:g}, {hi:g}] were seen")
