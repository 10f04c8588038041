"""Accuracy of any model file on a labelled optical + SAR dataset, the way mmseg scores it: the eval loop.

The parts live apart: dataset layouts and reading (``asanet_rt.datasets``), label numbering
(``asanet_rt.labels``), scoring (``asanet_rt.metrics``), the confusion plot (``asanet_rt.eval_plot``). The model
runs through :class:`~asanet_rt.classifier.Classifier`, so every backend of the registry works, checkpoints
(torch) included. Each image runs whole (the official test pipeline: ``mode='whole'``, no resizing at the
datasets' native 512 / 256 tiles).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ._version import __version__
from .datasets import (DATASET_CLASSES, DATASETS, LAYOUTS, RASTER_SUFFIXES, DatasetSpec, ReadOptions, Sample,
                       detect_layout, file_band_indices, find_samples, read_sample)
from .errors import AsanetError
from .eval_plot import plot_confusion
from .io_utils import atomic_output
from .labels import IGNORE_INDEX, LabelMap, reduce_zero_label, whu_label_map
from .metrics import ConfusionMatrix, SegmentationScores
from .scaling import Scale

#: Bumped when a key of the JSON result changes meaning or disappears.
EVAL_SCHEMA_VERSION = 1

__all__ = ["DATASETS", "DATASET_CLASSES", "EVAL_SCHEMA_VERSION", "IGNORE_INDEX", "LAYOUTS", "RASTER_SUFFIXES",
           "DatasetSpec", "EvalResult", "LabelMap", "ReadOptions", "Sample", "detect_layout", "evaluate",
           "file_band_indices", "find_samples", "plot_confusion", "read_sample", "reduce_zero_label",
           "whu_label_map", "write_eval_json"]


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


class _Tally:
    """Label values that were not scored: unmapped by an explicit map, or neither a class nor the ignore index."""

    def __init__(self) -> None:
        self.unmapped: dict[int, int] = {}
        self.unmapped_files: list[str] = []
        self.stray: dict[int, int] = {}
        self.stray_files: list[str] = []

    def add(self, kind: str, file: str, counts: Mapping[int, int]) -> None:
        """Count ``counts`` ({value: pixels}) of ``file`` as ``unmapped`` or ``stray``."""
        into = getattr(self, kind)
        for value, n in counts.items():
            into[value] = into.get(value, 0) + n
        getattr(self, f"{kind}_files").append(file)

    def notes(self, k: int, label_map: LabelMap, ignore_index: int) -> list[str]:
        def shown(counts: dict[int, int]) -> str:
            return ", ".join(f"{v} ({counts[v]:,} px)" for v in sorted(counts)[:10])

        notes = []
        if self.unmapped:
            notes.append(f"{len(self.unmapped_files)} label file(s) (first: {self.unmapped_files[0]}) hold values "
                         f"--label-map does not name: {shown(self.unmapped)}; those pixels were not scored (map "
                         f"them, e.g. VALUE:ignore, to silence this)")
        if self.stray:
            notes.append(f"{len(self.stray_files)} label file(s) (first: {self.stray_files[0]}) hold values that "
                         f"are neither a class 0..{k - 1} nor the ignore index {ignore_index}"
                         f"{' after --label-map ' + label_map.name if label_map.name != 'identity' else ''}: "
                         f"{shown(self.stray)}; those pixels were ignored (wrong --layout or --label-map?)")
        return notes


def evaluate(model: str | os.PathLike, data: str | os.PathLike, *, layout: str = "auto", split: str | None = None,
             backend: str = "auto", batch: int = 4, threads: int = 0, device: int = 0, torch_device: str = "cpu",
             optical_bands: Sequence[int] | None = None, optical_scale: str | Scale = "auto",
             sar_scale: str | Scale = "auto", sar_band: int = 1, ignore_index: int = IGNORE_INDEX,
             label_map: str | LabelMap | Mapping[int, int | None] | None = None, limit: int | None = None,
             progress: bool = False, allow_host_code: bool = False) -> EvalResult:
    """Score ``model`` on the dataset at ``data`` (mmseg's IoU metric: counts summed over all images).

    ``label_map``: ``identity``, ``whu`` (10..70 / 1..7 -> 0..6, 0 -> ignore), ``reduce-zero`` (mmseg's
    ``reduce_zero_label``), explicit ``VALUE:CLASS`` pairs (``"1:0,2:1"``, a dict, or a JSON / two-column
    file; unnamed values are not scored and reported); default: ``whu`` for WHU-OPT-SAR, ``identity`` otherwise.
    ``threads`` (0: the backend's default) and ``torch_device`` go to backends that take them; asking for
    threads on a backend without a thread setting (a TensorRT engine) is an error.
    """
    from .classifier import Classifier

    if batch < 1:
        raise AsanetError(f"--batch {batch}: need at least 1")
    layout_name, samples = find_samples(data, layout, split)
    if limit is not None:
        if limit < 1:
            raise AsanetError(f"--limit {limit}: need at least 1")
        samples = samples[:limit]
    spec = DATASETS[layout_name]
    mapping = LabelMap.parse(label_map, default=spec.label_map)
    options = ReadOptions(
        optical_bands=tuple(optical_bands) if optical_bands else None,
        optical_scale=optical_scale if isinstance(optical_scale, Scale) else Scale.parse(optical_scale,
                                                                                         "--optical-scale"),
        sar_scale=sar_scale if isinstance(sar_scale, Scale) else Scale.parse(sar_scale, "--sar-scale"),
        sar_band=int(sar_band), ignore_index=int(ignore_index))
    runner_options: dict[str, Any] = {"threads": int(threads) or None}
    if torch_device != "cpu":
        runner_options["torch_device"] = torch_device
    if allow_host_code:
        runner_options["allow_host_code"] = True
    classifier = Classifier.open(model, backend=backend, device=device, **runner_options)
    try:
        meta = classifier.metadata
        expected = DATASET_CLASSES.get(layout_name)
        if expected is not None and meta.num_classes != expected:
            raise AsanetError(f"{model}: the model predicts {meta.num_classes} classes but {layout_name} has "
                              f"{expected}; wrong model or --layout?")
        k = meta.num_classes
        mapping.check(k, options.ignore_index)
        matrix = ConfusionMatrix(k, ignore_index=options.ignore_index)
        tally = _Tally()
        ignored = 0
        bar = None
        if progress:
            from .progress import Progress

            bar = Progress(len(samples), label="images")
        bands = classifier.optical_bands
        start = time.perf_counter()
        for group in _batches(samples, batch, lambda s: read_sample(s, bands, options)):
            optical = np.stack([g[1] for g in group])
            sar = np.stack([g[2] for g in group])
            try:
                pred = classifier.predict(optical, sar)
            except AsanetError as exc:
                raise AsanetError(f"{group[0][0].optical}: inference failed ({exc})") from exc
            for (sample, _, _, stored), p in zip(group, pred):
                label, unmapped = mapping.apply(stored, options.ignore_index)
                if unmapped:
                    tally.add("unmapped", sample.label.name, unmapped)
                bad = (label != options.ignore_index) & ((label < 0) | (label >= k))
                if bad.any():
                    found, counts = np.unique(label[bad], return_counts=True)
                    tally.add("stray", sample.label.name, {int(v): int(n) for v, n in zip(found, counts)})
                ignored += int((label == options.ignore_index).sum() + bad.sum())
                matrix.update(np.asarray(p), label)
            if bar is not None:
                bar.update(len(group))
        seconds = time.perf_counter() - start
        if bar is not None:
            bar.close()
        labelled = int(matrix.counts.sum() + matrix.missed.sum())
        if labelled == 0:
            raise AsanetError(f"{data}: no labelled pixel in {len(samples)} images (all ignore index "
                              f"{options.ignore_index}?)")
        scores = matrix.result(meta.classes)
        from .model_summary import model_summary

        summary = model_summary(classifier.runner)
        model_info = {"path": str(model), "backend": classifier.runner.backend,
                      **{key: summary[key] for key in ("precision", "flavour", "int8_target", "arch", "num_classes",
                                                       "optical_bands")}}
        dataset = {"root": str(data), "layout": layout_name, "split": split if split is not None
                   else spec.default_split, "images": len(samples), "labelled_pixels": labelled,
                   "ignored_pixels": ignored, "ignore_index": options.ignore_index,
                   "label_map": mapping.describe(),
                   "optical_scale": str(options.optical_scale), "sar_scale": str(options.sar_scale),
                   "optical_bands": list(options.optical_bands) if options.optical_bands else "by colour name",
                   "sar_band": options.sar_band, "batch": batch}
        return EvalResult(scores, model_info, dataset, seconds, tally.notes(k, mapping, options.ignore_index))
    finally:
        classifier.close()


def write_eval_json(result: EvalResult, path: str | os.PathLike) -> None:
    """The result as JSON (schema ``EVAL_SCHEMA_VERSION``), written atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
