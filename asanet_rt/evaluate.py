"""Accuracy of any artifact (checkpoint, ONNX, engine) on a labelled optical + SAR dataset, the way mmseg scores it.

Layouts (``--layout``), as the official ASANet configs expect them (``data_root`` = ``--data``):

- ``whu-opt-sar``: ``DIR/{SPLIT}/{opt_dir,sar_dir,ann_dir}/NAME.tif`` (the official ``crop512`` tiles, SPLIT
  ``test`` by default; ``DIR`` may also be the split folder itself) or the dataset as released,
  ``DIR/{optical,sar,lbl}/NAME.tif``. Labels stored as 10..70 (release) or 1..7 (``crop512``, divided by 10 by
  the official preparation script) map to classes 0..6; 0 (no label) maps to the ignore index 255.
- ``pie-rgb-sar``: ``DIR/{rgb,sar,label}/NAME.tif``; labels 0..5 as stored.
- ``ddhr-sk``: ``DIR/{GF2,GF3,label}/NAME`` (``.jpg`` optical and SAR, ``.png`` labels); labels 0..4 as stored.
- ``folder``: ``DIR/{optical,sar,label}/NAME.EXT`` (any raster format; ``labels/`` also accepted); labels are
  class indices, ``--ignore-index`` (255) ignored.

PIE-RGB-SAR and DDHR-SK read the image names from ``DIR/{SPLIT}.txt`` (SPLIT ``val`` by default, the official
``ann_file``) when it exists, else every image in the optical folder, like mmseg's ``BaseSegDataset``.

Each image runs whole (the official test pipeline: ``mode='whole'``, no resizing at the datasets' native 512 /
256 tiles). Optical bands are matched to the model's input bands by name: the file's colour interpretation when
it declares red, green and blue, else bands 1, 2, 3 = red, green, blue (the convention OpenCV, which the official
loader uses, decodes as B, G, R); ``--optical-bands`` overrides. Values are scaled with the runtime's
``--optical-scale`` / ``--sar-scale`` (``asanet_rt.scaling``; 8-bit data, as in all three datasets, needs none).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ._version import __version__
from .errors import AsanetError
from .io_utils import atomic_output
from .metadata import ModelMetadata
from .metrics import ConfusionMatrix, SegmentationScores
from .scaling import Scale

log = logging.getLogger(__name__)

#: Bumped when a key of the JSON result changes meaning or disappears.
EVAL_SCHEMA_VERSION = 1
LAYOUTS = ("auto", "folder", "whu-opt-sar", "pie-rgb-sar", "ddhr-sk")
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
IGNORE_INDEX = 255
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
    label_map: str = "identity"


DATASETS: dict[str, DatasetSpec] = {
    "whu-opt-sar": DatasetSpec("whu-opt-sar", ("opt_dir", "optical"), ("sar_dir", "sar"), ("ann_dir", "lbl"),
                               ".tif", ".tif", ".tif", "test", True, "whu"),
    "pie-rgb-sar": DatasetSpec("pie-rgb-sar", ("rgb",), ("sar",), ("label",), ".tif", ".tif", ".tif", "val"),
    "ddhr-sk": DatasetSpec("ddhr-sk", ("GF2",), ("GF3",), ("label",), ".jpg", ".jpg", ".png", "val"),
    "folder": DatasetSpec("folder", ("optical",), ("sar",), ("label", "labels")),
}


# ---------------------------------------------------------------------------------------------------------------
# Label mappings
# ---------------------------------------------------------------------------------------------------------------
def _whu_lut(ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    lut = np.full(256, ignore_index, np.uint8)
    for k in range(7):
        lut[k + 1] = k  # crop512 tiles: the official preparation divided the released labels by 10
        lut[(k + 1) * 10] = k  # the release: class * 10
    return lut


def whu_label_map(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """WHU-OPT-SAR labels -> classes 0..6: 10..70 (or 1..7) -> 0..6; 0 and anything else -> ``ignore_index``."""
    label = np.asarray(label)
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            label = np.where((label >= 0) & (label <= 255), label, 0)
        label = label.astype(np.uint8)
    return _whu_lut(ignore_index)[label]


def reduce_zero_label(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 -> ignore, v -> v - 1, the ignore index stays."""
    label = np.asarray(label).astype(np.int64)
    out = label - 1
    out[label == 0] = ignore_index
    out[label == ignore_index] = ignore_index
    return out


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
    """How file values become model inputs: band numbers, scaling, SAR band, label mapping."""

    optical_bands: tuple[int, ...] | None = None  # 1-based, in the model's input band order
    optical_scale: Scale = Scale("auto")
    sar_scale: Scale = Scale("auto")
    sar_band: int = 1
    label_map: str = "identity"  # identity, whu, reduce-zero
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
    """(optical (3,H,W) float32 in ``bands`` order, SAR (1,H,W) float32, label (H,W) uint8 classes/ignore)."""
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
    if options.label_map == "whu":
        label = whu_label_map(label, options.ignore_index)
    elif options.label_map == "reduce-zero":
        label = reduce_zero_label(label, options.ignore_index)
    optical = np.nan_to_num(optical, nan=0.0)
    sar = np.nan_to_num(sar, nan=0.0)
    return optical, sar, label


