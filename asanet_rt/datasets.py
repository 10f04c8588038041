"""Labelled datasets on disk: the official layouts, finding optical/SAR/label triples, reading one sample.

Layouts (``--layout``), as the official ASANet configs expect them (``data_root`` = ``--data``):

- ``whu-opt-sar``: ``DIR/{SPLIT}/{opt_dir,sar_dir,ann_dir}/NAME.tif`` (the official ``crop512`` tiles, SPLIT
  ``test`` by default; ``DIR`` may also be the split folder itself) or the dataset as released,
  ``DIR/{optical,sar,lbl}/NAME.tif``; labels numbered by the ``whu`` label map (``asanet_rt.labels``).
- ``pie-rgb-sar``: ``DIR/{rgb,sar,label}/NAME.tif``; labels 0..5 as stored.
- ``ddhr-sk``: ``DIR/{GF2,GF3,label}/NAME`` (``.jpg`` optical and SAR, ``.png`` labels); labels 0..4 as stored.
- ``folder``: ``DIR/{optical,sar,label}/NAME.EXT`` (any raster format; ``labels/`` also accepted).

PIE-RGB-SAR and DDHR-SK read the image names from ``DIR/{SPLIT}.txt`` (SPLIT ``val`` by default, the official
``ann_file``) when it exists, else every image in the optical folder, like mmseg's ``BaseSegDataset``.

Optical bands are matched to the model's input bands by name: the file's colour interpretation when it declares
red, green and blue, else bands 1, 2, 3 = red, green, blue (the convention OpenCV, which the official loader
uses, decodes as B, G, R); ``optical_bands`` overrides. Values are scaled with the runtime's scaling specs
(``asanet_rt.scaling``; 8-bit data, as in all three datasets, needs none). Labels are returned as stored: their
numbering is ``asanet_rt.labels``' job.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AsanetError
from .labels import IGNORE_INDEX
from .scaling import Scale

LAYOUTS = ("auto", "folder", "whu-opt-sar", "pie-rgb-sar", "ddhr-sk")
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
#: Classes per official dataset: a model with another count cannot be scored on it.
DATASET_CLASSES = {"whu-opt-sar": 7, "pie-rgb-sar": 6, "ddhr-sk": 5}


@dataclass(frozen=True)
class Sample:
    """One labelled image: optical, SAR and label files of the same name."""

    name: str
    optical: Path
    sar: Path
    label: Path


@dataclass(frozen=True)
class DatasetSpec:
    """Where one layout keeps its files: folder names, file suffixes, name list, label mapping."""

    name: str
    optical: tuple[str, ...]
    sar: tuple[str, ...]
    label: tuple[str, ...]
    optical_suffix: str | None = None  # None: any raster suffix
    sar_suffix: str | None = None
    label_suffix: str | None = None
    default_split: str | None = None
    split_is_folder: bool = False  # WHU keeps splits in subfolders, PIE/DDHR in name lists
    label_map: str = "identity"  # the named map of asanet_rt.labels this layout's labels need


DATASETS: dict[str, DatasetSpec] = {
    "whu-opt-sar": DatasetSpec("whu-opt-sar", ("opt_dir", "optical"), ("sar_dir", "sar"), ("ann_dir", "lbl"),
                               ".tif", ".tif", ".tif", "test", True, "whu"),
    "pie-rgb-sar": DatasetSpec("pie-rgb-sar", ("rgb",), ("sar",), ("label",), ".tif", ".tif", ".tif", "val"),
    "ddhr-sk": DatasetSpec("ddhr-sk", ("GF2",), ("GF3",), ("label",), ".jpg", ".jpg", ".png", "val"),
    "folder": DatasetSpec("folder", ("optical",), ("sar",), ("label", "labels")),
}


# ---------------------------------------------------------------------------------------------------------------
# Finding the samples
# ---------------------------------------------------------------------------------------------------------------
def _child(folder: Path, names: Sequence[str]) -> Path | None:
    """The first existing subfolder of ``folder`` among ``names`` (case-insensitive)."""
    if not folder.is_dir():
        return None
    by_lower = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    for name in names:
        if name.lower() in by_lower:
            return by_lower[name.lower()]
    return None


def _dirs(root: Path, spec: DatasetSpec) -> tuple[Path, Path, Path] | None:
    """The (optical, sar, label) folders of ``spec`` in ``root``, matched as a set (opt_dir with sar_dir ...)."""
    for i in range(max(len(spec.optical), len(spec.sar), len(spec.label))):
        pick = lambda names: names[min(i, len(names) - 1)]  # noqa: E731 - the i-th naming scheme
        found = [_child(root, (pick(spec.optical),)), _child(root, (pick(spec.sar),)),
                 _child(root, spec.label if spec.name == "folder" else (pick(spec.label),))]
        if all(found):
            return found[0], found[1], found[2]  # type: ignore[return-value]
    return None


def detect_layout(root: Path, split: str | None = None) -> str:
    """The layout of ``root`` by its subfolders; an error naming what was looked for."""
    for name in ("whu-opt-sar", "pie-rgb-sar", "ddhr-sk", "folder"):
        spec = DATASETS[name]
        candidates = [root]
        if spec.split_is_folder:
            candidates.insert(0, root / (split or spec.default_split or ""))
        if any(_dirs(c, spec) for c in candidates):
            return name
    raise AsanetError(f"{root}: no dataset layout recognised; expected {{optical,sar,label}}/ (--layout folder), "
                      f"[test/]{{opt_dir,sar_dir,ann_dir}}/ or {{optical,sar,lbl}}/ (whu-opt-sar), "
                      f"{{rgb,sar,label}}/ (pie-rgb-sar) or {{GF2,GF3,label}}/ (ddhr-sk)")


def _files(folder: Path, suffix: str | None) -> dict[str, Path]:
    suffixes = (suffix,) if suffix else RASTER_SUFFIXES
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")}


def find_samples(root: str | os.PathLike, layout: str = "auto", split: str | None = None,
                 ) -> tuple[str, list[Sample]]:
    """Resolve ``root`` into (layout name, labelled samples), sorted by name; clear errors naming the path."""
    root = Path(root)
    if not root.exists():
        raise AsanetError(f"{root}: data folder not found")
    if not root.is_dir():
        raise AsanetError(f"{root}: not a folder; --data takes the dataset's root folder")
    if layout not in LAYOUTS:
        raise AsanetError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(root, split)
    spec = DATASETS[layout]
    split = split if split is not None else spec.default_split
    base = root
    if spec.split_is_folder and split and (root / split).is_dir() and _dirs(root / split, spec):
        base = root / split
    dirs = _dirs(base, spec)
    if dirs is None:
        wanted = "/".join(f"{{{','.join((spec.optical[0], spec.sar[0], spec.label[0]))}}}")
        raise AsanetError(f"{base}: not a {layout} dataset; expected subfolders {wanted}"
                          + (f" (in {root}/{split}/ or {root}/)" if spec.split_is_folder else ""))
    opt_dir, sar_dir, lab_dir = dirs
    names: list[str] | None = None
    list_file = root / f"{split}.txt" if split and not spec.split_is_folder else None
    if list_file is not None and list_file.is_file():
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not names:
            raise AsanetError(f"{list_file}: the image list is empty")
    samples = []
    if names is not None:
        listed = {folder: _files(folder, None) for folder in (opt_dir, sar_dir, lab_dir)}
        for name in names:
            paths = []
            for folder, suffix in ((opt_dir, spec.optical_suffix), (sar_dir, spec.sar_suffix),
                                   (lab_dir, spec.label_suffix)):
                path = folder / f"{name}{suffix}" if suffix else listed[folder].get(name, folder / name)
                if not path.is_file():
                    raise AsanetError(f"{path}: listed in {list_file} but not found")
                paths.append(path)
            samples.append(Sample(name, *paths))
    else:
        optical = _files(opt_dir, spec.optical_suffix)
        sar = _files(sar_dir, spec.sar_suffix)
        labels = _files(lab_dir, spec.label_suffix)
        if not optical:
            raise AsanetError(f"{opt_dir}: no images found (looking for "
                              f"{spec.optical_suffix or ', '.join(RASTER_SUFFIXES)})")
        for name in sorted(optical):
            if name not in sar:
                raise AsanetError(f"{optical[name]}: no SAR image of the same name in {sar_dir}")
            if name not in labels:
                raise AsanetError(f"{optical[name]}: no label of the same name in {lab_dir}")
            samples.append(Sample(name, optical[name], sar[name], labels[name]))
    if not samples:
        raise AsanetError(f"{root}: no optical/SAR/label triples found ({layout} layout)")
    return layout, samples


# ---------------------------------------------------------------------------------------------------------------
# Reading one sample
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadOptions:
    """How file values become model inputs: band numbers, scaling, SAR band; the ignore index for bad labels."""

    optical_bands: tuple[int, ...] | None = None  # 1-based, in the model's input band order
    optical_scale: Scale = Scale("auto")
    sar_scale: Scale = Scale("auto")
    sar_band: int = 1
    ignore_index: int = IGNORE_INDEX


def _read(path: Path, role: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """All bands of a raster and their colour names; errors name the file."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read(), tuple(c.name for c in src.colorinterp)
    except RasterioIOError as exc:
        raise AsanetError(f"{path}: not a readable {role} raster ({exc})") from exc


