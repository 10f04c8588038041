"""Export stage: official checkpoint -> faithful torch network -> ONNX (fp32 / fp16 / int8 Q/DQ).

Attributes load lazily so that ``asanet_rt.export.cli`` (argument parsing) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint_file",
    "build_model": "network",
    "ASANetSegmentor": "network",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
