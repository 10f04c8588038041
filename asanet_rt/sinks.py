"""Output sinks: what the scene loop writes. Each sink is one output file fed with finished rows.

``classify_scene(..., outputs=[MapSink("lc.tif"), ConfidenceSink("conf.tif"), ...])``. The scene loop gives every
sink a temporary path beside its final one (``start``), feeds it the blended rows in order (``write``), asks it to
complete its file (``finish``), and renames all files into place only when every sink has finished; a failure
anywhere leaves no output behind and existing files untouched. A new output format is one subclass.
"""
from __future__ import annotations

import abc
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .blend import FinishedRows
from .errors import AsanetError
from .writer import (CLASSES_DESCRIPTION, CONFIDENCE_DESCRIPTION, CONFIDENCE_DTYPES, PROBABILITY_DESCRIPTION,
                     StripeWriter, class_tags, colormap, confidence_values, sidecar_paths, to_cog, write_aux_xml,
                     write_qml)

if TYPE_CHECKING:
    from .scene import Scene


@dataclass
class SinkContext:
    """What sinks may need besides the rows: the model's classes, the scene, and what other sinks staged."""

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    model: str                       # model file path (recorded in tags)
    optical_bands: tuple[str, ...]   # the model's input band names (for the quick-look's colours)
    scene: "Scene"
    profile: dict[str, Any]          # crs, transform, width, height of the output grid
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # pixels per class, set at the end
    staged: dict[str, Path] = field(default_factory=dict)  # sink kind -> its finished temporary file


class Sink(abc.ABC):
    """One output file. Subclasses set ``kind`` (unique per run) and implement what they need of the hooks."""

    kind: str = ""
    #: whether ``write`` needs ``rows.scores`` (blended per-class scores cost memory; kept only when asked)
    needs_scores: bool = False

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp: Path | None = None

    def start(self, ctx: SinkContext, tmp: Path) -> None:
        """Open the temporary file ``tmp`` (streaming sinks open their writer here)."""
        self.tmp = tmp

    def write(self, rows: FinishedRows) -> None:
        """Take the next finished rows (scene order)."""

    @abc.abstractmethod
    def finish(self, ctx: SinkContext) -> None:
        """Complete the temporary file; ``ctx.counts`` and the ``ctx.staged`` files of earlier sinks are final."""

    def abort(self) -> None:
        """Release what ``start`` opened after a failure (the temporary files are removed by the loop)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class _StreamedCog(Sink):
    """Rows streamed into a tiled staging GeoTIFF, copied into a COG by ``finish``."""

    overview_resampling = "nearest"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self.writer: StripeWriter | None = None
        self.stage: Path | None = None

    @abc.abstractmethod
    def _open_writer(self, ctx: SinkContext, stage: Path) -> StripeWriter:
        """The staging writer for this output."""

    def start(self, ctx: SinkContext, tmp: Path) -> None:
        super().start(ctx, tmp)
        self.stage = tmp.with_name(tmp.name + ".stage.tif")
        self.writer = self._open_writer(ctx, self.stage)

    def finish(self, ctx: SinkContext) -> None:
        assert self.writer is not None and self.stage is not None and self.tmp is not None
        try:
            self.writer.close()
            to_cog(self.stage, self.tmp, self.overview_resampling)
        finally:
            self._remove_stage()
        ctx.staged[self.kind] = self.tmp

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        self._remove_stage()

    def _remove_stage(self) -> None:
        if self.stage is not None:
            with contextlib.suppress(FileNotFoundError):
                self.stage.unlink()


class MapSink(_StreamedCog):
    """The land-cover map: a uint8 COG (255 = nodata) with the model's colour table and class names."""

    kind = "map"
    overview_resampling = "mode"

    def _open_writer(self, ctx: SinkContext, stage: Path) -> StripeWriter:
        tags, band_tags = class_tags(ctx.classes, ctx.palette, ctx.model)
        return StripeWriter(stage, ctx.profile, "uint8", 255, tags, band_tags, CLASSES_DESCRIPTION,
                            colormap(ctx.palette))

    def write(self, rows: FinishedRows) -> None:
        self.writer.write(rows.classes)  # type: ignore[union-attr]


