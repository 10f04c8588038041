"""Subcommands of the export stage: ``info``, ``export``, ``compare``. Importing this module loads no torch."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Sequence

from asanet_rt.cli_options import (add_json_options, command, fraction, names, non_negative_float, non_negative_int, parse_range,
                                   positive_int, warn_deprecated)
from asanet_rt.metadata import PRESETS

CHECKPOINT_HELP = "official ASANet checkpoint: mmengine .pth (from training), bare state dict or .safetensors"


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "info", help="describe an official ASANet checkpoint",
                description="Architecture, classes, palette, parameter count, cost and pre-processing of a "
                                   "checkpoint (mmengine .pth, bare state dict or .safetensors).")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    _dataset_arg(p)
    p.add_argument("--tile", type=positive_int, metavar="PX",
                   help="tile edge for the cost estimate (default: the model's native tile)")
    add_json_options(p, "the description")
    p.set_defaults(func=_info)
    register_export(sub)
    register_compare(sub)


def _dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=sorted(PRESETS),
                   help="dataset preset for classes, palette and normalisation when the checkpoint lacks them")


def _info(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .info import format_info, model_info

    info = model_info(load_checkpoint(args.checkpoint, dataset=args.dataset), tile=args.tile)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_info(info))
    return 0


class _OldOpticalBands(argparse.Action):
    """``export --optical-bands NAMES``: the old spelling of ``--input-bands`` (band numbers belong to classify)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        if all(v.strip().isdigit() for v in values.split(",") if v.strip()):
            parser.error(f"--optical-bands {values}: export takes band NAMES with --input-bands, e.g. "
                         f"red,green,blue (file band numbers are for classify, batch and eval)")
        warn_deprecated("export --optical-bands", "--input-bands")
        setattr(namespace, self.dest, names(values))


