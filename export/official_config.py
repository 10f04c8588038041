"""Read the few settings we need from the config text an official checkpoint carries (``meta['cfg']``).

The text is Python source written by mmengine. It is parsed with ``ast`` and only literal values are read:
nothing in it is executed.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OfficialConfig:
    """Settings from an official config; ``None`` where the text does not say."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr_to_rgb: bool | None = None
    pool_scales: tuple[int, ...] | None = None
    crop_size: tuple[int, int] | None = None
    dataset_type: str | None = None


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _keywords(call: ast.AST) -> dict[str, ast.AST]:
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "dict":
        return {kw.arg: kw.value for kw in call.keywords if kw.arg}
    return {}


def parse_official_config(text: str) -> OfficialConfig:
    """Extract normalisation, pool scales and crop size from config text; unknown or odd text gives ``None``s."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return OfficialConfig()
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        kws = _keywords(node)
        type_node = kws.get("type")
        kind = _literal(type_node) if type_node is not None else None
        if isinstance(kind, str) and kind.endswith("DataPreProcessor"):
            for key in ("mean", "std", "bgr_to_rgb"):
                if key in kws and key not in found:
                    found[key] = _literal(kws[key])
        if kind in ("UPerHead", "mmseg.UPerHead") and "pool_scales" in kws:
            found.setdefault("pool_scales", _literal(kws["pool_scales"]))
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "crop_size":
                found.setdefault("crop_size", _literal(node.value))
            elif name == "dataset_type":
                found.setdefault("dataset_type", _literal(node.value))
    return OfficialConfig(
        mean=_numbers(found.get("mean"), float),
        std=_numbers(found.get("std"), float),
        bgr_to_rgb=found["bgr_to_rgb"] if isinstance(found.get("bgr_to_rgb"), bool) else None,
        pool_scales=_numbers(found.get("pool_scales"), int),
        crop_size=_numbers(found.get("crop_size"), int) if _is_pair(found.get("crop_size")) else None,
        dataset_type=found.get("dataset_type") if isinstance(found.get("dataset_type"), str) else None,
    )


def _numbers(value: Any, kind: type) -> tuple | None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return tuple(kind(v) for v in value)
    return None


def _is_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2
