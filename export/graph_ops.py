"""Export-time forms of the network's operations: exact dynamic adaptive pooling, NCHW ConvNeXt blocks, and the
fused ops (GRN, SFM, CFMGate, CFMFuse) that the plugin flavour emits as ``asanet``-domain custom nodes.

Each function computes the same numbers as the eager modules; only the ONNX graph they trace to differs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .convnext import ConvNeXtBlock
from .fusion import CFM, SFM

DOMAIN = "asanet"


def adaptive_avg_pool2d_exact(x: torch.Tensor, bins: int) -> torch.Tensor:
    """PyTorch's adaptive average pooling for any (traced, dynamic) H, W, as two pooling-matrix products.

    Bin i covers rows [floor(i*H/n), ceil((i+1)*H/n)): bins may overlap and differ in size, so no fixed
    AveragePool kernel is exact across a tile range. The matrices are built from the runtime shape.
    """
    return _pool_matrix(x.shape[2], bins, x) @ x @ _pool_matrix(x.shape[3], bins, x).transpose(0, 1)


def _pool_matrix(size: int | torch.Tensor, bins: int, like: torch.Tensor) -> torch.Tensor:
    # Under ONNX tracing ``size`` is a traced value, so the matrix follows the runtime shape.
    size = torch.as_tensor(size, dtype=torch.int64)
    i = torch.arange(bins, dtype=torch.int64).unsqueeze(1)
    # Operands are non-negative, so truncation is floor; it exports as one integer Div.
    start = torch.div(i * size, bins, rounding_mode="trunc")
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="trunc")
    j = torch.arange(size, dtype=torch.int64).unsqueeze(0)
    inside = ((j >= start) & (j < end)).to(like.dtype)
    return inside / (end - start).to(like.dtype)


def layer_norm_channels(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels of NCHW ``x`` with ``norm``'s parameters."""
    x = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return x.permute(0, 3, 1, 2)


def grn_nchw(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """GRN on NCHW: L2 norm over H, W per channel, divided by its channel mean."""
    gx = torch.sqrt(torch.sum(x * x, dim=(2, 3), keepdim=True))
    nx = gx / (gx.mean(dim=1, keepdim=True) + eps)
    return gamma.view(1, -1, 1, 1) * (x * nx) + beta.view(1, -1, 1, 1) + x


class _GRNOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float):  # noqa: D102
        return grn_nchw(x, gamma, beta, eps)

    @staticmethod
    def symbolic(g, x, gamma, beta, eps: float):  # noqa: D102
        out = g.op(f"{DOMAIN}::GRN", x, gamma, beta, eps_f=eps)
        out.setType(x.type())
        return out


def block_nchw(block: ConvNeXtBlock, x: torch.Tensor, fused: bool) -> torch.Tensor:
    """A ConvNeXt-V2 block in NCHW with 1x1 convs for the Linear layers (same weights, same math)."""
    y = layer_norm_channels(block.depthwise_conv(x), block.norm)
    pw1, pw2 = block.pointwise_conv1, block.pointwise_conv2
    y = F.gelu(F.conv2d(y, pw1.weight[:, :, None, None], pw1.bias))
    grn = block.grn
    y = _GRNOp.apply(y, grn.gamma, grn.beta, grn.eps) if fused else grn_nchw(y, grn.gamma, grn.beta, grn.eps)
    return x + F.conv2d(y, pw2.weight[:, :, None, None], pw2.bias)


class _SFMOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1, x2, w1, b1, w2, b2):  # noqa: D102
        def gate(v):
            return torch.sigmoid(F.linear(F.gelu(F.linear(v, w1, b1)), w2, b2))[:, :, None, None]

        d = x1 - x2
        p = torch.amax(d, dim=(2, 3))
        q = torch.amax(-d, dim=(2, 3))
        return x1 + x1 * gate(p), x2 + x2 * gate(q)

    @staticmethod
    def symbolic(g, x1, x2, w1, b1, w2, b2):  # noqa: D102
        y1, y2 = g.op(f"{DOMAIN}::SFM", x1, x2, w1, b1, w2, b2, outputs=2)
        y1.setType(x1.type())
        y2.setType(x2.type())
        return y1, y2


