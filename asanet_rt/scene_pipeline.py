"""Classify a whole optical + SAR scene into a land-cover COG, streaming row bands of tiles through three stages.

reader thread (read + align + scale + cut tiles + batch) -> inference (calling thread) -> writer thread (blend +
write finished block rows). Bounded queues between the stages keep memory at a few bands whatever the scene size.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import rasterio
import rasterio.env

from .blend import FinishedRows, RowBlender
from .errors import AsanetError
from .io_utils import atomic_output
from .progress import Progress, format_seconds
from .scaling import RangeWarning
from .scene import Scene
from .tiling import TileGrid
from .writer import (CLASSES_DESCRIPTION, CONFIDENCE_DESCRIPTION, CONFIDENCE_DTYPES, StripeWriter, class_tags,
                     colormap, confidence_values, sidecar_paths, to_cog, write_aux_xml, write_qml)

if TYPE_CHECKING:
    from .classifier import Classifier

log = logging.getLogger(__name__)

#: Batches waiting between two stages; each holds ``batch`` tiles of inputs or scores.
QUEUE_SIZE = 2
#: GDAL block cache during a run, MB, unless the user sets GDAL_CACHEMAX. GDAL's default (5 % of RAM) would keep
#: every block read or written, so memory would grow with the scene; each block is needed about once here.
GDAL_CACHE_MB = 128
_POLL = 0.1  # seconds between checks of the stop flag while a queue is full or empty


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

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    def format(self) -> str:
        """A human-readable report: outputs, speed, and the share of each class."""
        total = self.width * self.height
        lines = [f"wrote {self.output} ({self.width} x {self.height} px, alignment: {self.alignment})"]
        lines += [f"wrote {p}" for p in (self.confidence, self.quicklook) if p]
        lines.append(f"{self.tiles} tiles of {self.tile[0]} x {self.tile[1]} (overlap {self.overlap}, batch "
                     f"{self.batch}, {self.tiles_skipped} without data skipped) in {format_seconds(self.seconds)} "
                     f"({self.seconds:.2f} s, {self.megapixels_per_second:.2f} Mpx/s, "
                     f"model {self.model_seconds:.2f} s)")
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


class _Sink:
    """The writer stage: blends scores into rows and streams them into the staging files."""

    def __init__(self, grid: TileGrid, num_classes: int, classes_writer: StripeWriter,
                 confidence_writer: StripeWriter | None, confidence_dtype: str, progress: Progress) -> None:
        self.blender = RowBlender(grid, num_classes)
        self.grid = grid
        self.classes_writer = classes_writer
        self.confidence_writer = confidence_writer
        self.confidence_dtype = confidence_dtype
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
        self.classes_writer.write(rows.classes)
        if self.confidence_writer is not None:
            self.confidence_writer.write(confidence_values(rows.confidence, self.confidence_dtype))


def _check_outputs(paths: Sequence[Path | None], inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse before any work: missing folders, existing files without ``overwrite``, an output naming an input."""
    chosen = [p for p in paths if p is not None]
    resolved = [p.resolve() for p in chosen]
    if len(set(resolved)) != len(resolved):
        raise AsanetError(f"output paths must differ: {', '.join(map(str, chosen))}")
    sources = {p.resolve() for p in inputs}
    for path, res in zip(chosen, resolved):
        if res in sources:
            raise AsanetError(f"{path}: is an input; choose another output path")
        if not path.parent.resolve().is_dir():
            raise AsanetError(f"{path}: output folder {path.parent} does not exist")
        if path.exists() and not overwrite:
            raise AsanetError(f"{path}: exists; pass --overwrite to replace it")


