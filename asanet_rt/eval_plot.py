"""``eval --plot``: the confusion matrix as a PNG (matplotlib, optional)."""
from __future__ import annotations

import os

import numpy as np

from .errors import AsanetError
from .io_utils import atomic_output
from .metrics import SegmentationScores


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

