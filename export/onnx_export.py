"""ASANet -> ONNX: pre-processing inside the graph, dynamic batch and tile size, named outputs, metadata.

The file is what every runtime consumes: it carries the model's metadata (classes, palette, band order, tile
range ...) in ``metadata_props`` so that nothing has to be re-typed downstream.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from asanet_rt.errors import AsanetError
from asanet_rt.io_utils import atomic_output
from asanet_rt.metadata import METADATA_KEY, ModelInputs, ModelMetadata
from asanet_rt.model_files import check_onnx_file

from .graph_ops import prepare_for_export
from .network import MIN_INPUT_SIZE, ASANetSegmentor
from .onnx_functions import OPSET, attach_functions

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("logits", "probabilities", "classes", "confidence")
#: The runtime blends overlapping tiles on probabilities, so that is what a default export gives.
DEFAULT_OUTPUTS = ("probabilities",)
BAND_NAMES = ("blue", "green", "red")
#: The default tile range, widened to hold the model's native tile.
DEFAULT_TILE = (256, 1024)


class TileRangeWarning(UserWarning):
    """The exported tile range excludes the model's native tile (the runtime then tiles at another size)."""


@dataclass(frozen=True)
class ExportOptions:
    """How to export. ``optical_bands`` is the channel order of the ``optical`` input (raw input only)."""

    input: str = "raw"
    optical_bands: tuple[str, ...] | None = None
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    probabilities_dtype: str = "float32"
    batch: tuple[int, int] = (1, 8)
    tile: tuple[int, int] | None = None  # None: DEFAULT_TILE widened to hold the native tile (``for_model``)
    ops: str = "portable"
    simplify: bool = True

    def for_model(self, meta: ModelMetadata, warn: bool = True) -> "ExportOptions":
        """These options with the tile range filled in; a ``TileRangeWarning`` when it excludes the native tile."""
        native = -(-meta.native_tile // 32) * 32
        if self.tile is None:
            return dataclasses.replace(self, tile=(min(DEFAULT_TILE[0], native), max(DEFAULT_TILE[1], native)))
        lo, hi = self.tile
        if warn and not lo <= native <= hi:
            warnings.warn(f"tile range {lo}:{hi} excludes the model's native tile {native}: the runtime will tile "
                          f"at {lo if native < lo else hi} px, which the model was not trained on "
                          f"(leave --tile out, or give a range that holds {native})", TileRangeWarning, stacklevel=3)
        return self

    def validate(self, meta: ModelMetadata) -> None:
        if self.input not in ("raw", "normalized"):
            raise AsanetError(f"--input must be raw or normalized, not {self.input!r}")
        if self.ops not in ("portable", "plugins"):
            raise AsanetError(f"--ops must be portable or plugins, not {self.ops!r}")
        bad = [o for o in self.outputs if o not in OUTPUT_NAMES]
        if bad or not self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise AsanetError(f"--outputs {','.join(self.outputs)}: choose one or more of {', '.join(OUTPUT_NAMES)}")
        if self.probabilities_dtype not in ("float32", "float16"):
            raise AsanetError(f"probabilities dtype must be float32 or float16, not {self.probabilities_dtype!r}")
        lo, hi = self.tile
        if lo % 32 or hi % 32 or lo < MIN_INPUT_SIZE or hi < lo:
            raise AsanetError(f"--tile {lo}:{hi}: both ends must be multiples of 32, at least {MIN_INPUT_SIZE}, "
                              f"and min <= max")
        if self.batch[0] < 1 or self.batch[1] < self.batch[0]:
            raise AsanetError(f"--batch {self.batch[0]}:{self.batch[1]}: need 1 <= min <= max")
        bands = self.resolved_bands(meta)
        if sorted(bands) != sorted(meta.optical_channels):
            raise AsanetError(f"--input-bands {','.join(bands)}: must name each of "
                              f"{', '.join(meta.optical_channels)} once")

    def resolved_bands(self, meta: ModelMetadata) -> tuple[str, ...]:
        return tuple(self.optical_bands) if self.optical_bands else tuple(meta.optical_channels)

    def inputs(self, meta: ModelMetadata) -> ModelInputs:
        """What the exported file will accept (the runtime's typed view), e.g. its ``default_tile``."""
        return meta.with_export(input=self.input, optical_bands=list(self.resolved_bands(meta)),
                                outputs=list(self.outputs), tile=list(self.tile), batch=list(self.batch)).inputs


class ExportableASANet(nn.Module):
    """The network plus pre-processing (band order, normalisation, SAR replication) and the chosen outputs."""

    def __init__(self, model: ASANetSegmentor, meta: ModelMetadata, options: ExportOptions) -> None:
        super().__init__()
        self.net = prepare_for_export(copy.deepcopy(model), fused=options.ops == "plugins").eval()
        self.raw = options.input == "raw"
        bands = options.resolved_bands(meta)
        perm = [bands.index(name) for name in meta.optical_channels]
        self.perm = None if perm == [0, 1, 2] else perm
        self.register_buffer("opt_mean", torch.tensor(meta.optical_mean).view(1, 3, 1, 1))
        self.register_buffer("opt_std", torch.tensor(meta.optical_std).view(1, 3, 1, 1))
        self.register_buffer("sar_mean", torch.tensor(meta.sar_mean[:1]).view(1, 1, 1, 1))
        self.register_buffer("sar_std", torch.tensor(meta.sar_std[:1]).view(1, 1, 1, 1))
        self.outputs = options.outputs
        self.prob_half = options.probabilities_dtype == "float16"

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.raw:
            if self.perm is not None:
                optical = optical[:, self.perm]
            optical = (optical - self.opt_mean) / self.opt_std
            sar = ((sar - self.sar_mean) / self.sar_std).expand(-1, 3, -1, -1)
        logits = self.net(optical, sar)
        results = {"logits": logits}
        if {"probabilities", "confidence"} & set(self.outputs):
            probs = F.softmax(logits, dim=1)
            results["probabilities"] = probs.half() if self.prob_half else probs
            results["confidence"] = probs.amax(dim=1)
        if "classes" in self.outputs:
            results["classes"] = logits.argmax(dim=1).to(torch.uint8)
        return tuple(results[name] for name in self.outputs)


@dataclass
class ExportResult:
    path: Path
    metadata: ModelMetadata
    notes: list[str] = field(default_factory=list)


def trace_to_onnx(model: ASANetSegmentor, meta: ModelMetadata, options: ExportOptions) -> onnx.ModelProto:
    """Trace the wrapped network into an in-memory ONNX model (float32, portable or plugin flavour)."""
    options = options.for_model(meta, warn=False)
    wrapper = ExportableASANet(model, meta, options)
    size = options.inputs(meta).default_tile
    sar_channels = 1 if wrapper.raw else 3
    example = (torch.rand(options.batch[0], 3, size, size) * 255, torch.rand(options.batch[0], sar_channels, size,
                                                                             size) * 255)
    dynamic = {"optical": {0: "batch", 2: "height", 3: "width"}, "sar": {0: "batch", 2: "height", 3: "width"}}
    for name in options.outputs:
        dynamic[name] = {0: "batch", 1: "height", 2: "width"} if name in ("classes", "confidence") else {
            0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values are expected
        torch.onnx.export(wrapper, example, buffer, dynamo=False, opset_version=OPSET,
                          input_names=["optical", "sar"], output_names=list(options.outputs),
                          dynamic_axes=dynamic, do_constant_folding=True,
                          custom_opsets={"asanet": 1} if options.ops == "plugins" else None)
    return onnx.load_from_string(buffer.getvalue())


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and dead-node removal with onnxslim; the original is kept if slimming fails."""
    try:
        import onnxslim
    except ImportError:
        log.warning("onnxslim is not installed: the graph is exported without simplification")
        return model
    try:
        return onnxslim.slim(model, no_shape_infer=False, skip_fusion_patterns=None)
    except Exception as exc:  # a third-party optimiser must never cost the user their export
        log.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
        return model


def finalize(model: onnx.ModelProto, meta: ModelMetadata) -> onnx.ModelProto:
    """Attach function bodies and metadata, infer shapes, and check the model fully."""
    model = attach_functions(model)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    model.producer_name, model.producer_version = "asanet-rt", meta.sdk_version
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_metadata(meta: ModelMetadata, options: ExportOptions, precision: str = "fp32",
                    **extra: object) -> ModelMetadata:
    fields = dict(input=options.input, outputs=list(options.outputs), batch=list(options.batch),
                  tile=list(options.tile), precision=precision, ops=options.ops, opset=OPSET,
                  probabilities_dtype=options.probabilities_dtype)
    if options.input == "raw":
        fields["optical_bands"] = list(options.resolved_bands(meta))
    fields.update(extra)
    return meta.with_export(**fields)


def export_onnx(model: ASANetSegmentor, out_path: str | os.PathLike, options: ExportOptions = ExportOptions(),
                *, overwrite: bool = True) -> ExportResult:
    """Export ``model`` (from ``load_checkpoint``) to a float32 ONNX file; written atomically."""
    meta: ModelMetadata = model.metadata
    options = options.for_model(meta)
    options.validate(meta)
    final_meta = export_metadata(meta, options)
    onnx_model = trace_to_onnx(model, meta, options)
    if options.simplify:
        onnx_model = simplify(onnx_model)
    onnx_model = finalize(onnx_model, final_meta)
    save_onnx(onnx_model, out_path, overwrite=overwrite)
    return ExportResult(Path(out_path), final_meta)


def save_onnx(model: onnx.ModelProto, out_path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Write ``model`` atomically; refuses graphs over protobuf's 2 GiB limit with a clear message."""
    data = model.SerializeToString()
    with atomic_output(out_path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The asanet-rt metadata of an ONNX file."""
    check_onnx_file(path)
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise AsanetError(f"{path}: no asanet-rt metadata in this ONNX file; export it with `asanet-rt export`")
    return ModelMetadata.from_json(props[METADATA_KEY], source=str(path))
