"""Helpers shared by the network and export tests."""
from __future__ import annotations

from pathlib import Path

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


def write_small_checkpoint(path: Path) -> Path:
    """A small ASANet (3 classes, seeded random weights) as an mmengine-style checkpoint with class names."""
    from asanet_rt.export.network import build_model
    from asanet_rt.metadata import ArchSpec

    arch = ArchSpec((1, 1, 1, 1), (16, 32, 48, 64), 24, 3)
    torch.save({"meta": {"dataset_meta": {"classes": ("water", "trees", "crops"),
                                          "palette": [[0, 0, 255], [0, 128, 0], [255, 255, 0]]}},
                "state_dict": randomise(build_model(arch), seed=1).state_dict()}, path)
    return path