def file_band_indices(path: Path, count: int, colours: Sequence[str], wanted: Sequence[str],
                      explicit: Sequence[int] | None) -> list[int]:
    """0-based band indices of ``path`` holding the model's ``wanted`` optical bands, in that order."""
    if explicit is not None:
        if len(explicit) != len(wanted):
            raise AsanetError(f"--optical-bands {','.join(map(str, explicit))}: give {len(wanted)} band numbers "
                              f"(the model's {', '.join(wanted)})")
        for b in explicit:
            if not 1 <= b <= count:
                raise AsanetError(f"{path}: --optical-bands band {b} is out of range (the file has {count})")
        return [b - 1 for b in explicit]
    if {"red", "green", "blue"} <= set(colours):
        order = list(colours)
    elif count >= 3:
        order = ["red", "green", "blue"] + ["other"] * (count - 3)
    else:
        raise AsanetError(f"{path}: optical raster has {count} band(s); expected at least 3 (red, green, blue) "
                          f"or pass --optical-bands")
    missing = [b for b in wanted if b not in order]
    if missing:
        raise AsanetError(f"{path}: the model takes optical bands {', '.join(wanted)}; the file has no "
                          f"{', '.join(missing)}; pass --optical-bands")
    return [order.index(b) for b in wanted]


