"""Segmentation metrics with mmseg's ``IoUMetric`` semantics, from one accumulated confusion matrix.

mmseg sums intersections and unions over the whole dataset before dividing, drops ignored pixels, and leaves a
class whose union is empty out of the mean (NaN). The same rules hold here, so numbers match papers' tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class ConfusionMatrix:
    """Accumulates ``counts[true, pred]`` over batches of label maps."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.missed = np.zeros(num_classes, dtype=np.int64)  # labelled pixels predicted outside 0..K-1

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one batch; pixels labelled ``ignore_index`` (or outside 0..K-1) do not count."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
        label = label.astype(np.int64, copy=False).ravel()
        pred = pred.astype(np.int64, copy=False).ravel()
        keep = (label != self.ignore_index) & (label >= 0) & (label < self.num_classes)
        # A prediction outside 0..K-1 counts against recall but matches no class (mmseg's histc drops it).
        pred_ok = (pred >= 0) & (pred < self.num_classes)
        k = self.num_classes
        both = keep & pred_ok
        self.counts += np.bincount(label[both] * k + pred[both], minlength=k * k).reshape(k, k)
        self.missed += np.bincount(label[keep & ~pred_ok], minlength=k)

    def result(self, class_names: Sequence[str] | None = None) -> "SegmentationScores":
        return SegmentationScores.from_counts(self.counts, self.missed, class_names)


@dataclass(frozen=True)
class SegmentationScores:
    """Per-class IoU / accuracy / F1 and their means; overall accuracy; Cohen's kappa; the confusion matrix."""

    class_names: tuple[str, ...]
    iou: np.ndarray
    accuracy: np.ndarray
    f1: np.ndarray
    miou: float
    macc: float
    mf1: float
    overall_accuracy: float
    kappa: float
    confusion: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray, missed: np.ndarray | None = None,
                    class_names: Sequence[str] | None = None) -> "SegmentationScores":
        counts = np.asarray(counts, dtype=np.float64)
        k = counts.shape[0]
        intersect = np.diag(counts)
        area_label = counts.sum(axis=1) + (missed if missed is not None else 0)
        area_pred = counts.sum(axis=0)
        union = area_label + area_pred - intersect
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = intersect / union
            acc = intersect / area_label
            precision = intersect / area_pred
            f1 = 2 * precision * acc / (precision + acc)
            total = area_label.sum()
            oa = intersect.sum() / total if total else float("nan")
            expected = (area_label * area_pred).sum() / total ** 2 if total else float("nan")
            kappa = (oa - expected) / (1 - expected) if total and expected != 1 else float("nan")
        iou[union == 0] = np.nan
        names = tuple(class_names) if class_names is not None else tuple(f"class_{i}" for i in range(k))
        return cls(names, iou, acc, f1, _nanmean(iou), _nanmean(acc), _nanmean(f1), float(oa), float(kappa),
                   counts.astype(np.int64))

    def to_dict(self) -> dict:
        def clean(values: np.ndarray) -> list:
            return [None if np.isnan(v) else round(float(v), 6) for v in values]

        return {
            "mIoU": _round(self.miou), "mAcc": _round(self.macc), "mF1": _round(self.mf1),
            "overall_accuracy": _round(self.overall_accuracy), "kappa": _round(self.kappa),
            "per_class": {name: {"IoU": iou, "Acc": acc, "F1": f1} for name, iou, acc, f1 in zip(
                self.class_names, clean(self.iou), clean(self.accuracy), clean(self.f1))},
            "confusion_matrix": self.confusion.tolist(),
        }

    def format_table(self) -> str:
        width = max(len(n) for n in self.class_names) + 2
        lines = [f"{'class':<{width}} {'IoU':>7} {'Acc':>7} {'F1':>7}"]
        for name, iou, acc, f1 in zip(self.class_names, self.iou, self.accuracy, self.f1):
            lines.append(f"{name:<{width}} {_pct(iou)} {_pct(acc)} {_pct(f1)}")
        lines.append(f"mIoU {_pct(self.miou)}  mAcc {_pct(self.macc)}  mF1 {_pct(self.mf1)}  "
                     f"OA {_pct(self.overall_accuracy)}  kappa {self.kappa:.4f}")
        return "\n".join(lines)


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def _pct(value: float) -> str:
    return "    n/a" if np.isnan(value) else f"{100 * value:7.2f}"
