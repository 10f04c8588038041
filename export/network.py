"""The ASANet segmentor: two ConvNeXt-V2 streams fused stage by stage (SFM, LayerNorm, CFM), UPerHead decoder.

Module names follow the official code (``backbone.backbone``, ``backbone.backbone2``, ``backbone.FRMs``,
``backbone.FFMs``, ``decode_head``), so an official state dict loads without renaming.
"""
from __future__ import annotations

import torch
from torch import nn

from asanet_rt.metadata import ArchSpec

from .convnext import ConvNeXt
from .fusion import CFM, SFM
from .uper_head import UPerHead, resize

#: The smallest input edge the official network accepts (four strided stages must leave at least one pixel).
MIN_INPUT_SIZE = 32


class ASANet(nn.Module):
    """The dual-stream encoder. Returns the four fused maps (strides 4, 8, 16, 32)."""

    def __init__(self, depths: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__()
        self.backbone = ConvNeXt(depths, channels)
        self.backbone2 = ConvNeXt(depths, channels)
        self.FRMs = nn.ModuleList(SFM(c) for c in channels)
        self.FFMs = nn.ModuleList(CFM(c) for c in channels)

    def forward(self, x_opt: torch.Tensor, x_sar: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(len(self.FRMs)):
            x_opt, x_sar = self.FRMs[i](self.backbone.stage(i, x_opt), self.backbone2.stage(i, x_sar))
            # Unlike stock ConvNeXt, the normalised maps replace the streams and feed the next stage.
            x_opt, x_sar = self.backbone.out_norm(i)(x_opt), self.backbone2.out_norm(i)(x_sar)
            outs.append(self.FFMs[i](x_opt, x_sar))
        return outs


class ASANetSegmentor(nn.Module):
    """``model(optical, sar)`` -> logits (N, K, H, W) at input size, from normalised (N, 3, H, W) inputs."""

    def __init__(self, arch: ArchSpec) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = ASANet(arch.depths, arch.channels)
        self.decode_head = UPerHead(arch.channels, arch.decoder_channels, arch.num_classes, arch.pool_scales)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(self.backbone(optical, sar))
        return resize(logits, optical.shape[2:])


def build_model(arch: ArchSpec) -> ASANetSegmentor:
    """An untrained network of the given architecture, in eval mode on CPU."""
    return ASANetSegmentor(arch).eval()