def read_sample(sample: Sample, bands: Sequence[str], options: ReadOptions) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """(optical (3,H,W) float32 in ``bands`` order, SAR (1,H,W) float32, label (H,W) int64 as stored).

    Non-finite label values (float labels) become the ignore index; the numbering is left to a ``LabelMap``.
    """
    data, colours = _read(sample.optical, "optical")
    idx = file_band_indices(sample.optical, data.shape[0], colours, bands, options.optical_bands)
    o_scale = options.optical_scale.resolve(data.dtype.name, str(sample.optical), "--optical-scale")
    optical = o_scale.apply(data[idx])
    sar_data, _ = _read(sample.sar, "SAR")
    if not 1 <= options.sar_band <= sar_data.shape[0]:
        raise AsanetError(f"{sample.sar}: --sar-band {options.sar_band} is out of range (the file has "
                          f"{sar_data.shape[0]} band{'s' if sar_data.shape[0] != 1 else ''})")
    s_scale = options.sar_scale.resolve(sar_data.dtype.name, str(sample.sar), "--sar-scale")
    sar = s_scale.apply(sar_data[options.sar_band - 1:options.sar_band])
    label_data, _ = _read(sample.label, "label")
    if label_data.shape[0] != 1:
        raise AsanetError(f"{sample.label}: label raster has {label_data.shape[0]} bands; expected one band of "
                          f"class indices (a colour-coded label must be converted to indices first)")
    h, w = optical.shape[1:]
    if sar.shape[1:] != (h, w):
        raise AsanetError(f"{sample.sar}: SAR is {sar.shape[2]} x {sar.shape[1]} px but the optical image "
                          f"{sample.optical.name} is {w} x {h} px")
    if label_data.shape[1:] != (h, w):
        raise AsanetError(f"{sample.label}: label is {label_data.shape[2]} x {label_data.shape[1]} px but the "
                          f"optical image {sample.optical.name} is {w} x {h} px")
    label = label_data[0]
    if np.issubdtype(label.dtype, np.floating):
        label = np.where(np.isfinite(label), label, options.ignore_index)
    label = label.astype(np.int64)
    optical = np.nan_to_num(optical, nan=0.0)
    sar = np.nan_to_num(sar, nan=0.0)
    return optical, sar, label