# ---------------------------------------------------------------------------------------------------------------
# Predictors: classes from any artifact
# ---------------------------------------------------------------------------------------------------------------
class Predictor:
    """Classes (N, H, W) from raw tiles in ``bands`` order, whatever the artifact."""

    metadata: ModelMetadata
    bands: tuple[str, ...]
    backend: str = ""
    info: dict[str, Any]

    def predict(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Free the backend."""


def classes_from_outputs(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """``classes`` if the model gives it, else the argmax of logits or probabilities."""
    if "classes" in outputs:
        return np.asarray(outputs["classes"])
    for name in ("logits", "probabilities"):
        if name in outputs:
            return np.asarray(outputs[name]).argmax(axis=1).astype(np.uint8)
    raise AsanetError(f"model outputs {', '.join(outputs)}: need classes, logits or probabilities")


class ClassifierPredictor(Predictor):
    """ONNX on ONNX Runtime or an engine, through ``asanet_rt.classifier.Classifier`` (batch ranges, padding)."""

    def __init__(self, path: str, backend: str, device: int, threads: int, allow_host_code: bool = False) -> None:
        from .classifier import Classifier

        on_ort = path.lower().endswith(".onnx") and not backend.startswith(("tensorrt", "trt", "rtx"))
        options = {"threads": threads} if on_ort else {"allow_host_code": True} if allow_host_code else {}
        self.classifier = Classifier.open(path, backend=backend, device=device, **options)
        self.metadata = self.classifier.metadata
        self.bands = tuple(self.classifier.optical_bands)
        self.backend = self.classifier.runner.backend
        self.info = _model_info(self.metadata)

    def predict(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        return self.classifier.predict(optical, sar)

    def close(self) -> None:
        self.classifier.close()


class TargetPredictor(Predictor):
    """A checkpoint on torch or an ONNX file on OpenVINO, through the benchmark's targets."""

    def __init__(self, path: str, backend: str, threads: int, device: int, torch_device: str) -> None:
        from .bench import BenchSettings, ModelSpec, open_target

        settings = BenchSettings(threads=threads, device=device, torch_device=torch_device).resolved()
        self.target = open_target(ModelSpec(path, backend, Path(path).name), settings)
        self.metadata = self.target.metadata
        self.bands = tuple(self.target.bands)
        self.backend = self.target.backend
        self.info = _model_info(self.metadata)
        if backend.startswith("torch"):
            self.info.update(precision="fp32", flavour=None)

    def predict(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        n, _, h, w = optical.shape
        if self.backend == "openvino" and getattr(self.target, "shape", None) != (n, h, w):
            self.target.prepare(n, h, w)
        return classes_from_outputs(self.target.run(np.ascontiguousarray(optical, np.float32),
                                                    np.ascontiguousarray(sar, np.float32)))

    def close(self) -> None:
        self.target.close()


def _model_info(meta: ModelMetadata) -> dict[str, Any]:
    export = dict(meta.export or {})
    return {"precision": export.get("precision", "fp32"), "flavour": export.get("ops"),
            "int8_target": export.get("int8_target"), "arch": meta.arch.name, "num_classes": meta.num_classes}


def open_predictor(path: str | os.PathLike, backend: str = "auto", device: int = 0, threads: int = 0,
                   torch_device: str = "cpu", allow_host_code: bool = False) -> Predictor:
    """A predictor for a checkpoint (torch), an ONNX file (ONNX Runtime or ``openvino``) or an engine."""
    from .backends.onnxruntime import physical_cores
    from .bench import CHECKPOINT_SUFFIXES, model_kind

    path = str(path)
    if not Path(path).is_file():
        raise AsanetError(f"{path}: model file not found" if not Path(path).exists() else
                          f"{path}: not a model file (a directory?)")
    threads = int(threads) or physical_cores()
    kind = model_kind(path)
    backend = backend.lower()
    if kind == "checkpoint":
        if backend not in ("auto", "torch", "torch-compile"):
            raise AsanetError(f"{path}: a checkpoint runs on torch, not {backend}; export it to ONNX first")
        return TargetPredictor(path, "torch" if backend == "auto" else backend, threads, device, torch_device)
    if backend in ("openvino", "ov"):
        if kind != "onnx":
            raise AsanetError(f"{path}: OpenVINO runs ONNX files, not {', '.join(CHECKPOINT_SUFFIXES)} or engines")
        return TargetPredictor(path, "openvino", threads, device, torch_device)
    return ClassifierPredictor(path, backend, device, threads, allow_host_code)


# ---------------------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Scores plus what was scored: model, dataset, pixel counts, time."""

    scores: SegmentationScores
    model: dict[str, Any]
    dataset: dict[str, Any]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": EVAL_SCHEMA_VERSION,
            "kind": "asanet-rt.eval",
            "sdk_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": self.model,
            "dataset": self.dataset,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.dataset["images"] / self.seconds, 4) if self.seconds > 0 else None,
            "metrics": self.scores.to_dict(),
            "class_names": list(self.scores.class_names),
            "warnings": list(self.warnings),
        }

    def format(self) -> str:
        d = self.dataset
        head = (f"{self.model['path']} ({self.model['backend']}, {self.model.get('precision')}) on {d['root']} "
                f"({d['layout']}{', split ' + d['split'] if d.get('split') else ''}): {d['images']} images, "
                f"{d['labelled_pixels']:,} labelled pixels, {d['ignored_pixels']:,} ignored")
        return "\n".join([head, self.scores.format_table()] + [f"warning: {w}" for w in self.warnings])