def classify_scene(classifier: "Classifier", optical: str | os.PathLike, sar: str | os.PathLike,
                   output: str | os.PathLike, *, confidence: str | os.PathLike | None = None,
                   confidence_dtype: str = "float32", quicklook: str | os.PathLike | None = None,
                   quicklook_size: int = 1024, quicklook_alpha: float = 0.6, tile: int | None = None,
                   overlap: int | None = None, batch: int | None = None,
                   optical_bands: str | Sequence[int] | None = None, sar_band: int = 1,
                   optical_scale: str = "auto", sar_scale: str = "auto", optical_nodata: float | None = None,
                   sar_nodata: float | None = None, sar_resampling: str = "bilinear", overwrite: bool = False,
                   progress: bool = False, sidecars: bool = True) -> SceneSummary:
    """Classify the ``optical`` + ``sar`` GeoTIFF pair into ``output``, a COG on the optical raster's grid.

    Tiles of ``tile`` px (default: the model's native tile) overlap by ``overlap`` px (default a quarter tile)
    and are blended on probabilities with a raised-cosine window, so no seams appear; scene edges are padded by
    reflection. SAR on another grid is resampled onto the optical grid (``sar_resampling``). Pixels without both
    sensors get class 255 (nodata). Outputs are written under temporary names and renamed when complete:
    ``output`` (+ ``.qml`` style and ``.aux.xml`` attribute table unless ``sidecars=False``), ``confidence``
    (float32, or uint8 = round(255 p) with 0 as nodata) and a PNG ``quicklook``.
    """
    t_start = time.perf_counter()
    output = Path(output)
    conf_path = Path(confidence) if confidence is not None else None
    look_path = Path(quicklook) if quicklook is not None else None
    if confidence_dtype not in CONFIDENCE_DTYPES:
        raise AsanetError(f"--confidence-dtype {confidence_dtype!r}: choose {' or '.join(CONFIDENCE_DTYPES)}")
    if not 0.0 <= quicklook_alpha <= 1.0:
        raise AsanetError(f"--quicklook-alpha {quicklook_alpha}: must be between 0 and 1")
    side_paths = sidecar_paths(output) if sidecars else ()
    _check_outputs([output, conf_path, look_path], [Path(optical), Path(sar)], overwrite)
    tile = classifier.check_tile(tile)
    overlap = tile // 4 if overlap is None else int(overlap)
    if not 0 <= overlap <= tile // 2:
        raise AsanetError(f"--overlap {overlap}: must be between 0 and half the tile ({tile // 2})")
    lo, hi = classifier.batch_range
    batch = classifier.default_batch if batch is None else int(batch)
    if not lo <= batch <= hi:
        raise AsanetError(f"--batch {batch}: the model takes batches of {lo} to {hi}")

    with _gdal_cache(), Scene.open(
            optical, sar, optical_bands=optical_bands, sar_band=sar_band, optical_scale=optical_scale,
            sar_scale=sar_scale, optical_nodata=optical_nodata, sar_nodata=sar_nodata,
            sar_resampling=sar_resampling, band_names=classifier.optical_bands,
            optical_fill=classifier.optical_fill(), sar_fill=classifier.sar_fill()) as scene:
        grid = TileGrid.plan(scene.height, scene.width, tile, overlap, classifier.tile_range[0])
        log.info("%s: %d x %d px, %d x %d tiles of %d x %d px (overlap %d), batch %d, SAR %s", optical,
                 scene.width, scene.height, grid.rows, grid.cols, grid.tile_h, grid.tile_w, overlap, batch,
                 scene.alignment)
        with contextlib.ExitStack() as stack:
            # entered first, renamed last: once the map is visible, its sidecars and confidence are too
            tmp_map = stack.enter_context(atomic_output(output, overwrite=overwrite))
            tmp_conf = stack.enter_context(atomic_output(conf_path, overwrite=overwrite)) if conf_path else None
            tmp_side = [stack.enter_context(atomic_output(p, overwrite=True)) for p in side_paths]
            tmp_look = stack.enter_context(atomic_output(look_path, overwrite=overwrite)) if look_path else None
            stage_map = tmp_map.with_name(tmp_map.name + ".stage.tif")
            stage_conf = tmp_conf.with_name(tmp_conf.name + ".stage.tif") if tmp_conf else None
            stack.callback(_remove, stage_map, stage_conf)
            sink, model_seconds = _stream(classifier, scene, grid, batch, stage_map, stage_conf,
                                          confidence_dtype, progress)
            to_cog(stage_map, tmp_map, "mode")
            if tmp_conf is not None:
                to_cog(stage_conf, tmp_conf, "average")
            if tmp_side:
                write_qml(tmp_side[0], classifier.classes, classifier.palette)
                write_aux_xml(tmp_side[1], classifier.classes, classifier.palette, sink.counts.tolist())
            if tmp_look is not None:
                from .quicklook import write_quicklook

                write_quicklook(tmp_look, tmp_map, classifier.classes, classifier.palette, scene=scene,
                                band_names=classifier.optical_bands, max_size=quicklook_size,
                                alpha=quicklook_alpha, counts=sink.counts.tolist())
        messages = scene.warnings()
        alignment = scene.alignment
    for message in messages:
        warnings.warn(message, RangeWarning, stacklevel=2)
    return SceneSummary(
        output=str(output), width=grid.width, height=grid.height, tiles=grid.count,
        tiles_skipped=grid.count - sink.inferred, tile=(grid.tile_h, grid.tile_w), overlap=overlap, batch=batch,
        seconds=time.perf_counter() - t_start, model_seconds=model_seconds, alignment=alignment,
        class_counts=dict(zip(classifier.classes, map(int, sink.counts))), nodata_pixels=sink.nodata,
        confidence=str(conf_path) if conf_path else None, quicklook=str(look_path) if look_path else None,
        sidecars=tuple(map(str, side_paths)), warnings=tuple(messages))


