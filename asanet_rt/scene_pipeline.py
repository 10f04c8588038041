"""Classify a whole optical + SAR scene into a land-cover COG, streaming row bands of tiles through three stages.

reader thread (read + align + scale + cut tiles + batch) -> inference (calling thread) -> writer thread (blend +
write finished block rows). Bounded queues between the stages keep memory at a few bands whatever the scene size.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import rasterio
import rasterio.env

from .blend import FinishedRows, RowBlender
from .errors import AsanetError
from .io_utils import atomic_outputs
from .metadata import ModelMetadata
from .plausibility import map_warnings, training_stats
from .preflight import check_outputs
from .progress import Progress, format_seconds
from .scaling import RangeWarning
from .scene import Scene, split_optical
from .tiling import TileGrid, TileSettings
from .sinks import Sink, SinkContext, default_outputs, ordered

log = logging.getLogger(__name__)

#: Batches waiting between two stages; each holds ``batch`` tiles of inputs or scores.
QUEUE_SIZE = 2
#: GDAL block cache during a run, MB, unless the user sets GDAL_CACHEMAX. GDAL's default (5 % of RAM) would keep
#: every block read or written, so memory would grow with the scene; each block is needed about once here.
GDAL_CACHE_MB = 128
_POLL = 0.1  # seconds between checks of the stop flag while a queue is full or empty


class SceneModel(Protocol):
    """What the scene loop needs of a model (``asanet_rt.Classifier`` is one); no import of it needed here."""

    path: str
    metadata: ModelMetadata
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    optical_bands: tuple[str, ...]
    num_classes: int
    tile_range: tuple[int, int]
    backend: str

    def tile_settings(self, tile: int | None = None, overlap: int | None = None,
                      batch: int | None = None) -> TileSettings: ...

    def scores(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray: ...

    def prepare(self, batch: int, tile_h: int, tile_w: int) -> None: ...

    def optical_fill(self) -> tuple[float, float, float]: ...

    def sar_fill(self) -> float: ...


@dataclass(frozen=True)
class SceneSummary:
    """What ``classify_scene`` did: outputs, sizes, timing and the class histogram."""

    output: str
    width: int
    height: int
    tiles: int
    tiles_skipped: int
    tile: tuple[int, int]
    overlap: int
    batch: int
    seconds: float
    model_seconds: float
    alignment: str
    class_counts: dict[str, int]
    nodata_pixels: int
    confidence: str | None = None
    quicklook: str | None = None
    sidecars: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)  # sink kind -> path
    backend: str = ""
    area_km2: float | None = None  # ground area of the scene (None when its CRS gives no ground unit)

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    @property
    def km2_per_second(self) -> float | None:
        """Ground area classified per second of wall time."""
        if self.area_km2 is None or self.seconds <= 0:
            return None
        return self.area_km2 / self.seconds

    @property
    def overlap_factor(self) -> float:
        """How many times each scene pixel went through the model on average (tile overlap and edge padding)."""
        inferred = (self.tiles - self.tiles_skipped) * self.tile[0] * self.tile[1]
        return inferred / (self.width * self.height) if self.width * self.height else 0.0

    def format(self) -> str:
        """A human-readable report: outputs, speed, and the share of each class."""
        total = self.width * self.height
        lines = [f"wrote {self.output} ({self.width} x {self.height} px, alignment: {self.alignment})"]
        lines += [f"wrote {p}" for p in (self.confidence, self.quicklook) if p]
        lines.append(f"{self.tiles} tiles of {self.tile[0]} x {self.tile[1]} (overlap {self.overlap}, batch "
                     f"{self.batch}, {self.tiles_skipped} without data skipped) in {format_seconds(self.seconds)} "
                     f"({self.seconds:.2f} s, {self.megapixels_per_second:.2f} Mpx/s"
                     + (f", {self.km2_per_second:.2f} km2/s" if self.km2_per_second is not None else "")
                     + f", model {self.model_seconds:.2f} s on {self.backend or 'the model'}, each pixel "
                     f"{self.overlap_factor:.2f}x)")
        width = max([len(n) for n in self.class_counts] + [6])
        for name, count in list(self.class_counts.items()) + [("nodata", self.nodata_pixels)]:
            lines.append(f"  {name:<{width}}  {count:>12,d} px  {100.0 * count / total:6.2f} %")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    __str__ = format


@dataclass
class _Band:
    row: int
    y0: int
    valid: np.ndarray
    expected: int
    skipped: int


@dataclass
class _Batch:
    ids: list[tuple[int, int]]
    optical: np.ndarray | None = None
    sar: np.ndarray | None = None
    scores: np.ndarray | None = None


class _Stopped(Exception):
    """Another stage failed; this one leaves quietly."""


@dataclass
class _Run:
    """State shared by the stages: the stop flag and the first error."""

    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def put(self, q: queue.Queue, item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self, q: queue.Queue) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        raise _Stopped

    def thread(self, target: Any, *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                self.errors.append(exc)
                self.stop.set()

        name = getattr(target, "__name__", type(target).__name__)
        t = threading.Thread(target=run, name=f"asanet-{name}", daemon=True)
        t.start()
        return t


_END = object()


def _reader(run: _Run, scene: Scene, grid: TileGrid, batch: int, out: queue.Queue) -> None:
    """Read each band of rows once, pad it by reflection, cut it into tiles and send full batches."""
    th, tw, h, w = grid.tile_h, grid.tile_w, grid.height, grid.width
    bx, ax = max(0, -grid.xs[0]), max(0, grid.xs[-1] + tw - w)
    ids: list[tuple[int, int]] = []
    opts: list[np.ndarray] = []
    sars: list[np.ndarray] = []

    def flush(n: int) -> None:
        run.put(out, _Batch(ids[:n], np.stack(opts[:n]), np.stack(sars[:n])))
        del ids[:n], opts[:n], sars[:n]

    for r, y in enumerate(grid.ys):
        if run.stop.is_set():
            raise _Stopped
        y0, y1 = max(0, y), min(h, y + th)
        block = scene.read_rows(y0, y1, pad=(y0 - y, y + th - y1, bx, ax))
        opt, sar = block.optical, block.sar
        expected = 0
        for c, x in enumerate(grid.xs):
            if not block.valid[:, max(0, x):min(w, x + tw)].any():
                continue  # no pixel of this tile has both sensors: nothing to infer
            ids.append((r, c))
            opts.append(opt[:, :, x + bx:x + bx + tw])
            sars.append(sar[:, :, x + bx:x + bx + tw])
            expected += 1
        run.put(out, _Band(r, y0, block.valid, expected, grid.cols - expected))
        while len(ids) >= batch:
            flush(batch)
    if ids:
        flush(len(ids))
    run.put(out, _END)


class _Writer:
    """The writer stage: blends scores into rows, counts classes, and feeds the rows to every sink."""

    def __init__(self, grid: TileGrid, num_classes: int, sinks: Sequence[Sink], progress: Progress) -> None:
        self.blender = RowBlender(grid, num_classes, keep_scores=any(s.needs_scores for s in sinks))
        self.grid = grid
        self.sinks = sinks
        self.progress = progress
        self.counts = np.zeros(num_classes, np.int64)
        self.nodata = 0
        self.inferred = 0  # tiles that went through the model (counted by the inference stage)

    def __call__(self, run: _Run, inbox: queue.Queue) -> None:
        while (item := run.get(inbox)) is not _END:
            if isinstance(item, _Band):
                done = self.blender.start_band(item.row, item.y0, item.valid, item.expected)
                self.progress.update(item.skipped)
            else:
                done = []
                for (r, c), scores in zip(item.ids, item.scores):
                    done += self.blender.add(r, c, scores)
                self.progress.update(len(item.ids))
            for rows in done:
                self._emit(rows)
        if self.blender.current != self.grid.rows:
            raise RuntimeError(f"only {self.blender.current} of {self.grid.rows} tile rows were finished")

    def _emit(self, rows: FinishedRows) -> None:
        self.counts += np.bincount(rows.classes[rows.valid], minlength=len(self.counts))[:len(self.counts)]
        self.nodata += int(rows.valid.size - rows.valid.sum())
        for sink in self.sinks:
            sink.write(rows)


def _check_outputs(sinks: Sequence[Sink], inputs: Sequence[str | os.PathLike], overwrite: bool) -> None:
    """Refuse before any work: two sinks of one kind, and what ``preflight.check_outputs`` refuses (folders as
    outputs, missing or unwritable folders, existing files without ``overwrite``, an output naming an input)."""
    kinds = [s.kind for s in sinks]
    if len(set(kinds)) != len(kinds):
        raise AsanetError(f"one output of each kind: got {', '.join(kinds)}")
    check_outputs([s.path for s in sinks], inputs, overwrite=overwrite)


#: The output keywords of earlier releases, now one ``outputs`` list (still accepted, with a warning).
_LEGACY_OUTPUT_OPTIONS = ("confidence", "confidence_dtype", "probabilities", "quicklook", "quicklook_size",
                          "quicklook_alpha", "sidecars")


def classify_scene(classifier: SceneModel, optical: str | os.PathLike, sar: str | os.PathLike,
                   output: str | os.PathLike | None = None, *, outputs: Sequence[Sink] | None = None,
                   tile: int | None = None, overlap: int | None = None, batch: int | None = None,
                   optical_bands: str | Sequence[int] | None = None, sar_band: int = 1,
                   optical_scale: str = "auto", sar_scale: str = "auto", optical_nodata: float | None = None,
                   sar_nodata: float | None = None, sar_resampling: str = "bilinear", overwrite: bool = False,
                   progress: bool = False, allow_empty: bool = False, **output_options: Any) -> SceneSummary:
    """Classify the ``optical`` + ``sar`` GeoTIFF pair into ``outputs`` on the optical raster's grid.

    ``outputs`` is a list of sinks (``asanet_rt.sinks``: ``MapSink``, ``ConfidenceSink``, ``ProbabilitySink``,
    ``StyleSink``, ``AttributeTableSink``, ``QuicklookSink``); ``output`` alone means the map COG with its
    ``.qml`` style and ``.aux.xml`` attribute table (``default_outputs``). Tiles of ``tile`` px (default: the
    model's native tile) overlap by ``overlap`` px and are blended on probabilities; scene edges are padded by
    reflection. SAR on another grid is resampled onto the optical grid (``sar_resampling``). Pixels without
    both sensors get class 255 (nodata). Every output is written under a temporary name and all are renamed
    when complete; on any failure none is left behind and existing files are untouched. ``optical`` may also be
    a list (or comma-separated string) of single-band files. A scene where no pixel has both sensors is an error
    unless ``allow_empty``.
    """
    t_start = time.perf_counter()
    sinks = _resolve_outputs(output, outputs, output_options)
    _check_outputs(sinks, [*split_optical(optical), sar], overwrite)
    plan = classifier.tile_settings(tile, overlap, batch)

    with _gdal_cache(), Scene.open(
            optical, sar, optical_bands=optical_bands, sar_band=sar_band, optical_scale=optical_scale,
            sar_scale=sar_scale, optical_nodata=optical_nodata, sar_nodata=sar_nodata,
            sar_resampling=sar_resampling, band_names=classifier.optical_bands,
            optical_fill=classifier.optical_fill(), sar_fill=classifier.sar_fill()) as scene:
        grid = TileGrid.plan(scene.height, scene.width, plan.tile, plan.overlap, classifier.tile_range[0])
        log.info("%s: %d x %d px, %d x %d tiles of %d x %d px (overlap %d), batch %d, SAR %s, backend %s",
                 optical, scene.width, scene.height, grid.rows, grid.cols, grid.tile_h, grid.tile_w, plan.overlap,
                 plan.batch, scene.alignment, classifier.backend)
        # shape-specific set-up (OpenVINO compiles per shape) before the clock of the model stage starts
        classifier.prepare(plan.batch, grid.tile_h, grid.tile_w)
        ctx = SinkContext(classifier.classes, classifier.palette, classifier.path, classifier.optical_bands, scene,
                          dict(scene.profile))
        with contextlib.ExitStack() as stack:
            # in finishing order; the first (the map) is moved into place last, so once it is visible all are
            out = stack.enter_context(atomic_outputs([s.path for s in sinks], overwrite=overwrite))
            for sink in sinks:
                sink.start(ctx, out[sink.path])
                stack.callback(sink.abort)
            writer, model_seconds = _stream(classifier, scene, grid, plan.batch, sinks, progress)
            scene.check_coverage(allow_empty)
            ctx.counts = writer.counts
            for sink in sinks:
                sink.finish(ctx)
        messages = scene.warnings() + map_warnings(writer.counts.tolist(), classifier.classes, scene.input_means(),
                                                   training_stats(classifier.metadata, classifier.optical_bands),
                                                   classifier.optical_bands)
        alignment = scene.alignment
        area = ground_area_km2(scene.profile)
    for message in messages:
        warnings.warn(message, RangeWarning, stacklevel=2)
    by_kind = {s.kind: str(s.path) for s in sinks}
    return SceneSummary(
        output=by_kind.get("map", str(sinks[0].path)), width=grid.width, height=grid.height, tiles=grid.count,
        tiles_skipped=grid.count - writer.inferred, tile=(grid.tile_h, grid.tile_w), overlap=plan.overlap,
        batch=plan.batch, seconds=time.perf_counter() - t_start, model_seconds=model_seconds, alignment=alignment,
        class_counts=dict(zip(classifier.classes, map(int, writer.counts))), nodata_pixels=writer.nodata,
        confidence=by_kind.get("confidence"), quicklook=by_kind.get("quicklook"),
        sidecars=tuple(by_kind[k] for k in ("style", "attribute_table") if k in by_kind),
        warnings=tuple(messages), outputs=by_kind, backend=classifier.backend, area_km2=area)


def ground_area_km2(profile: dict) -> float | None:
    """The ground area of a raster grid: from the pixel size in a projected CRS, or for longitude/latitude
    degrees at the scene centre's latitude; None without a CRS."""
    crs, transform = profile.get("crs"), profile["transform"]
    if crs is None:
        return None
    width, height = profile["width"], profile["height"]
    pixel = abs(transform.a * transform.e - transform.b * transform.d)
    if crs.is_geographic:
        lat = math.radians((transform * (width / 2, height / 2))[1])
        # metres per degree of latitude and of longitude at that latitude (WGS 84 ellipsoid, first terms)
        m_lat = 111132.92 - 559.82 * math.cos(2 * lat) + 1.175 * math.cos(4 * lat)
        m_lon = 111412.84 * math.cos(lat) - 93.5 * math.cos(3 * lat)
        return pixel * m_lat * m_lon * width * height / 1e6
    factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    return pixel * factor * factor * width * height / 1e6


def _resolve_outputs(output: str | os.PathLike | None, outputs: Sequence[Sink] | None,
                     options: dict[str, Any]) -> list[Sink]:
    """The sinks of a call: ``outputs`` as given, or the defaults behind ``output`` and the legacy keywords."""
    unknown = sorted(set(options) - set(_LEGACY_OUTPUT_OPTIONS))
    if unknown:
        raise TypeError(f"classify_scene() got unexpected keyword arguments: {', '.join(unknown)}")
    if outputs is not None:
        if output is not None or options:
            raise AsanetError("give either outputs=[...] or output= (with its output keywords), not both")
        sinks = list(outputs)
    else:
        if output is None:
            raise AsanetError("nothing to write: give output= (the map) or outputs=[...]")
        if options:
            warnings.warn(f"classify_scene({', '.join(sorted(options))}=...) is deprecated; pass "
                          f"outputs=asanet_rt.sinks.default_outputs(output, ...) or a list of sinks",
                          DeprecationWarning, stacklevel=3)
        sinks = default_outputs(output, **options)
    if not sinks:
        raise AsanetError("nothing to write: outputs is empty")
    return ordered(sinks)


def _gdal_cache() -> contextlib.AbstractContextManager:
    """A rasterio Env capping GDAL's (process-wide) block cache, unless the user already set GDAL_CACHEMAX."""
    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def _stream(classifier: SceneModel, scene: Scene, grid: TileGrid, batch: int, sinks: Sequence[Sink],
            show_progress: bool) -> tuple[_Writer, float]:
    """Run the three stages over the scene; returns the writer stage (histogram) and the seconds spent in the model."""
    progress = Progress(grid.count, enabled=show_progress)
    writer = _Writer(grid, classifier.num_classes, sinks, progress)
    run = _Run()
    inbox: queue.Queue = queue.Queue(QUEUE_SIZE)
    outbox: queue.Queue = queue.Queue(QUEUE_SIZE)
    threads = [run.thread(_reader, run, scene, grid, batch, inbox), run.thread(writer, run, outbox)]
    model_seconds = 0.0
    try:
        while (item := run.get(inbox)) is not _END:
            if isinstance(item, _Batch):
                t0 = time.perf_counter()
                item.scores = classifier.scores(item.optical, item.sar)
                model_seconds += time.perf_counter() - t0
                writer.inferred += len(item.ids)
                item.optical = item.sar = None  # free the inputs while the batch waits for the writer
            run.put(outbox, item)
        run.put(outbox, _END)
    except _Stopped:
        pass
    except BaseException:
        run.stop.set()
        raise
    finally:
        for t in threads:
            t.join()
        progress.close()
    if run.errors:
        raise run.errors[0]
    return writer, model_seconds
