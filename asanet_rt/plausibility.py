"""Warnings for maps that are probably wrong although nothing failed: one class everywhere, or inputs whose values
sit far from what the model was trained on (usually a wrong --optical-scale / --sar-scale)."""
from __future__ import annotations

from typing import Sequence

from .metadata import ModelMetadata

#: Share of the valid pixels one class must hold for the "one class" warning, and the pixels needed to judge.
ONE_CLASS_SHARE = 0.995
MIN_PIXELS = 4096
#: Distance of a scene's mean from the training mean, in training standard deviations, that earns a warning.
MEAN_SIGMAS = 3.5


def map_warnings(counts: Sequence[int], classes: Sequence[str],
                 input_means: tuple[Sequence[float], float] | None,
                 training: tuple[Sequence[float], Sequence[float], float, float],
                 band_names: Sequence[str]) -> list[str]:
    """Messages for a finished map: ``counts`` per class, the scene's mean inputs on the 0-255 scale, and the
    model's ``training`` (optical means, optical stds, SAR mean, SAR std) in the same band order."""
    messages = []
    total = int(sum(counts))
    off = _off_scale(input_means, training, band_names)
    if off:
        messages.append(f"the inputs look unlike the model's training data ({off}); check --optical-scale and "
                        f"--sar-scale")
    if total >= MIN_PIXELS:
        top = max(range(len(counts)), key=lambda i: counts[i])
        if counts[top] >= ONE_CLASS_SHARE * total:
            messages.append(f"the map is {100.0 * counts[top] / total:.1f} % one class ({classes[top]}); if the "
                            f"scene is not, check the input scaling (--optical-scale, --sar-scale) and band order "
                            f"(--optical-bands)")
    return messages


def _off_scale(input_means: tuple[Sequence[float], float] | None,
               training: tuple[Sequence[float], Sequence[float], float, float], band_names: Sequence[str]) -> str:
    """A description of the bands whose scene mean is far from the training mean, or ``""``."""
    if input_means is None:
        return ""
    o_mean, o_std, s_mean, s_std = training
    seen = list(input_means[0]) + [input_means[1]]
    names = list(band_names) + ["SAR"]
    ref = list(zip(o_mean, o_std)) + [(s_mean, s_std)]
    far = [f"{name} mean {v:.0f} vs {m:.0f} +- {s:.0f}" for name, v, (m, s) in zip(names, seen, ref)
           if s > 0 and abs(v - m) > MEAN_SIGMAS * s]
    return ", ".join(far)


def training_stats(meta: ModelMetadata, bands: Sequence[str]) -> tuple[tuple[float, ...], tuple[float, ...], float,
                                                                       float]:
    """The model's training mean and std of each optical input band (in ``bands`` order) and of SAR."""
    mean = dict(zip(meta.optical_channels, meta.optical_mean))
    std = dict(zip(meta.optical_channels, meta.optical_std))
    return (tuple(float(mean.get(b, 0.0)) for b in bands), tuple(float(std.get(b, 0.0)) for b in bands),
            float(meta.sar_mean[0]), float(meta.sar_std[0]))