def _gdal_cache() -> contextlib.AbstractContextManager:
    """A rasterio Env capping GDAL's (process-wide) block cache, unless the user already set GDAL_CACHEMAX."""
    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def _remove(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _stream(classifier: "Classifier", scene: Scene, grid: TileGrid, batch: int, stage_map: Path,
            stage_conf: Path | None, confidence_dtype: str, show_progress: bool) -> tuple[_Sink, float]:
    """Run the three stages over the scene; returns the writer stage (histogram) and the seconds spent in the model."""
    tags, band_tags = class_tags(classifier.classes, classifier.palette, classifier.path)
    classes_writer = StripeWriter(stage_map, scene.profile, "uint8", 255, tags, band_tags, CLASSES_DESCRIPTION,
                                  colormap(classifier.palette))
    confidence_writer = None
    try:
        if stage_conf is not None:
            dtype = confidence_dtype
            confidence_writer = StripeWriter(
                stage_conf, scene.profile, dtype, float("nan") if dtype == "float32" else 0,
                {"ASANET_MODEL": tags["ASANET_MODEL"]}, {}, CONFIDENCE_DESCRIPTION,
                scale=1.0 if dtype == "float32" else 1.0 / 255.0)
        progress = Progress(grid.count, enabled=show_progress)
        sink = _Sink(grid, classifier.num_classes, classes_writer, confidence_writer, confidence_dtype, progress)
        run = _Run()
        inbox: queue.Queue = queue.Queue(QUEUE_SIZE)
        outbox: queue.Queue = queue.Queue(QUEUE_SIZE)
        threads = [run.thread(_reader, run, scene, grid, batch, inbox), run.thread(sink, run, outbox)]
        model_seconds = 0.0
        try:
            while (item := run.get(inbox)) is not _END:
                if isinstance(item, _Batch):
                    t0 = time.perf_counter()
                    item.scores = classifier.scores(item.optical, item.sar)
                    model_seconds += time.perf_counter() - t0
                    sink.inferred += len(item.ids)
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
        classes_writer.close()
        if confidence_writer is not None:
            confidence_writer.close()
        return sink, model_seconds
    finally:
        classes_writer.abort()
        if confidence_writer is not None:
            confidence_writer.abort()
