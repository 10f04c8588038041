"""Subcommands of the export stage: ``info``, ``export``, ``compare``. Importing this module loads no torch."""
from __future__ import annotations

import argparse
import json

from asanet_rt.metadata import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe an official ASANet checkpoint",
                       description="Architecture, classes, palette, parameter count, cost and pre-processing of a "
                                   "checkpoint (mmengine .pth, bare state dict or .safetensors).")
    p.add_argument("checkpoint")
    _dataset_arg(p)
    p.add_argument("--tile", type=int, help="tile edge for the cost estimate (default: the model's native tile)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
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


def _range(text: str) -> tuple[int, int]:
    """``8`` or ``1:8`` -> (min, max)."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or MIN:MAX") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or MIN:MAX")
    return parts[0], parts[1]


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (fp32, fp16 or int8 Q/DQ)",
                       description="Export an ASANet checkpoint to ONNX with pre-processing inside the graph, "
                                   "dynamic batch and tile size, and the model's metadata.")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    _dataset_arg(p)
    p.add_argument("--input", choices=("raw", "normalized"), default="raw",
                   help="raw: file pixel values, pre-processing in the graph (default); normalized: the "
                        "network's own contract")
    p.add_argument("--optical-bands", type=_names, default=None,
                   help="channel order of the optical input, e.g. red,green,blue (default: the model's own "
                        "order, blue,green,red for official checkpoints)")
    p.add_argument("--outputs", type=_names, default=None,
                   help="comma list of logits, probabilities, classes, confidence (default: probabilities)")
    p.add_argument("--probabilities-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--batch", type=_range, default=(1, 8), help="batch range MIN:MAX (default 1:8)")
    p.add_argument("--tile", type=_range, default=None,
                   help="tile edge range MIN:MAX, multiples of 32 (default 256:1024)")
    p.add_argument("--ops", choices=("portable", "plugins"), default="portable",
                   help="portable: standard ONNX ops; plugins: SFM/CFM/GRN as asanet-domain ops with function "
                        "bodies (TensorRT plugins)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--int8-target", choices=("cpu", "openvino", "tensorrt"), default=None,
                   help="Q/DQ form: cpu = uint8 activations in ONNX Runtime's fastest graph form, openvino = the "
                        "same Q/DQ in OpenVINO's, tensorrt = symmetric int8 (default)")
    p.add_argument("--calib", nargs="+", default=None,
                   help="calibration data for int8: a folder of tiles or OPTICAL.tif,SAR.tif pairs")
    p.add_argument("--calib-method", choices=("minmax", "percentile", "entropy"), default="percentile")
    p.add_argument("--calib-tiles", type=int, default=32, help="number of calibration tiles (default 32)")
    p.add_argument("--keep-fp", default="auto",
                   help="int8: layers kept in float: auto (sensitivity pass), none, or a comma list of node names")
    p.add_argument("--labels", nargs="*", default=None, help="labelled tiles for mIoU in the accuracy report")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from asanet_rt.preflight import check_outputs

    from .checkpoint import load_checkpoint
    from .pipeline import export_from_args

    # before the checkpoint loads: an output that is a folder, exists, or cannot be written
    check_outputs([args.output], [args.checkpoint], overwrite=args.overwrite)
    model = load_checkpoint(args.checkpoint, dataset=args.dataset)
    for line in export_from_args(model, args):
        print(line)
    return 0


def register_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run the same inputs through two artifacts and compare their outputs",
                       description="Polygraphy-style comparison of two artifacts (checkpoint via torch, ONNX via "
                                   "ONNX Runtime, engines via their backend): max/mean/median absolute and relative "
                                   "error per common output, argmax agreement, and the worst pixels.")
    p.add_argument("a", help="checkpoint (.pth, .safetensors), ONNX file or engine")
    p.add_argument("b", help="checkpoint (.pth, .safetensors), ONNX file or engine")
    p.add_argument("--inputs", help=".npz with arrays optical and sar (in the form the graphs take); default: "
                                    "seeded synthetic images")
    p.add_argument("--tile", type=int, default=256, help="tile edge of the synthetic inputs (default 256)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the synthetic inputs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs (default 0)")
    p.add_argument("--outputs", help="comma list of outputs to compare (default: all the two have in common)")
    p.add_argument("--atol", type=float, default=None, help="fail (exit 1) where |A - B| exceeds this ...")
    p.add_argument("--rtol", type=float, default=None, help="... and the relative error exceeds this")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="fail (exit 1) when argmax agreement is below this fraction, e.g. 0.99")
    p.add_argument("--worst", type=int, default=5, help="how many worst pixels to list per output (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _dataset_arg(p)
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare_from_args

    return compare_from_args(args)