def register_export(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "export", help="export a checkpoint to ONNX (fp32, fp16 or int8 Q/DQ)",
                description="Export an ASANet checkpoint to ONNX with pre-processing inside the graph, "
                            "dynamic batch and tile size, and the model's metadata.")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    _dataset_arg(p)
    p.add_argument("--input", choices=("raw", "normalized"), default="raw",
                   help="raw: file pixel values, pre-processing in the graph (default); normalized: the "
                        "network's own contract")
    p.add_argument("--input-bands", dest="optical_bands", type=names, default=None, metavar="NAME,NAME,NAME",
                   help="band NAMES in the order the ONNX optical input takes them, e.g. red,green,blue for RGB "
                        "files (default: the model's own order, blue,green,red for official checkpoints)")
    p.add_argument("--optical-bands", dest="optical_bands", action=_OldOpticalBands, metavar="NAMES",
                   help="deprecated spelling of --input-bands")
    p.add_argument("--outputs", type=names, default=None, metavar="NAME[,NAME...]",
                   help="comma list of logits, probabilities, classes, confidence (default: probabilities)")
    p.add_argument("--probabilities-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the probabilities output (default float32; float16 halves its transfer)")
    p.add_argument("--batch", type=parse_range, default=(1, None, 8), metavar="N|MIN:MAX",
                   help="batch range of the ONNX profile (default 1:8)")
    p.add_argument("--tile", type=parse_range, default=None, metavar="N|MIN:MAX",
                   help="tile edge range, multiples of 32 (default 256:1024, widened to hold the model's native "
                        "tile; a warning when a given range excludes it)")
    p.add_argument("--ops", choices=("portable", "plugins"), default="portable",
                   help="portable: standard ONNX ops; plugins: SFM/CFM/GRN as asanet-domain ops with function "
                        "bodies (TensorRT plugins)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp32 (default); fp16 (float16 compute, sensitive groups kept in float32); int8 (Q/DQ "
                        "from calibration imagery, --calib)")
    p.add_argument("--int8-target", choices=("cpu", "openvino", "tensorrt"), default=None,
                   help="Q/DQ form: cpu = uint8 activations in ONNX Runtime's fastest graph form, openvino = the "
                        "same Q/DQ in OpenVINO's, tensorrt = symmetric int8 (default)")
    p.add_argument("--calib", action="append", default=None, metavar="SOURCE",
                   help="int8 calibration imagery: a folder of tiles or OPTICAL.tif,SAR.tif; repeat the flag for "
                        "more sources")
    p.add_argument("--calib-method", choices=("minmax", "percentile", "entropy"), default="percentile",
                   help="how activation ranges are chosen from calibration data (default percentile)")
    p.add_argument("--calib-tiles", type=positive_int, default=32, metavar="N",
                   help="number of calibration tiles (default 32)")
    p.add_argument("--keep-fp", default="auto",
                   help="int8: layers kept in float: auto (sensitivity pass), none, or a comma list of node names")
    p.add_argument("--labels", action="append", default=None, metavar="SOURCE",
                   help="labelled tiles for mIoU in the accuracy report; repeat the flag for more sources")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from asanet_rt.preflight import check_outputs

    from .checkpoint import load_checkpoint
    from .pipeline import export_from_args

    from asanet_rt.errors import AsanetError

    if args.batch[1] is not None or (args.tile and args.tile[1] is not None):
        raise AsanetError("export takes --batch and --tile as N or MIN:MAX; the OPT of a MIN:OPT:MAX range is "
                          "chosen when the engine is built (asanet-rt build)")
    args.batch = (args.batch[0], args.batch[2])
    args.tile = (args.tile[0], args.tile[2]) if args.tile else None
    # before the checkpoint loads: an output that is a folder, exists, or cannot be written
    check_outputs([args.output], [args.checkpoint], overwrite=args.overwrite)
    model = load_checkpoint(args.checkpoint, dataset=args.dataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines = export_from_args(model, args)
    _print_warnings("export", caught)
    for line in lines:
        print(line)
    return 0


def _print_warnings(command_name: str, caught: Sequence[Any]) -> None:
    """Warnings of a command as one ``asanet-rt CMD: warning:`` line each (repeats once)."""
    seen = set()
    for w in caught:
        text = str(w.message)
        if text not in seen and not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            seen.add(text)
            print(f"asanet-rt {command_name}: warning: {text}", file=sys.stderr)


def register_compare(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "compare", help="run the same inputs through two artifacts and compare their outputs",
                description="Polygraphy-style comparison of two artifacts (checkpoint via torch, ONNX via "
                                   "ONNX Runtime, engines via their backend): max/mean/median absolute and relative "
                                   "error per common output, argmax agreement, and the worst pixels.")
    p.add_argument("a", help="checkpoint (.pth, .safetensors), ONNX file or engine")
    p.add_argument("b", help="checkpoint (.pth, .safetensors), ONNX file or engine")
    p.add_argument("--inputs", help=".npz with arrays optical and sar (in the form the graphs take); default: "
                                    "seeded synthetic images")
    p.add_argument("--tile", type=positive_int, default=256, metavar="PX",
                   help="tile edge of the synthetic inputs (default 256)")
    p.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="batch size of the synthetic inputs (default 1)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the synthetic inputs (default 0)")
    p.add_argument("--outputs", help="comma list of outputs to compare (default: all the two have in common)")
    p.add_argument("--atol", type=non_negative_float, default=None, help="fail (exit 1) where |A - B| exceeds this ...")
    p.add_argument("--rtol", type=non_negative_float, default=None, help="... and the relative error exceeds this")
    p.add_argument("--min-agreement", type=fraction, default=None,
                   help="fail (exit 1) when argmax agreement is below this fraction, e.g. 0.99")
    p.add_argument("--worst", type=non_negative_int, default=5, help="how many worst pixels to list per output (default 5)")
    add_json_options(p, "the comparison")
    _dataset_arg(p)
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare_from_args

    return compare_from_args(args)