def sfm_fused(sfm: SFM, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c1, c2 = sfm.sconv[0], sfm.sconv[2]
    return _SFMOp.apply(x1, x2, c1.weight[:, :, 0, 0], c1.bias, c2.weight[:, :, 0, 0], c2.bias)


class _CFMGateOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1, x2, s):  # noqa: D102
        c = x1.shape[1]
        return torch.cat([x1 * torch.sigmoid(s[:, :c]), x2 * torch.sigmoid(s[:, c:])], dim=1)

    @staticmethod
    def symbolic(g, x1, x2, s):  # noqa: D102
        out = g.op(f"{DOMAIN}::CFMGate", x1, x2, s)
        out.setType(x1.type().with_sizes([None] * 4))  # 2C channels: only the rank and dtype carry over
        return out


class _CFMFuseOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, a):  # noqa: D102
        c = w.shape[1] // 2
        return w[:, :c] * torch.softmax(a[:, :c], dim=1) + w[:, c:] * torch.softmax(a[:, c:], dim=1)

    @staticmethod
    def symbolic(g, w, a):  # noqa: D102
        out = g.op(f"{DOMAIN}::CFMFuse", w, a)
        out.setType(w.type().with_sizes([None] * 4))
        return out


def cfm_fused(cfm: CFM, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """CFM with its element-wise tail as two fused ops; fc1 and fc2 run as one stacked 1x1 conv."""
    g = adaptive_avg_pool2d_exact(cfm.catconv1(torch.cat([x1, x2], dim=1)), 1)
    s = torch.cat([cfm.mlp1(g), cfm.mlp2(g)], dim=1)
    w = _CFMGateOp.apply(x1, x2, s)
    weight = torch.cat([cfm.fc1.weight, cfm.fc2.weight], dim=0)
    bias = torch.cat([cfm.fc1.bias, cfm.fc2.bias], dim=0)
    a = F.conv2d(cfm.catconv2(w), weight, bias)
    return _CFMFuseOp.apply(w, a)


class ExactAdaptiveAvgPool2d(torch.nn.Module):
    """Drop-in for ``nn.AdaptiveAvgPool2d(bins)`` that stays exact for every input size in the exported graph."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d_exact(x, self.bins)


class NCHWBlock(torch.nn.Module):
    """Runs a ConvNeXtBlock's weights in NCHW (GRN fused into one node when ``fused``)."""

    def __init__(self, block: ConvNeXtBlock, fused: bool) -> None:
        super().__init__()
        self.block, self.fused = block, fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_nchw(self.block, x, self.fused)


class FusedSFM(torch.nn.Module):
    def __init__(self, sfm: SFM) -> None:
        super().__init__()
        self.sfm = sfm

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sfm_fused(self.sfm, x1, x2)


class FusedCFM(torch.nn.Module):
    def __init__(self, cfm: CFM) -> None:
        super().__init__()
        self.cfm = cfm

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return cfm_fused(self.cfm, x1, x2)


def prepare_for_export(model: torch.nn.Module, fused: bool) -> torch.nn.Module:
    """Swap, in place, the modules whose eager form does not export exactly or that the plugin flavour fuses."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.AdaptiveAvgPool2d):
                bins = child.output_size if isinstance(child.output_size, int) else child.output_size[0]
                setattr(parent, name, ExactAdaptiveAvgPool2d(bins))
            elif isinstance(child, ConvNeXtBlock):
                setattr(parent, name, NCHWBlock(child, fused))
            elif fused and isinstance(child, SFM):
                setattr(parent, name, FusedSFM(child))
            elif fused and isinstance(child, CFM):
                setattr(parent, name, FusedCFM(child))
    return model
