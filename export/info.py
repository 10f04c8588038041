"""What ``asanet-rt info`` reports about a checkpoint: architecture, classes, size, cost, pre-processing."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from asanet_rt.metadata import ModelMetadata

from .network import ASANetSegmentor


@dataclass(frozen=True)
class ModelInfo:
    """A checkpoint summary. ``gmacs`` are multiply-accumulates, the unit the paper and mmcv call GFLOPs."""

    metadata: ModelMetadata
    params: int
    params_with_aux: int
    tile: int
    gmacs: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metadata"] = self.metadata.to_dict()
        return data


def count_macs(model: torch.nn.Module, height: int, width: int) -> float:
    """Multiply-accumulates (in G) of one forward pass on a (1, 3, H, W) pair."""
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, x)
    return counter.get_total_flops() / 2e9


def model_info(model: ASANetSegmentor, tile: int | None = None) -> ModelInfo:
    """Summarise a model from ``load_checkpoint`` (which records the size of the training-only auxiliary head)."""
    meta: ModelMetadata = model.metadata
    tile = tile or meta.native_tile
    params = sum(p.numel() for p in model.parameters())
    return ModelInfo(meta, params, params + getattr(model, "aux_params", 0), tile, count_macs(model, tile, tile))


def format_info(info: ModelInfo) -> str:
    meta = info.metadata
    lines = [
        f"checkpoint     {meta.source} (sha256 {meta.checkpoint_sha256[:16]}...)",
        f"architecture   {meta.arch.summary()}",
        f"parameters     {info.params:,} for inference, " + (
            f"{info.params_with_aux:,} with the auxiliary head" if info.params_with_aux > info.params
            else "no auxiliary head in the file"),
        f"cost           {info.gmacs:.2f} GMACs ({2 * info.gmacs:.2f} GFLOPs) per {info.tile}x{info.tile} tile "
        f"(the paper's 'GFLOPs' are MACs)",
        f"preprocessing  {meta.describe_preprocessing()}",
        "classes",
    ]
    for i, (name, colour) in enumerate(zip(meta.classes, meta.palette)):
        lines.append(f"  {i:3d}  {name:<20s} rgb{tuple(colour)}")
    return "\n".join(lines)
