"""ASANet's fusion modules, SFM (``FRMs``) and CFM (``FFMs``), with the official parameter names."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5


def sfm_hidden(channels: int) -> int:
    """Width of the SFM's shared MLP, as the official code sizes it."""
    return max(32, channels // 16)


class SFM(nn.Module):
    """Semantic Focusing Module: each stream is re-weighted by a gate from the global max of the difference."""

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or sfm_hidden(channels)
        self.sconv = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a1 = torch.sigmoid(self.sconv(F.adaptive_max_pool2d(x1 - x2, 1)))
        a2 = torch.sigmoid(self.sconv(F.adaptive_max_pool2d(x2 - x1, 1)))
        return x1 + x1 * a1, x2 + x2 * a2


class ConvBN(nn.Module):
    """1x1 conv without bias + BatchNorm (mmcv ``ConvModule`` without activation)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DWConvReLU6(nn.Module):
    """Depthwise 3x3 conv with bias + ReLU6."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.conv(x))


class ChannelMLP(nn.Module):
    """CFM gate MLP: 1x1 C->4C + BN, depthwise 3x3 + ReLU6, 1x1 4C->C + BN (pre-sigmoid logits)."""

    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = channels * expansion
        self.fc1 = ConvBN(channels, hidden)
        self.dwconv = DWConvReLU6(hidden)
        self.fc2 = ConvBN(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dwconv(self.fc1(x)))


class CFM(nn.Module):
    """Cascade Fusion Module: gate each stream from the pooled joint map, then mix them with channel softmaxes."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.catconv1 = nn.Conv2d(2 * channels, channels, 1)
        self.mlp1 = ChannelMLP(channels)
        self.mlp2 = ChannelMLP(channels)
        self.catconv2 = nn.Conv2d(2 * channels, channels, 1)
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(self.catconv1(torch.cat([x1, x2], dim=1)), 1)
        w1 = x1 * torch.sigmoid(self.mlp1(g))
        w2 = x2 * torch.sigmoid(self.mlp2(g))
        wc = self.catconv2(torch.cat([w1, w2], dim=1))
        return w1 * torch.softmax(self.fc1(wc), dim=1) + w2 * torch.softmax(self.fc2(wc), dim=1)
