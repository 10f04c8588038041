"""Value scaling from sensor units to the 0-255 scale the models were trained on.

Specs (``--optical-scale`` / ``--sar-scale``):

- ``auto``: uint8 data is used as is; anything else is an error asking for an explicit spec (guessing a range
  silently gives plausible-looking but wrong maps).
- ``none``: values are used as is (they should already be on a 0-255 scale).
- ``linear:MIN:MAX`` (alias ``reflectance:MIN:MAX``, ``db:MIN:MAX``): MIN..MAX -> 0..255, clipped. For Sentinel-2
  L2A (reflectance x 10000) ``reflectance:0:3000``; for Sentinel-1 backscatter in dB ``db:-25:0``.
- ``linear-power:MIN:MAX``: linear power (sigma0) is converted to dB (10 log10), then MIN..MAX dB -> 0..255.
- ``linear-amplitude:MIN:MAX``: amplitude is converted to dB (20 log10), then MIN..MAX dB -> 0..255.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .errors import AsanetError

_LINEAR_KINDS = ("linear", "reflectance", "db")
_KINDS = ("auto", "none") + _LINEAR_KINDS + ("linear-power", "linear-amplitude")
#: Fraction of valid pixels outside 0-255 (``none``) or clipped (explicit ranges) above which a warning is given.
WARN_FRACTION = 0.05


class RangeWarning(UserWarning):
    """Input values look off the model's 0-255 training scale (wrong units or scaling range)."""


@dataclass(frozen=True)
class Scale:
    """A parsed scaling spec; ``apply`` maps an array of sensor values to float32 on a 0-255 scale."""

    kind: str
    low: float = 0.0
    high: float = 255.0

    @classmethod
    def parse(cls, spec: str, option: str = "--scale") -> "Scale":
        """Parse ``auto``, ``none`` or ``KIND:MIN:MAX``; ``option`` names the flag in errors."""
        text = spec.strip().lower()
        kind, _, rest = text.partition(":")
        if kind not in _KINDS:
            raise AsanetError(f"{option} {spec!r}: unknown scaling; use one of auto, none, reflectance:MIN:MAX, "
                              f"linear:MIN:MAX, db:MIN:MAX, linear-power:MIN:MAX, linear-amplitude:MIN:MAX")
        if kind in ("auto", "none"):
            if rest:
                raise AsanetError(f"{option} {spec!r}: {kind} takes no range")
            return cls(kind)
        try:
            low, high = (float(v) for v in rest.split(":"))
        except ValueError:
            raise AsanetError(f"{option} {spec!r}: expected {kind}:MIN:MAX with two numbers, "
                              f"e.g. {'db:-25:0' if kind != 'reflectance' else 'reflectance:0:3000'}") from None
        if not high > low:
            raise AsanetError(f"{option} {spec!r}: MAX must be greater than MIN")
        return cls(kind, low, high)

    def resolve(self, dtype: str, source: str, option: str) -> "Scale":
        """Replace ``auto`` by ``none`` for uint8 data; for other data an error that names the file and the flag."""
        if self.kind != "auto":
            return self
        if np.dtype(dtype) == np.uint8:
            return Scale("none")
        hint = ("reflectance:0:3000 for Sentinel-2 L2A reflectance x10000" if option.startswith("--optical")
                else "db:-25:0 for Sentinel-1 backscatter in dB, linear-power:-25:0 for linear sigma0")
        raise AsanetError(f"{source}: {dtype} data needs an explicit {option} (models expect 0-255 values), "
                          f"e.g. {hint}; or `none` if the values already are on a 0-255 scale")

    def __str__(self) -> str:
        return self.kind if self.kind in ("auto", "none") else f"{self.kind}:{self.low:g}:{self.high:g}"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Sensor values -> float32 0-255 (clipped for explicit ranges). NaN stays NaN."""
        x = values.astype(np.float32, copy=True)
        if self.kind in ("none", "auto"):
            return x
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.kind == "linear-power":
                x = 10.0 * np.log10(x)
            elif self.kind == "linear-amplitude":
                x = 20.0 * np.log10(x)
        x -= self.low
        x *= 255.0 / (self.high - self.low)
        return np.clip(x, 0.0, 255.0, out=x)

    def out_of_range(self, values: np.ndarray, valid: np.ndarray) -> tuple[int, int]:
        """(suspicious, valid) pixel counts: outside 0-255 for ``none``, at or beyond the range ends otherwise."""
        sample = values[..., valid] if valid is not None else values.reshape(values.shape[0], -1)
        if sample.size == 0:
            return 0, 0
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.kind in ("none", "auto"):
                bad = (sample < 0) | (sample > 255)
            else:
                x = sample.astype(np.float32)
                if self.kind == "linear-power":
                    x = 10.0 * np.log10(x)
                elif self.kind == "linear-amplitude":
                    x = 20.0 * np.log10(x)
                bad = ~((x >= self.low) & (x <= self.high))  # clipped, or -inf/NaN from a log of <= 0
        return int(bad.any(axis=0).sum()), int(sample.shape[-1])


class RangeMonitor:
    """Counts suspicious values over a run (thread-safe) and words the warning for one input."""

    def __init__(self, source: str, option: str, scale: Scale) -> None:
        self.source, self.option, self.scale = source, option, scale
        self.bad = 0
        self.total = 0
        self._lock = threading.Lock()

    def update(self, values: np.ndarray, valid: np.ndarray) -> None:
        """Add the raw (unscaled) ``values`` (C, H, W) of the ``valid`` (H, W) pixels."""
        bad, total = self.scale.out_of_range(values, valid)
        with self._lock:
            self.bad += bad
            self.total += total

    def warning(self) -> str | None:
        """A message when too many values fall outside the model's range, else None."""
        if not self.total or self.bad / self.total <= WARN_FRACTION:
            return None
        share = 100.0 * self.bad / self.total
        if self.scale.kind in ("none", "auto"):
            example = "reflectance:0:3000" if self.option.startswith("--optical") else "db:-25:0"
            return (f"{self.source}: {share:.1f}% of pixels have values outside 0-255, the range the model was "
                    f"trained on; pass an explicit {self.option} (e.g. {example})")
        return (f"{self.source}: {share:.1f}% of pixels fall outside {self.option} {self.scale} and are clipped; "
                f"check that the range matches the data's units")
