"""The ``asanet-rt export`` command as one library call: options -> ONNX file (+ accuracy report)."""
from __future__ import annotations

import argparse

from asanet_rt.errors import AsanetError

from .network import ASANetSegmentor
from .onnx_export import DEFAULT_OUTPUTS, ExportOptions, export_onnx


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(input=args.input, optical_bands=args.optical_bands,
                         outputs=tuple(args.outputs or DEFAULT_OUTPUTS),
                         probabilities_dtype=args.probabilities_dtype, batch=tuple(args.batch),
                         tile=tuple(args.tile or (256, 1024)), ops=args.ops, simplify=not args.no_simplify)


def export_from_args(model: ASANetSegmentor, args: argparse.Namespace) -> list[str]:
    """Run the export the CLI describes; returns the lines to print."""
    options = options_from_args(args)
    if args.precision != "fp32":
        raise AsanetError(f"--precision {args.precision} is not available yet")
    result = export_onnx(model, args.output, options, overwrite=args.overwrite)
    export = result.metadata.export
    return [f"wrote {result.path} ({export['precision']}, {export['ops']} ops, input {export['input']}, "
            f"outputs {','.join(export['outputs'])}, batch {export['batch'][0]}:{export['batch'][1]}, "
            f"tile {export['tile'][0]}:{export['tile'][1]})"]
