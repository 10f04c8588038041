"""Helpers shared by the network and export tests."""
from __future__ import annotations

import torch


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values for every parameter and BN statistic, so formula tests can fail."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.dtype.is_floating_point:
                values = torch.randn(tensor.shape, generator=gen) * 0.3
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return module.eval()