class ConfidenceSink(_StreamedCog):
    """The blended probability of the chosen class: float32 (NaN nodata) or uint8 round(255 p) (0 nodata)."""

    kind = "confidence"
    overview_resampling = "average"

    def __init__(self, path: str | os.PathLike, dtype: str = "float32") -> None:
        if dtype not in CONFIDENCE_DTYPES:
            raise AsanetError(f"--confidence-dtype {dtype!r}: choose {' or '.join(CONFIDENCE_DTYPES)}")
        super().__init__(path)
        self.dtype = dtype

    def _open_writer(self, ctx: SinkContext, stage: Path) -> StripeWriter:
        float_out = self.dtype == "float32"
        return StripeWriter(stage, ctx.profile, self.dtype, float("nan") if float_out else 0,
                            {"ASANET_MODEL": os.path.basename(ctx.model)}, {}, CONFIDENCE_DESCRIPTION,
                            scale=1.0 if float_out else 1.0 / 255.0)

    def write(self, rows: FinishedRows) -> None:
        self.writer.write(confidence_values(rows.confidence, self.dtype))  # type: ignore[union-attr]


class ProbabilitySink(_StreamedCog):
    """Every class's blended probability: a float32 COG with one band per class (NaN nodata)."""

    kind = "probabilities"
    overview_resampling = "average"
    needs_scores = True

    def _open_writer(self, ctx: SinkContext, stage: Path) -> StripeWriter:
        return StripeWriter(stage, ctx.profile, "float32", float("nan"),
                            {"ASANET_MODEL": os.path.basename(ctx.model)}, {}, PROBABILITY_DESCRIPTION,
                            count=len(ctx.classes), band_descriptions=tuple(ctx.classes))

    def write(self, rows: FinishedRows) -> None:
        self.writer.write(rows.scores)  # type: ignore[union-attr]


class StyleSink(Sink):
    """The map's QGIS style (``map.qml``), applied by QGIS when it opens ``map.tif``."""

    kind = "style"

    def finish(self, ctx: SinkContext) -> None:
        write_qml(self.tmp, ctx.classes, ctx.palette)  # type: ignore[arg-type]


class AttributeTableSink(Sink):
    """The map's GDAL attribute table (``map.tif.aux.xml``): value, class, pixel count, colour."""

    kind = "attribute_table"

    def finish(self, ctx: SinkContext) -> None:
        write_aux_xml(self.tmp, ctx.classes, ctx.palette, ctx.counts.tolist())  # type: ignore[arg-type]


class QuicklookSink(Sink):
    """A PNG of the map over the optical image with a legend, ``size`` px on its long edge."""

    kind = "quicklook"

    def __init__(self, path: str | os.PathLike, size: int = 1024, alpha: float = 0.6) -> None:
        if int(size) < 1:
            raise AsanetError(f"--quicklook-size {size}: must be at least 1 px")
        if not 0.0 <= float(alpha) <= 1.0:
            raise AsanetError(f"--quicklook-alpha {alpha}: must be between 0 and 1")
        super().__init__(path)
        self.size, self.alpha = int(size), float(alpha)

    def finish(self, ctx: SinkContext) -> None:
        from .quicklook import write_quicklook

        if "map" not in ctx.staged:
            raise AsanetError(f"{self.path}: a quick-look is drawn from the map; add a map output")
        write_quicklook(self.tmp, ctx.staged["map"], ctx.classes, ctx.palette, scene=ctx.scene,
                        band_names=ctx.optical_bands, max_size=self.size, alpha=self.alpha,
                        counts=ctx.counts.tolist())


#: Finishing order: the quick-look reads the finished map, the attribute table needs the final counts.
_ORDER = {"map": 0, "confidence": 1, "probabilities": 2, "style": 3, "attribute_table": 4, "quicklook": 5}


def ordered(sinks: Sequence[Sink]) -> list[Sink]:
    """``sinks`` in finishing order (unknown kinds after the built-in ones, in the order given)."""
    return sorted(sinks, key=lambda s: _ORDER.get(s.kind, len(_ORDER)))


def default_outputs(output: str | os.PathLike, *, confidence: str | os.PathLike | None = None,
                    confidence_dtype: str = "float32", probabilities: str | os.PathLike | None = None,
                    quicklook: str | os.PathLike | None = None, quicklook_size: int = 1024,
                    quicklook_alpha: float = 0.6, sidecars: bool = True) -> list[Sink]:
    """The sinks behind ``classify``'s options: the map, its two sidecars, and whichever extras are named."""
    output = Path(output)
    sinks: list[Sink] = [MapSink(output)]
    if sidecars:
        qml, aux = sidecar_paths(output)
        sinks += [StyleSink(qml), AttributeTableSink(aux)]
    if confidence is not None:
        sinks.append(ConfidenceSink(confidence, confidence_dtype))
    if probabilities is not None:
        sinks.append(ProbabilitySink(probabilities))
    if quicklook is not None:
        sinks.append(QuicklookSink(quicklook, quicklook_size, quicklook_alpha))
    return sinks
