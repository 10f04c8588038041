"""The ``asanet-rt export`` command as one library call: options -> ONNX file (fp32, fp16, int8) + accuracy report."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from asanet_rt.errors import AsanetError
from asanet_rt.preflight import check_outputs
from asanet_rt.metadata import ModelMetadata

from .calibration import CALIB_METHODS, HELD_OUT_MAX, Scaling, Tile, read_tiles, split_calibration, synthetic_tiles
from .network import ASANetSegmentor
from .onnx_export import (DEFAULT_OUTPUTS, ExportOptions, ExportResult, export_metadata, finalize, save_onnx,
                          simplify, trace_to_onnx)
from .report import build_report, logit_stats, write_report

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
#: Tiles the report evaluates on when neither labelled nor calibration tiles are given.
SYNTHETIC_TILES = 4


@dataclass(frozen=True)
class PrecisionOptions:
    """What precision to export and, for INT8, how to calibrate. ``calib`` / ``labels``: folders or pairs."""

    precision: str = "fp32"
    int8_target: str | None = None
    calib: tuple[str, ...] | None = None
    calib_method: str = "percentile"
    calib_tiles: int = 32
    keep_fp: str | tuple[str, ...] = "auto"
    labels: tuple[str, ...] | None = None
    fp16_fp32_groups: tuple[str, ...] | None = None  # None: fp16.DEFAULT_FP32_GROUPS
    scaling: Scaling = Scaling()
    calib_tile: int | None = None  # tile edge for calibration/evaluation tiles (default: the export's tile)
    hold_out: bool = True  # int8: grade the model on --calib tiles it was not calibrated on

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise AsanetError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.precision != "int8":
            if self.int8_target is not None:
                raise AsanetError(f"--int8-target applies to --precision int8, not {self.precision}")
            return
        if self.int8_target not in (None, "tensorrt", "cpu", "openvino"):
            raise AsanetError(f"--int8-target {self.int8_target!r}: choose tensorrt, cpu or openvino")
        if self.calib_method not in CALIB_METHODS:
            raise AsanetError(f"--calib-method {self.calib_method!r}: choose one of {', '.join(CALIB_METHODS)}")
        if not self.calib:
            raise AsanetError("--precision int8 needs calibration imagery: --calib FOLDER (optical/ + sar/ "
                              "subfolders) or --calib OPTICAL.tif,SAR.tif")
        if self.calib_tiles < 1:
            raise AsanetError(f"--calib-tiles {self.calib_tiles}: need at least one tile")

    @property
    def target(self) -> str:
        """The INT8 Q/DQ form; TensorRT (the SDK's deployment engine) unless ``cpu`` is asked for."""
        return self.int8_target or "tensorrt"


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(input=args.input, optical_bands=args.optical_bands,
                         outputs=tuple(args.outputs or DEFAULT_OUTPUTS),
                         probabilities_dtype=args.probabilities_dtype, batch=tuple(args.batch),
                         tile=tuple(args.tile) if args.tile else None, ops=args.ops, simplify=not args.no_simplify)


def precision_from_args(args: argparse.Namespace) -> PrecisionOptions:
    from .int8 import parse_keep_fp

    return PrecisionOptions(precision=args.precision, int8_target=args.int8_target,
                            calib=tuple(args.calib) if args.calib else None, calib_method=args.calib_method,
                            calib_tiles=args.calib_tiles, keep_fp=parse_keep_fp(args.keep_fp),
                            labels=tuple(args.labels) if args.labels else None)


def export_from_args(model: ASANetSegmentor, args: argparse.Namespace) -> list[str]:
    """Run the export the CLI describes; returns the lines to print."""
    result = export_model(model, args.output, options_from_args(args), precision_from_args(args),
                          overwrite=args.overwrite)
    export = result.metadata.export
    target = f" for {export['int8_target']}" if export.get("int8_target") else ""
    return [f"wrote {result.path} ({export['precision']}{target}, {export['ops']} ops, input {export['input']}, "
            f"outputs {','.join(export['outputs'])}, batch {export['batch'][0]}:{export['batch'][1]}, "
            f"tile {export['tile'][0]}:{export['tile'][1]})", *result.notes]


# ---------------------------------------------------------------------------------------------------- tiles
def model_inputs(tiles: Sequence[Tile], meta: ModelMetadata, options: ExportOptions) -> list[Tile]:
    """Tiles in the form the exported graph takes: raw as read, or normalised (``--input normalized``)."""
    if options.input == "raw":
        return list(tiles)
    bands = options.resolved_bands(meta)
    perm = [bands.index(c) for c in meta.optical_channels]
    mean = np.array(meta.optical_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(meta.optical_std, np.float32).reshape(1, 3, 1, 1)
    out = []
    for t in tiles:
        optical = (t.optical[:, perm] - mean) / std
        sar = np.repeat((t.sar - np.float32(meta.sar_mean[0])) / np.float32(meta.sar_std[0]), 3, axis=1)
        out.append(Tile(np.ascontiguousarray(optical), np.ascontiguousarray(sar), t.source, t.label))
    return out


def _tiles(sources: Sequence[str] | None, meta: ModelMetadata, options: ExportOptions, precision: PrecisionOptions,
           count: int, labelled: bool = False) -> list[Tile]:
    edge = precision.calib_tile or options.inputs(meta).native_in_range
    bands = options.resolved_bands(meta)
    tiles = read_tiles(sources, bands, edge, count, precision.scaling,
                       num_classes=meta.num_classes if labelled else None)
    return model_inputs(tiles, meta, options)


# ---------------------------------------------------------------------------------------------------- export
def export_model(model: ASANetSegmentor, out_path: str | os.PathLike, options: ExportOptions = ExportOptions(),
                 precision: PrecisionOptions = PrecisionOptions(), *, overwrite: bool = True, report: bool = True,
                 traced: dict[ExportOptions, onnx.ModelProto] | None = None) -> ExportResult:
    """Export ``model`` at ``precision`` to ``out_path`` (atomic) and write its accuracy report beside it.

    ``traced`` caches FP32 graphs (``trace_fp32``) by export options, for callers exporting several precisions
    of one model: tracing is the slowest step and the same for every precision.
    """
    from .report import run_logits

    meta: ModelMetadata = model.metadata
    options = options.for_model(meta)
    options.validate(meta)
    precision.validate()
    out_path = Path(out_path)
    check_outputs([out_path], overwrite=overwrite)  # a folder, a missing or read-only folder: before any work
    # read the imagery before the slow parts, so that a bad --calib/--labels fails at once
    calib, held_out, warnings = None, [], []
    if precision.calib:
        int8 = precision.precision == "int8"
        extra = HELD_OUT_MAX if int8 and precision.hold_out else 0
        pool = _tiles(precision.calib, meta, options, precision, precision.calib_tiles + extra)
        if int8:
            split = split_calibration(pool, precision.calib_tiles, precision.hold_out)
            calib, held_out, warnings = split.calibration, split.held_out, split.warnings
        else:
            calib = pool[:precision.calib_tiles]
    for text in warnings:
        log.warning("warning: %s", text)
    labelled = _tiles(precision.labels, meta, options, precision, 10 ** 6, labelled=True) if precision.labels \
        else None
    in_sample = None  # (tiles, what they are) graded separately from the headline
    if labelled:
        fresh = [t for t in labelled if not any(t.overlaps(c) for c in calib or ())]
        if calib and len(fresh) < len(labelled):
            in_sample = ([t for t in labelled if t not in fresh], "labelled tiles that overlap the calibration "
                                                                  "tiles (in-sample)")
        if fresh:
            eval_tiles, source, held = fresh, "labelled tiles (--labels)", True
        else:
            eval_tiles, source, held = labelled, "labelled tiles (--labels), all of them also calibration tiles: " \
                                                 "in-sample", False
            in_sample = None
    elif held_out:
        eval_tiles, source, held = held_out, "held-out tiles of --calib (not used for calibration)", True
    elif calib:
        int8 = precision.precision == "int8"
        eval_tiles, held = calib, not int8
        source = "the calibration tiles themselves (in-sample)" if int8 else "tiles from --calib"
    else:
        edge = precision.calib_tile or options.inputs(meta).native_in_range
        eval_tiles = model_inputs(synthetic_tiles(SYNTHETIC_TILES, edge), meta, options)
        source, held = "synthetic smooth images (no --calib or --labels given)", True
    if precision.precision == "int8" and calib and in_sample is None and eval_tiles is not calib:
        in_sample = (calib, "the calibration tiles (in-sample)")

    fp32_meta = export_metadata(meta, options)
    fp32 = trace_fp32(model, options, traced)
    notes: list[str] = []
    details: dict = {}
    if precision.precision == "fp32":
        artifact, final_meta = fp32, fp32_meta
        reference_name = "the torch network (eager, float32)"
        reference = run_logits(_torch_logits(model, meta, options), eval_tiles)
    elif precision.precision == "fp16":
        from .fp16 import DEFAULT_FP32_GROUPS, convert_fp16, fp32_share, grn_peak_sum_of_squares

        groups = tuple(precision.fp16_fp32_groups if precision.fp16_fp32_groups is not None else DEFAULT_FP32_GROUPS)
        final_meta = export_metadata(meta, options, precision="fp16", fp16_fp32_groups=list(groups))
        artifact = finalize(convert_fp16(fp32, groups), final_meta)
        reference_name, reference = "the FP32 ONNX of this export (ONNX Runtime)", _onnx_logits(fp32, eval_tiles)
        details["fp16"] = {"fp32_groups": list(groups), "nodes": fp32_share(artifact),
                           "grn_peak_sum_of_squares": grn_peak_sum_of_squares(fp32, eval_tiles)}
    else:
        artifact, final_meta, details = _int8(model, meta, options, precision, fp32, calib, notes, traced)
        reference_name, reference = "the FP32 ONNX of this export (ONNX Runtime)", _onnx_logits(fp32, eval_tiles)
    candidate = _onnx_logits(artifact, eval_tiles)
    save_onnx(artifact, out_path, overwrite=overwrite)
    if report:
        if warnings:
            details["warnings"] = list(warnings)
        if in_sample is not None:
            tiles_in, what = in_sample
            stats = logit_stats(_onnx_logits(fp32, tiles_in), _onnx_logits(artifact, tiles_in))
            details["in_sample"] = {"tiles": len(tiles_in), "source": what,
                                    **{k: round(v, 7) if isinstance(v, float) else v for k, v in stats.items()}}
        rep = build_report(model_path=out_path, precision=precision.precision, export=dict(final_meta.export),
                           reference_name=reference_name, reference=reference, candidate=candidate,
                           tiles=eval_tiles, tiles_source=source, classes=meta.classes, details=details,
                           held_out=held)
        json_path, md_path = write_report(rep, out_path, overwrite=True)
        vs = rep["vs_reference"]
        kind = ("held-out " if precision.precision == "int8" and calib else "") if held else "in-sample "
        line = (f"accuracy vs {reference_name}: max |logit error| {vs['max_abs_logit_error']:.3g}, argmax "
                f"agreement {100 * vs['argmax_agreement']:.2f} % on {len(eval_tiles)} {kind}tile(s)")
        if "in_sample" in details:
            line += (f" (in-sample, on {details['in_sample']['tiles']} calibration tile(s): "
                     f"{100 * details['in_sample']['argmax_agreement']:.2f} %)")
        notes.append(f"{line}; report {json_path.name}, {md_path.name}")
    return ExportResult(out_path, final_meta, notes)


def trace_fp32(model: ASANetSegmentor, options: ExportOptions,
               cache: dict[ExportOptions, onnx.ModelProto] | None = None) -> onnx.ModelProto:
    """The finalized FP32 graph of ``model`` for ``options`` (from ``cache`` when it holds one; stored there)."""
    meta = model.metadata
    options = options.for_model(meta, warn=False)
    if cache is not None and options in cache:
        return cache[options]
    graph = trace_to_onnx(model, meta, options)
    if options.simplify:
        graph = simplify(graph)
    graph = finalize(graph, export_metadata(meta, options))
    if cache is not None:
        cache[options] = graph
    return graph


def _int8(model: ASANetSegmentor, meta: ModelMetadata, options: ExportOptions, precision: PrecisionOptions,
          fp32: onnx.ModelProto, calib: list[Tile], notes: list[str],
          traced: dict | None) -> tuple[onnx.ModelProto, ModelMetadata, dict]:
    from .int8 import make_int8

    portable = fp32
    if options.ops == "plugins":
        # calibration and the sensitivity pass run on the portable graph; Q/DQ are carried into the plugin one
        portable = trace_fp32(model, dataclasses.replace(options, ops="portable"), traced)
    result = make_int8(portable, calib, precision.target, precision.calib_method, precision.keep_fp,
                       artifact=fp32 if options.ops == "plugins" else None, progress=log.info)
    kept = [k.name for k in result.kept]
    final_meta = export_metadata(meta, options, precision="int8", int8_target=precision.target,
                                 calibration={"method": precision.calib_method, "tiles": result.calibration.tiles},
                                 keep_fp=kept if precision.keep_fp in ("auto", "none") else list(precision.keep_fp),
                                 kept_float=kept)
    artifact = finalize(result.model, final_meta)
    details = {"int8": {
        "target": precision.target,
        "calibration": {"method": precision.calib_method, "tiles": result.calibration.tiles,
                        "sources": result.calibration.sources},
        "keep_fp": precision.keep_fp if isinstance(precision.keep_fp, str) else list(precision.keep_fp),
        "quantized_nodes": len(result.quantized),
        "kept_float": [k.to_dict() for k in result.kept],
        "sensitivity_top": result.sensitivity[:10],
    }}
    notes.append(f"int8 ({precision.target}): {len(result.quantized)} node(s) quantised, {len(kept)} kept in float "
                 f"({sum('sensitivity' in k.reason for k in result.kept)} by the sensitivity pass)")
    return artifact, final_meta, details


def _onnx_logits(model: onnx.ModelProto, tiles: Sequence[Tile]) -> list[np.ndarray]:
    from .calibration import make_session
    from .graph_utils import add_outputs, logits_tensor

    name = logits_tensor(model)
    session = make_session(add_outputs(model, [name]))
    return [session.run([name], t.feed())[0].astype(np.float32) for t in tiles]


def _torch_logits(model: ASANetSegmentor, meta: ModelMetadata, options: ExportOptions):
    import torch

    from .onnx_export import ExportableASANet

    wrapper = ExportableASANet(model, meta, dataclasses.replace(options, outputs=("logits",))).eval()

    def run(tile: Tile) -> np.ndarray:
        with torch.no_grad():
            return wrapper(torch.from_numpy(tile.optical), torch.from_numpy(tile.sar))[0].numpy()

    return run
