"""Label numbering: stored label values -> the model's class indices (``eval --label-map``, calibration labels).

Named maps: ``identity`` (labels are class indices), ``whu`` (WHU-OPT-SAR: 10..70 or 1..7 -> 0..6, 0 -> ignore),
``reduce-zero`` (mmseg's ``reduce_zero_label``: 0 -> ignore, v -> v - 1). An explicit map ``VALUE:CLASS,...``
(``CLASS`` may be ``ignore``), or a file of such pairs (JSON object or list of pairs; or text/CSV with two
columns), renumbers any other dataset (e.g. Esri land cover 1..11). With an explicit map, a stored value the map
does not name is not scored (it becomes the ignore index) and is reported with its pixel count; the ignore index
itself stays ignored unless mapped.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import AsanetError

IGNORE_INDEX = 255
NAMED_MAPS = ("identity", "whu", "reduce-zero")
_IGNORE_WORDS = ("ignore", "none", "-")


def _whu_lut(ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    lut = np.full(256, ignore_index, np.uint8)
    for k in range(7):
        lut[k + 1] = k  # crop512 tiles: the official preparation divided the released labels by 10
        lut[(k + 1) * 10] = k  # the release: class * 10
    return lut


def whu_label_map(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """WHU-OPT-SAR labels -> classes 0..6: 10..70 (or 1..7) -> 0..6; 0 and anything else -> ``ignore_index``."""
    label = np.asarray(label)
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            label = np.where((label >= 0) & (label <= 255), label, 0)
        label = label.astype(np.uint8)
    return _whu_lut(ignore_index)[label]


def reduce_zero_label(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 -> ignore, v -> v - 1, the ignore index stays."""
    label = np.asarray(label).astype(np.int64)
    out = label - 1
    out[label == 0] = ignore_index
    out[label == ignore_index] = ignore_index
    return out


@dataclass(frozen=True)
class LabelMap:
    """A named map, or an explicit table of (stored value, class or None for ignore)."""

    name: str
    table: tuple[tuple[int, int | None], ...] = ()

    @property
    def explicit(self) -> bool:
        return self.name not in NAMED_MAPS

    @classmethod
    def parse(cls, spec: "str | LabelMap | Mapping[int, int | None] | None", default: str = "identity",
              option: str = "--label-map") -> "LabelMap":
        """``identity``, ``whu``, ``reduce-zero``, ``V:C,V:C,...``, a file of pairs, or a dict; None: ``default``."""
        if spec is None:
            return cls(default)
        if isinstance(spec, LabelMap):
            return spec
        if isinstance(spec, Mapping):
            return cls._from_pairs([(k, v) for k, v in spec.items()], "mapping", option)
        text = str(spec).strip()
        if text.lower() in NAMED_MAPS:
            return cls(text.lower())
        path = Path(text)
        if path.is_file():
            return cls._from_pairs(_read_pairs(path, option), str(path), option)
        items = [item for item in re.split(r"[,\s]+", text) if item]
        if items and all(":" in item for item in items):
            return cls._from_pairs([item.split(":", 1) for item in items], text, option)
        if path.suffix:
            raise AsanetError(f"{option} {text}: file not found")
        raise AsanetError(f"{option} {text!r}: give identity, whu, reduce-zero, VALUE:CLASS pairs (1:0,2:1,...) "
                          f"or a file of pairs (JSON, or two columns)")

    @classmethod
    def _from_pairs(cls, pairs: list, source: str, option: str) -> "LabelMap":
        table: dict[int, int | None] = {}
        for pair in pairs:
            if len(pair) != 2:
                raise AsanetError(f"{option} {source}: {pair!r} is not a VALUE:CLASS pair")
            value, target = (str(p).strip() for p in pair)
            try:
                key = int(value)
                cls_ = None if target.lower() in _IGNORE_WORDS else int(target)
            except ValueError:
                raise AsanetError(f"{option} {source}: {value}:{target} is not VALUE:CLASS with whole numbers "
                                  f"(CLASS may be 'ignore')") from None
            if cls_ is not None and cls_ < 0:
                raise AsanetError(f"{option} {source}: class {cls_} for value {key} is negative")
            if key in table:
                raise AsanetError(f"{option} {source}: value {key} is mapped twice")
            table[key] = cls_
        if not table:
            raise AsanetError(f"{option} {source}: the map is empty")
        return cls(source, tuple(sorted(table.items())))

    def check(self, num_classes: int, ignore_index: int = IGNORE_INDEX, option: str = "--label-map") -> None:
        """Every target is a class of the model (0..K-1) or the ignore index; a clear error otherwise."""
        bad = [(v, c) for v, c in self.table if c is not None and c != ignore_index and c >= num_classes]
        if bad:
            shown = ", ".join(f"{v}:{c}" for v, c in bad[:5])
            raise AsanetError(f"{option} {self.name}: {shown} names a class the model does not have (it has "
                              f"{num_classes}: 0..{num_classes - 1}; use 'ignore' or {ignore_index} to skip a value)")

    def apply(self, label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, dict[int, int]]:
        """(class indices int64 with ``ignore_index`` where not scored, {unmapped stored value: pixels})."""
        label = np.asarray(label)
        if self.name == "whu":
            return whu_label_map(label, ignore_index).astype(np.int64), {}
        if self.name == "reduce-zero":
            return reduce_zero_label(label, ignore_index), {}
        label = label.astype(np.int64)
        if self.name == "identity":
            return label, {}
        keys = np.array([v for v, _ in self.table], np.int64)
        values = np.array([ignore_index if c is None else c for _, c in self.table], np.int64)
        idx = np.minimum(np.searchsorted(keys, label), len(keys) - 1)
        hit = keys[idx] == label
        out = np.where(hit, values[idx], ignore_index)
        missed = ~hit & (label != ignore_index)
        unmapped: dict[int, int] = {}
        if missed.any():
            found, counts = np.unique(label[missed], return_counts=True)
            unmapped = {int(v): int(n) for v, n in zip(found, counts)}
        return out, unmapped

    def describe(self) -> str:
        """The name for reports: the named map, or the explicit pairs."""
        if not self.explicit:
            return self.name
        return ",".join(f"{v}:{'ignore' if c is None else c}" for v, c in self.table)


def _read_pairs(path: Path, option: str) -> list:
    """Pairs from a JSON file ({"1": 0, ...} or [[1, 0], ...]) or a text/CSV file of two columns."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AsanetError(f"{option} {path}: cannot read the file ({exc})") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AsanetError(f"{option} {path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict):
            return list(data.items())
        if isinstance(data, list):
            return [tuple(p) if isinstance(p, (list, tuple)) else (p,) for p in data]
        raise AsanetError(f"{option} {path}: expected a JSON object {{\"VALUE\": CLASS}} or a list of pairs")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in re.split(r"[,;:\s]+", line) if f]
        if number == 1 and fields and not fields[0].lstrip("-").isdigit():
            continue  # a header row (value,class)
        pairs.append(fields)
    return pairs