def _batches(samples: Sequence[Sample], size: int, read: Callable[[Sample], tuple]) -> Iterator[list[tuple]]:
    """Read samples in order and group consecutive ones of equal shape, up to ``size`` per group."""
    group: list[tuple] = []
    for sample in samples:
        item = (sample,) + read(sample)
        if group and (len(group) >= size or group[0][1].shape != item[1].shape):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def evaluate(model: str | os.PathLike, data: str | os.PathLike, *, layout: str = "auto", split: str | None = None,
             backend: str = "auto", batch: int = 4, threads: int = 0, device: int = 0, torch_device: str = "cpu",
             optical_bands: Sequence[int] | None = None, optical_scale: str | Scale = "auto",
             sar_scale: str | Scale = "auto", sar_band: int = 1, ignore_index: int = IGNORE_INDEX,
             label_map: str | None = None, limit: int | None = None, progress: bool = False,
             allow_host_code: bool = False) -> EvalResult:
    """Score ``model`` on the dataset at ``data`` (mmseg's IoU metric: counts summed over all images).

    ``label_map``: ``identity``, ``whu`` (10..70 / 1..7 -> 0..6, 0 -> ignore) or ``reduce-zero`` (mmseg's
    ``reduce_zero_label``); default: ``whu`` for the WHU-OPT-SAR layout, ``identity`` otherwise.
    """
    if batch < 1:
        raise AsanetError(f"--batch {batch}: need at least 1")
    if label_map not in (None, "identity", "whu", "reduce-zero"):
        raise AsanetError(f"--label-map {label_map!r}: choose identity, whu or reduce-zero")
    layout_name, samples = find_samples(data, layout, split)
    if limit is not None:
        if limit < 1:
            raise AsanetError(f"--limit {limit}: need at least 1")
        samples = samples[:limit]
    spec = DATASETS[layout_name]
    options = ReadOptions(
        optical_bands=tuple(optical_bands) if optical_bands else None,
        optical_scale=optical_scale if isinstance(optical_scale, Scale) else Scale.parse(optical_scale,
                                                                                         "--optical-scale"),
        sar_scale=sar_scale if isinstance(sar_scale, Scale) else Scale.parse(sar_scale, "--sar-scale"),
        sar_band=int(sar_band), label_map=label_map or spec.label_map, ignore_index=int(ignore_index))
    predictor = open_predictor(model, backend, device, threads, torch_device, allow_host_code)
    try:
        meta = predictor.metadata
        expected = DATASET_CLASSES.get(layout_name)
        if expected is not None and meta.num_classes != expected:
            raise AsanetError(f"{model}: the model predicts {meta.num_classes} classes but {layout_name} has "
                              f"{expected}; wrong model or --layout?")
        k = meta.num_classes
        matrix = ConfusionMatrix(k, ignore_index=options.ignore_index)
        stray = np.zeros(256, np.int64)  # label values that are neither a class nor the ignore index
        stray_files: list[str] = []
        ignored = 0
        bar = None
        if progress:
            from .progress import Progress

            bar = Progress(len(samples), label="images")
        start = time.perf_counter()
        for group in _batches(samples, batch, lambda s: read_sample(s, predictor.bands, options)):
            optical = np.stack([g[1] for g in group])
            sar = np.stack([g[2] for g in group])
            try:
                pred = predictor.predict(optical, sar)
            except AsanetError as exc:
                raise AsanetError(f"{group[0][0].optical}: inference failed ({exc})") from exc
            for (sample, _, _, label), p in zip(group, pred):
                bad = (label != options.ignore_index) & ((label < 0) | (label >= k))
                if bad.any():
                    values = np.clip(label[bad], 0, 255)
                    stray += np.bincount(values, minlength=256)[:256]
                    stray_files.append(sample.label.name)
                ignored += int((label == options.ignore_index).sum() + bad.sum())
                matrix.update(np.asarray(p), label)
            if bar is not None:
                bar.update(len(group))
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        notes = []
        if stray.any():
            values = ", ".join(f"{v} ({stray[v]:,} px)" for v in np.flatnonzero(stray)[:10])
            notes.append(f"{len(stray_files)} label file(s) (first: {stray_files[0]}) hold values that are neither "
                         f"a class 0..{k - 1} nor the ignore index {options.ignore_index}: {values}; those pixels "
                         f"were ignored (wrong --layout or --label-map?)")
        labelled = int(matrix.counts.sum() + matrix.missed.sum())
        if labelled == 0:
            raise AsanetError(f"{data}: no labelled pixel in {len(samples)} images (all ignore index "
                              f"{options.ignore_index}?)")
        scores = matrix.result(meta.classes)
        model_info = {"path": str(model), "backend": predictor.backend, **predictor.info,
                      "optical_bands": list(predictor.bands)}
        dataset = {"root": str(data), "layout": layout_name, "split": split if split is not None
                   else spec.default_split, "images": len(samples), "labelled_pixels": labelled,
                   "ignored_pixels": ignored, "ignore_index": options.ignore_index, "label_map": options.label_map,
                   "optical_scale": str(options.optical_scale), "sar_scale": str(options.sar_scale),
                   "optical_bands": list(options.optical_bands) if options.optical_bands else "by colour name",
                   "sar_band": options.sar_band, "batch": batch}
        return EvalResult(scores, model_info, dataset, seconds, notes)
    finally:
        predictor.close()


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
def write_eval_json(result: EvalResult, path: str | os.PathLike) -> None:
    """The result as JSON (schema ``EVAL_SCHEMA_VERSION``), written atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=1) + "\n")


def plot_confusion(scores: SegmentationScores, path: str | os.PathLike, title: str = "") -> None:
    """The confusion matrix as a PNG: colour = share of the true class (row), text = pixel counts."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AsanetError(f"{path}: --plot needs matplotlib (pip install 'asanet-rt[plot]')") from exc
    counts = scores.confusion.astype(np.float64)
    k = counts.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    size = max(5.0, 0.75 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    for i in range(k):
        for j in range(k):
            count = int(counts[i, j])
            text = f"{count:,}" if count < 1e6 else f"{count / 1e6:.1f}M"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    names = list(scores.class_names)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), [f"{n} ({'n/a' if np.isnan(v) else f'{100 * v:.1f}'})" for n, v in zip(names,
                                                                                                   scores.iou)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (IoU %)")
    ax.set_title(title or f"mIoU {100 * scores.miou:.2f}  OA {100 * scores.overall_accuracy:.2f}  "
                          f"kappa {scores.kappa:.4f}", fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

