"""The model's inputs from raw tiles: the one place that knows what a ``--input normalized`` export expects."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..metadata import ModelMetadata


def model_feed(meta: ModelMetadata, optical: np.ndarray, sar: np.ndarray,
               bands: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``{"optical", "sar"}`` for a model from raw 0-255 tiles (optical channels in ``bands`` order).

    A raw-input export normalises inside its graph, so the tiles go in as they are; a normalized export takes
    the network's own contract, so they are reordered to the network's channel order, normalised and the SAR
    replicated here. ``bands`` defaults to the model's declared input band order.
    """
    inputs = meta.inputs
    if inputs.kind != "normalized":
        return {"optical": optical, "sar": sar}
    bands = tuple(bands or inputs.optical_bands)
    perm = [bands.index(name) for name in meta.optical_channels]
    mean = np.asarray(meta.optical_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(meta.optical_std, np.float32).reshape(1, 3, 1, 1)
    sar3 = np.repeat(np.asarray(sar, np.float32), meta.sar_replicate, axis=1)
    s_mean = np.asarray(meta.sar_mean, np.float32).reshape(1, -1, 1, 1)
    s_std = np.asarray(meta.sar_std, np.float32).reshape(1, -1, 1, 1)
    return {"optical": (np.asarray(optical)[:, perm].astype(np.float32) - mean) / std,
            "sar": (sar3 - s_mean) / s_std}
