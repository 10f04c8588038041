"""Model metadata: everything a runtime needs to feed a model and interpret its output, without torch.

The same object travels from the checkpoint loader into ONNX ``metadata_props`` and engine sidecars, as JSON.
"""
from __future__ import annotations

import colorsys
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ._version import __version__
from .errors import AsanetError

#: Bumped when a field changes meaning; readers refuse files from a newer format.
FORMAT_VERSION = 1
#: Key under which the JSON metadata is stored in ONNX ``metadata_props`` and engine sidecars.
METADATA_KEY = "asanet_rt.metadata"

#: Widths and depths of mmpretrain's ConvNeXt(-V2) archs, by name.
CONVNEXT_ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
    "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}


class MetadataError(AsanetError, ValueError):
    """Metadata is missing, malformed or from a newer SDK."""


@dataclass(frozen=True)
class ArchSpec:
    """The architecture of one ASANet, as read from a state dict."""

    depths: tuple[int, ...]
    channels: tuple[int, ...]
    decoder_channels: int
    num_classes: int
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)

    @property
    def name(self) -> str:
        """The mmpretrain arch name when widths and depths match one, else ``custom``."""
        for name, (depths, channels) in CONVNEXT_ARCHS.items():
            if depths == self.depths and channels == self.channels:
                return name
        return "custom"

    @classmethod
    def from_name(cls, name: str, num_classes: int, decoder_channels: int = 256) -> "ArchSpec":
        """An official arch by mmpretrain name (``tiny``, ``atto`` ...)."""
        if name not in CONVNEXT_ARCHS:
            raise MetadataError(f"unknown arch {name!r}; known: {', '.join(CONVNEXT_ARCHS)}")
        depths, channels = CONVNEXT_ARCHS[name]
        return cls(depths, channels, decoder_channels, num_classes)

    def summary(self) -> str:
        return (f"{self.name} (depths {'-'.join(map(str, self.depths))}, widths "
                f"{'-'.join(map(str, self.channels))}, decoder {self.decoder_channels}, "
                f"pool scales {'-'.join(map(str, self.pool_scales))}, {self.num_classes} classes)")


@dataclass(frozen=True)
class DatasetPreset:
    """Classes, palette and normalisation of one official ASANet dataset config."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    optical_mean: tuple[float, float, float]
    optical_std: tuple[float, float, float]
    sar_mean: float
    sar_std: float
    native_tile: int


_OPT_STD = (29.48, 26.953, 24.829)
PRESETS: dict[str, DatasetPreset] = {
    "whu-opt-sar": DatasetPreset(
        "whu-opt-sar",
        ("farmland", "city", "village", "water", "forest", "road", "other"),
        ((255, 195, 128), (255, 0, 0), (159, 129, 183), (0, 0, 255), (0, 255, 0), (255, 255, 0), (255, 255, 255)),
        (80.475, 98.217, 106.364), _OPT_STD, 53.837, 48.475, 512),
    "pie-rgb-sar": DatasetPreset(
        "pie-rgb-sar",
        ("background", "city", "road", "water", "forest", "farmland"),
        ((128, 128, 128), (235, 51, 36), (255, 253, 85), (66, 236, 245), (56, 168, 0), (168, 112, 0)),
        (73.422, 89.751, 83.405), _OPT_STD, 84.869, 57.769, 256),
    "ddhr-sk": DatasetPreset(
        "ddhr-sk",
        ("buildings", "roads", "greenery", "water", "farmland"),
        ((255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0)),
        (80.475, 98.217, 106.364), _OPT_STD, 53.837, 48.475, 256),
}
#: The normalisation an official checkpoint uses when neither its config nor the user names one.
DEFAULT_PRESET = "whu-opt-sar"


def generated_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` well-separated colours (golden-ratio hue steps), stable for a given ``n``."""
    colours = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours)


