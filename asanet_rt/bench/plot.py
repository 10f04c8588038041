"""``--plot``: e2e latency distributions and throughput bars of a report, as a PNG (matplotlib, optional)."""
from __future__ import annotations

import os
from typing import Any, Mapping

from ..errors import AsanetError
from ..io_utils import atomic_output


def plot_report(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    """A PNG: e2e latency distribution (box plots) and throughput bars per model and batch, one row per tile."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AsanetError(f"{path}: --plot needs matplotlib (pip install 'asanet-rt[plot]')") from exc
    ok = [r for r in report["results"] if r["status"] == "ok" and r.get("e2e")]
    if not ok:
        raise AsanetError(f"{path}: nothing to plot, no configuration ran")
    tiles = sorted({r["tile"] for r in ok})
    labels = list(dict.fromkeys(r["model"] for r in ok))
    fig, axes = plt.subplots(len(tiles), 2, figsize=(15, 4.2 * len(tiles)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, tile in enumerate(tiles):
        rs = [r for r in ok if r["tile"] == tile]
        ax = axes[row][0]
        data = [r["e2e"]["samples_ms"] or [r["e2e"]["latency_ms"]["p50"]] for r in rs]
        box = ax.boxplot(data, patch_artist=True, showfliers=True)
        for patch, r in zip(box["boxes"], rs):
            patch.set_facecolor(colours[labels.index(r["model"]) % len(colours)])
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(rs) + 1), [f"{r['model']}\nb={r['batch']}" for r in rs], rotation=30,
                      ha="right", fontsize=7)
        ax.set_ylabel("e2e latency per batch (ms)")
        ax.set_title(f"latency distribution, tile {tile}")
        if max(max(d) for d in data) > 10 * min(min(d) for d in data):
            ax.set_yscale("log")
        ax = axes[row][1]
        batches = sorted({r["batch"] for r in rs})
        width = 0.8 / max(len(labels), 1)
        for i, label in enumerate(labels):
            values = [next((r["e2e"]["throughput"]["tiles_per_s"] for r in rs
                            if r["model"] == label and r["batch"] == b), 0.0) for b in batches]
            ax.bar([j + i * width for j in range(len(batches))], values, width, label=label,
                   color=colours[i % len(colours)])
        ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(batches))],
                      [f"batch {b}" for b in batches])
        heights = [bar.get_height() for bar in ax.patches if bar.get_height() > 0]
        if heights and max(heights) > 30 * min(heights):
            ax.set_yscale("log")
        ax.set_ylabel("tiles/s (e2e)")
        ax.set_title(f"throughput, tile {tile}")
        ax.legend(fontsize=7)
    fig.suptitle(f"asanet-rt bench: {report['environment']['cpu'].get('model')}, {report['settings']['threads']} "
                 f"threads", fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


