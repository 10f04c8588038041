"""ConvNeXt-V2 as mmpretrain builds it for ASANet (``use_grn=True``, ``layer_scale_init_value=0``, linear
pointwise convs), with mmpretrain's module names so that official state-dict keys load 1:1."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (mmpretrain ``LN2d``)."""

    def __init__(self, channels: int, eps: float = LN_EPS) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """Global Response Normalisation over a channel-last tensor (N, H, W, C)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LN -> Linear C->4C -> GELU -> GRN -> Linear 4C->C, plus the residual."""

    def __init__(self, channels: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        hidden = mlp_ratio * channels
        self.depthwise_conv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=LN_EPS)
        self.pointwise_conv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        self.pointwise_conv2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.depthwise_conv(x).permute(0, 2, 3, 1)
        x = self.pointwise_conv2(self.grn(self.act(self.pointwise_conv1(self.norm(x)))))
        return shortcut + x.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """The layers of one ConvNeXt-V2 stream. ASANet drives the stages itself (see ``ASANet.forward``), so this
    module has no forward of its own: stock mmpretrain would normalise only a copy of each stage's output."""

    def __init__(self, depths: Sequence[int], channels: Sequence[int], in_channels: int = 3) -> None:
        super().__init__()
        self.depths = tuple(depths)
        self.channels = tuple(channels)
        self.downsample_layers = nn.ModuleList()
        self.stages = nn.ModuleList()
        for i, (depth, width) in enumerate(zip(depths, channels)):
            if i == 0:
                down = nn.Sequential(nn.Conv2d(in_channels, width, 4, stride=4), LayerNorm2d(width))
            else:
                down = nn.Sequential(LayerNorm2d(channels[i - 1]), nn.Conv2d(channels[i - 1], width, 2, stride=2))
            self.downsample_layers.append(down)
            self.stages.append(nn.Sequential(*[ConvNeXtBlock(width) for _ in range(depth)]))
            self.add_module(f"norm{i}", LayerNorm2d(width))

    def stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Downsample and run stage ``i`` (without its output norm)."""
        return self.stages[i](self.downsample_layers[i](x))

    def out_norm(self, i: int) -> nn.Module:
        return getattr(self, f"norm{i}")