@dataclass(frozen=True)
class ModelMetadata:
    """What a model expects and produces. Channel-wise values are in the network's channel order.

    ``optical_channels`` names the network's three optical input channels in order. Official checkpoints were
    trained on OpenCV-decoded images without a BGR->RGB swap, so they expect ``("blue", "green", "red")``.
    ``export`` is filled by the export stage (input kind, input band order, outputs, tile and batch ranges,
    precision, op flavour); it is ``None`` for a bare checkpoint.
    """

    arch: ArchSpec
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    optical_mean: tuple[float, float, float]
    optical_std: tuple[float, float, float]
    sar_mean: tuple[float, float, float]
    sar_std: tuple[float, float, float]
    optical_channels: tuple[str, str, str] = ("blue", "green", "red")
    sar_replicate: int = 3
    native_tile: int = 512
    checkpoint_sha256: str = ""
    source: str = ""
    export: Mapping[str, Any] | None = None
    sdk_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.classes) != self.arch.num_classes:
            raise MetadataError(f"{len(self.classes)} class names for a model with {self.arch.num_classes} classes")
        if len(self.palette) != len(self.classes):
            raise MetadataError(f"{len(self.palette)} palette colours for {len(self.classes)} classes")

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes

    @property
    def inputs(self) -> "ModelInputs":
        """What the model file accepts (typed view of the ``export`` section); see :class:`ModelInputs`."""
        return ModelInputs.from_metadata(self)

    def with_export(self, **fields: Any) -> "ModelMetadata":
        """A copy whose ``export`` section is updated with ``fields``."""
        merged = dict(self.export or {})
        merged.update(fields)
        return dataclasses.replace(self, export=merged)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["export"] = dict(self.export) if self.export is not None else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "metadata") -> "ModelMetadata":
        """Parse metadata written by this SDK; ``source`` names the file in errors."""
        try:
            version = int(data.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise MetadataError(
                    f"{source}: metadata format {version} was written by asanet-rt {data.get('sdk_version', '?')}, "
                    f"newer than this asanet-rt {__version__} (format {FORMAT_VERSION}); upgrade asanet-rt")
            arch = data["arch"]
            return cls(
                arch=ArchSpec(tuple(arch["depths"]), tuple(arch["channels"]), int(arch["decoder_channels"]),
                              int(arch["num_classes"]), tuple(arch.get("pool_scales", (1, 2, 3, 6)))),
                classes=tuple(data["classes"]),
                palette=tuple(tuple(int(v) for v in c) for c in data["palette"]),
                optical_mean=_floats(data["optical_mean"], 3),
                optical_std=_floats(data["optical_std"], 3),
                sar_mean=_floats(data["sar_mean"], 3),
                sar_std=_floats(data["sar_std"], 3),
                optical_channels=tuple(data.get("optical_channels", ("blue", "green", "red"))),
                sar_replicate=int(data.get("sar_replicate", 3)),
                native_tile=int(data.get("native_tile", 512)),
                checkpoint_sha256=str(data.get("checkpoint_sha256", "")),
                source=str(data.get("source", "")),
                export=data.get("export"),
                sdk_version=str(data.get("sdk_version", "")),
                format_version=version,
            )
        except MetadataError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"{source}: malformed asanet-rt metadata ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> "ModelMetadata":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetadataError(f"{source}: asanet-rt metadata is not valid JSON ({exc})") from exc
        return cls.from_dict(data, source)

    @classmethod
    def build(cls, arch: ArchSpec, *, preset: str | None = None, classes: Sequence[str] | None = None,
              palette: Sequence[Sequence[int]] | None = None, optical_mean: Sequence[float] | None = None,
              optical_std: Sequence[float] | None = None, sar_mean: Sequence[float] | float | None = None,
              sar_std: Sequence[float] | float | None = None, native_tile: int | None = None,
              **extra: Any) -> "ModelMetadata":
        """Metadata for ``arch``: explicit values win, then the dataset ``preset``, then neutral fallbacks.

        Without a preset, classes are numbered, the palette is generated, and normalisation falls back to
        the official WHU-OPT-SAR values (the config every official checkpoint starts from).
        """
        if preset is not None and preset not in PRESETS:
            raise MetadataError(f"unknown dataset preset {preset!r}; known: {', '.join(PRESETS)}")
        p = PRESETS[preset or DEFAULT_PRESET]
        n = arch.num_classes
        if classes is None:
            if preset is not None and len(p.classes) != n:
                raise MetadataError(f"dataset preset {preset!r} has {len(p.classes)} classes, the model has {n}")
            classes = p.classes if preset is not None else tuple(f"class_{i}" for i in range(n))
        if palette is None:
            palette = p.palette if preset is not None and len(p.palette) == n else generated_palette(n)
        return cls(
            arch=arch,
            classes=tuple(str(c) for c in classes),
            palette=tuple(tuple(int(v) for v in c) for c in palette),
            optical_mean=_floats(optical_mean if optical_mean is not None else p.optical_mean, 3),
            optical_std=_floats(optical_std if optical_std is not None else p.optical_std, 3),
            sar_mean=_floats(sar_mean if sar_mean is not None else p.sar_mean, 3),
            sar_std=_floats(sar_std if sar_std is not None else p.sar_std, 3),
            native_tile=int(native_tile if native_tile is not None else p.native_tile),
            **extra,
        )

    def describe_preprocessing(self) -> str:
        """One paragraph a user can check their data against."""
        o_mean = ", ".join(f"{v:g}" for v in self.optical_mean)
        o_std = ", ".join(f"{v:g}" for v in self.optical_std)
        return (f"optical channels ({', '.join(self.optical_channels)}) on a 0-255 scale, (x - [{o_mean}]) / "
                f"[{o_std}]; SAR one band on a 0-255 scale replicated to {self.sar_replicate} channels, "
                f"(x - {self.sar_mean[0]:g}) / {self.sar_std[0]:g}; native tile {self.native_tile} px")


def _floats(values: Sequence[float] | float, n: int) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        return (float(values),) * n
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise MetadataError(f"expected {n} values, got {len(values)}: {values}")
    return values


#: Every tile edge a model sees is a multiple of this (ASANet downsamples by 32).
TILE_MULTIPLE = 32


def round_up(value: int, multiple: int = TILE_MULTIPLE) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-int(value) // multiple) * multiple


@dataclass(frozen=True)
class ModelInputs:
    """What a model file accepts, read once from its metadata's ``export`` section.

    A section without a ``tile`` or ``batch`` range (metadata written before ranges existed) means the model
    takes exactly its native tile and batch 1: the only shapes it is known to accept.
    """

    kind: str                                # "raw" (0-255 pixel values) or "normalized"
    optical_bands: tuple[str, ...]           # names of the optical input's channels, in input order
    tile_range: tuple[int, int]
    batch_range: tuple[int, int]
    native_tile: int
    outputs: tuple[str, ...] = ()
    precision: str = "fp32"

    @classmethod
    def from_metadata(cls, meta: "ModelMetadata", source: str | None = None) -> "ModelInputs":
        """The typed export section; a clear error when the model was not exported by asanet-rt."""
        export = dict(meta.export or {})
        where = source or meta.source or "model"
        if not export:
            raise MetadataError(f"{where}: the model's metadata has no export section (tile and batch ranges, "
                                f"outputs); export it with `asanet-rt export`")
        native = round_up(max(TILE_MULTIPLE, int(meta.native_tile)))
        try:
            tile = tuple(int(v) for v in export.get("tile", (native, native)))
            batch = tuple(int(v) for v in export.get("batch", (1, 1)))
        except (TypeError, ValueError) as exc:
            raise MetadataError(f"{where}: malformed tile/batch range in the export section ({exc})") from exc
        if len(tile) != 2 or len(batch) != 2 or not 0 < tile[0] <= tile[1] or not 0 < batch[0] <= batch[1]:
            raise MetadataError(f"{where}: malformed export ranges tile={export.get('tile')} "
                                f"batch={export.get('batch')}")
        return cls(kind=str(export.get("input", "raw")),
                   optical_bands=tuple(export.get("optical_bands") or meta.optical_channels),
                   tile_range=tile, batch_range=batch,  # type: ignore[arg-type]
                   native_tile=native, outputs=tuple(export.get("outputs") or ()),
                   precision=str(export.get("precision", "fp32")))

    @property
    def default_tile(self) -> int:
        """The native tile clipped into the exported range: the tile a scene is cut into unless asked."""
        lo, hi = self.tile_range
        return min(max(self.native_tile, lo), hi)

    def accepts_tile(self, tile: int) -> bool:
        lo, hi = self.tile_range
        return tile % TILE_MULTIPLE == 0 and lo <= tile <= hi

    def accepts_batch(self, batch: int) -> bool:
        lo, hi = self.batch_range
        return lo <= batch <= hi

    def unsupported(self, batch: int, tile: int) -> str | None:
        """Why (batch, tile) is outside what the model takes, or None."""
        if not self.accepts_batch(batch):
            return f"batch {batch} outside the model's exported range {self.batch_range[0]}-{self.batch_range[1]}"
        if not self.accepts_tile(tile):
            return (f"tile {tile} outside the model's exported range {self.tile_range[0]}-{self.tile_range[1]} "
                    f"(multiples of {TILE_MULTIPLE})")
        return None

    def check_tile(self, tile: int | None, option: str = "--tile") -> int:
        """``tile`` (default: :attr:`default_tile`) checked against the range; a clear error otherwise."""
        if tile is None:
            return self.default_tile
        if not self.accepts_tile(int(tile)):
            lo, hi = self.tile_range
            raise MetadataError(f"{option} {tile}: the model takes tiles of {lo} to {hi} px in steps of "
                                f"{TILE_MULTIPLE}")
        return int(tile)

    def check_batch(self, batch: int, option: str = "--batch") -> int:
        if not self.accepts_batch(int(batch)):
            lo, hi = self.batch_range
            raise MetadataError(f"{option} {batch}: the model takes batches of {lo} to {hi}")
        return int(batch)
