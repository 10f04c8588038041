"""Official checkpoint -> ASANet network + metadata: architecture inference, key filtering, strict loading."""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import torch

from asanet_rt.errors import AsanetError
from asanet_rt.io_utils import sha256_file
from asanet_rt.metadata import ArchSpec, MetadataError, ModelMetadata

from .checkpoint_file import CheckpointContents, read_checkpoint
from .network import ASANetSegmentor, build_model
from .official_config import parse_official_config

#: Training-only parts of an official checkpoint that inference ignores.
IGNORED_PREFIXES = ("auxiliary_head.",)
DEFAULT_POOL_SCALES = (1, 2, 3, 6)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


class CheckpointMismatchError(AsanetError):
    """The state dict does not fit the architecture inferred from it."""


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop training-only entries (``auxiliary_head.*``); official names need no renaming."""
    return {k: v for k, v in state_dict.items() if not k.startswith(IGNORED_PREFIXES)}


def infer_arch(state_dict: Mapping[str, torch.Tensor], pool_scales: tuple[int, ...] | None = None,
               source: str = "checkpoint") -> ArchSpec:
    """Read widths, depths, decoder channels and class count from the shapes of an official state dict."""
    prefix = "backbone.backbone."
    try:
        channels = [int(state_dict[f"{prefix}downsample_layers.0.0.weight"].shape[0])]
        i = 1
        while f"{prefix}downsample_layers.{i}.1.weight" in state_dict:
            channels.append(int(state_dict[f"{prefix}downsample_layers.{i}.1.weight"].shape[0]))
            i += 1
        blocks: dict[int, set[int]] = defaultdict(set)
        for key in state_dict:
            m = re.match(re.escape(prefix) + r"stages\.(\d+)\.(\d+)\.", key)
            if m:
                blocks[int(m.group(1))].add(int(m.group(2)))
        depths = [len(blocks[s]) for s in range(len(channels))]
        conv_seg = state_dict["decode_head.conv_seg.weight"]
        num_classes, decoder_channels = int(conv_seg.shape[0]), int(conv_seg.shape[1])
    except KeyError as exc:
        raise CheckpointMismatchError(
            f"{source}: not an ASANet state dict (missing {exc.args[0]!r}); expected the official keys "
            f"backbone.backbone.*, backbone.backbone2.*, backbone.FRMs.*, backbone.FFMs.*, decode_head.*") from exc
    if len(channels) != 4 or 0 in depths:
        raise CheckpointMismatchError(
            f"{source}: expected 4 ConvNeXt stages with at least one block each, found widths {channels} and "
            f"depths {depths}")
    n_ppm = len({k.split(".")[2] for k in state_dict if k.startswith("decode_head.psp_modules.")})
    if pool_scales is None:
        if n_ppm != len(DEFAULT_POOL_SCALES):
            raise CheckpointMismatchError(
                f"{source}: the decoder has {n_ppm} pyramid-pooling branches and the checkpoint's config does not "
                f"name their scales; only the official {DEFAULT_POOL_SCALES} can be assumed")
        pool_scales = DEFAULT_POOL_SCALES
    elif len(pool_scales) != n_ppm:
        raise CheckpointMismatchError(
            f"{source}: config pool_scales {pool_scales} but the decoder has {n_ppm} pyramid-pooling branches")
    return ArchSpec(tuple(depths), tuple(channels), decoder_channels, num_classes, tuple(pool_scales))


def load_state_dict_strict(model: ASANetSegmentor, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load with every key and shape checked; the error names the keys and the inferred arch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
                        for k in set(expected) & set(state_dict) if state_dict[k].shape != expected[k].shape)
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label} keys: {shown}")
        raise CheckpointMismatchError(
            f"{source}: state dict does not match the inferred arch {model.arch.summary()}; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def metadata_from_checkpoint(contents: CheckpointContents, arch: ArchSpec, dataset: str | None = None,
                             sha256: str = "") -> ModelMetadata:
    """Classes and palette from ``meta.dataset_meta``, normalisation from the embedded config, else the preset."""
    meta = contents.meta or {}
    dataset_meta = meta.get("dataset_meta") or {}
    cfg = parse_official_config(meta["cfg"]) if isinstance(meta.get("cfg"), str) else None
    classes = dataset_meta.get("classes")
    palette = dataset_meta.get("palette")
    if classes is not None and len(classes) != arch.num_classes:
        raise MetadataError(f"{contents.path}: meta.dataset_meta names {len(classes)} classes but the decoder "
                            f"predicts {arch.num_classes}")
    if palette is not None and (len(palette) != arch.num_classes or any(len(c) != 3 for c in palette)):
        palette = None
    values: dict = {}
    if cfg is not None and cfg.mean is not None and cfg.std is not None and len(cfg.mean) == len(cfg.std) == 6:
        values.update(optical_mean=cfg.mean[:3], optical_std=cfg.std[:3], sar_mean=cfg.mean[3:],
                      sar_std=cfg.std[3:])
    if cfg is not None and cfg.crop_size is not None:
        values["native_tile"] = max(cfg.crop_size)
    if cfg is not None and cfg.bgr_to_rgb:
        # The official pipeline decodes BGR with OpenCV; swapping to RGB reverses the network's channels.
        values["optical_channels"] = ("red", "green", "blue")
    if dataset is not None:
        # An explicit preset is the user's word: it fills what dataset_meta leaves open and sets normalisation.
        values = {k: v for k, v in values.items() if k in ("optical_channels",)}
    return ModelMetadata.build(arch, preset=dataset, classes=classes, palette=palette,
                               checkpoint_sha256=sha256, source=Path(contents.path).name, **values)


def load_checkpoint(path: str | os.PathLike, dataset: str | None = None,
                    strict: bool = True) -> ASANetSegmentor:
    """Load an official ASANet checkpoint (mmengine ``.pth``, bare state dict or ``.safetensors``).

    Returns the network in eval mode on CPU; ``model(optical, sar)`` takes normalised (N, 3, H, W) float32
    tensors (SAR replicated to 3 channels) and returns logits (N, K, H, W). ``model.metadata`` holds classes,
    palette and pre-processing. ``dataset`` names a preset (``whu-opt-sar``, ``pie-rgb-sar``, ``ddhr-sk``) for
    checkpoints whose ``meta`` lacks them. ``strict=False`` tolerates extra keys (never missing ones).
    """
    contents = read_checkpoint(path)
    cfg_text = (contents.meta or {}).get("cfg")
    cfg = parse_official_config(cfg_text) if isinstance(cfg_text, str) else None
    state_dict = checkpoint_filter_fn(contents.state_dict)
    arch = infer_arch(state_dict, cfg.pool_scales if cfg else None, source=str(path))
    model = build_model(arch)
    if not strict:
        expected = model.state_dict()
        state_dict = {k: v for k, v in state_dict.items() if k in expected}
    load_state_dict_strict(model, state_dict, str(path))
    model.metadata = metadata_from_checkpoint(contents, arch, dataset, sha256_file(path))
    model.aux_params = sum(v.numel() for k, v in contents.state_dict.items()
                           if k.startswith(IGNORED_PREFIXES) and not k.endswith(BUFFER_SUFFIXES))
    return model.eval()
